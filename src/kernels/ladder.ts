/**
 * The kernel ladder: which variant of each hot kernel this adapter runs fastest. Each kernel
 * module exports a descriptor (src/kernels/ladder_registry.ts: its variants, a prior guess, the
 * barrier-free variant on CPU adapters, and a probe on a representative shape), and
 * src/kernels/registry.ts lists them. At first use the ladder times every variant for a few
 * milliseconds (src/kernels/ladder_probe.ts), keeps the fastest, and caches the choice per
 * adapter in memory and on disk (src/kernels/ladder_cache.ts), keyed by a fingerprint of the
 * shaders and the probe so an edited kernel is timed again.
 *
 * One timing run on a busy machine can be wrong, so a cached choice does not stick for good:
 * the disk keeps each run's medians (up to MAX_RUNS), and a later process times the kernel again
 * and merges the runs while the choice is unsettled (src/kernels/ladder_merge.ts): a close call,
 * or a single run that overrules the prior. Choices older than MAX_AGE_DAYS, or from another
 * ladder version, are timed from scratch.
 *
 * Settings (src/util/settings.ts, read once, at a ladder's first use; docs/SETTINGS.md):
 * - QLORAD_KERNEL_VARIANTS=matmul=blocked,matmul_4bit=regblock forces choices (no timing);
 * - QLORAD_LADDER=prior uses each kernel's prior and times nothing (the test suite: results do
 *   not depend on a timing race); the default `time` times as above;
 * - QLORAD_LADDER_CACHE=<file> moves the disk cache, `off` keeps choices in memory only; the
 *   default is $XDG_CACHE_HOME/qlorad/ladder.json, else ~/.cache/qlorad/ladder.json;
 * - QLORAD_LADDER_LOG=1 logs each timing as it starts and ends.
 * A cache that cannot be read or parsed is ignored (and rewritten); one that cannot be written
 * leaves the choice in memory.
 */
import type { GpuContext } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import {
  ladderCachePath,
  type LadderMode,
  LOG_ENV,
  MODE_ENV,
  parseLadderMode,
  parseVariantOverrides,
  processEnv,
  type SettingsEnv,
  VARIANTS_ENV,
} from "../util/settings.ts";
import { availableVariants, type LadderKernel, LadderRegistry } from "./ladder_registry.ts";
import { type CacheEntry, LadderCache, ladderFingerprint } from "./ladder_cache.ts";
import { isSettled, MAX_RUNS, mergeRuns } from "./ladder_merge.ts";
import { type RunTimes, timeVariants, type TimingRun } from "./ladder_probe.ts";
import { ladderKernels } from "./registry.ts";

export { availableVariants, type LadderKernel, type LadderProbe } from "./ladder_registry.ts";
export { LADDER_VERSION, MAX_AGE_DAYS } from "./ladder_cache.ts";
export { CLOSE, isSettled, MAX_RUNS, type MergedRuns, mergeRuns } from "./ladder_merge.ts";
export { ProbeBuffers, type RunTimes, type TimingRun } from "./ladder_probe.ts";
export {
  CACHE_ENV,
  type LadderMode,
  LOG_ENV,
  MODE_ENV,
  parseVariantOverrides,
  VARIANTS_ENV,
} from "../util/settings.ts";
export { ladderKernels } from "./registry.ts";

export type DecisionSource = "override" | "cache" | "timed" | "prior";

export interface LadderDecision {
  kernel: string;
  variant: string;
  source: DecisionSource;
  /**
   * Merged score per variant (median ms of the latest run for a single run; with several runs
   * the median over runs of each run's ms divided by its fastest); absent for overrides and
   * priors. null: the variant failed.
   */
  ms?: Record<string, number | null>;
  /** The timing runs behind the choice, oldest first. */
  runs?: RunTimes[];
  /** False while the choice will be timed again by a later process (see the header). */
  settled?: boolean;
  /** Why a variant could not run (compile or validation error). */
  failures?: Record<string, string>;
  measuredAt?: string;
}

export interface KernelLadderOptions {
  /** Disk cache file; null keeps choices in memory only; default from the settings. */
  cachePath?: string | null;
  /** Overrides in QLORAD_KERNEL_VARIANTS syntax; default from the settings. */
  overrides?: string;
  /** `prior` times nothing; default from the settings (QLORAD_LADDER, else `time`). */
  mode?: LadderMode;
  /** Where the settings are read from, once, at the first use; default Deno.env. */
  env?: SettingsEnv;
  /** The kernels known by name; default every kernel in src/kernels/registry.ts. */
  kernels?: readonly LadderKernel[];
  /** Where notes go (a broken cache, a failed variant); default stderr. */
  log?: (line: string) => void;
  /** Replaces the timing of a kernel's variants (tests inject fake timings). */
  timeVariants?: (ctx: GpuContext, kernel: LadderKernel, variants: string[]) => Promise<TimingRun>;
  /** Milliseconds since the epoch; default Date.now (tests age cache entries). */
  now?: () => number;
}

/** What a ladder runs by: its options over the settings, resolved once. */
interface Resolved {
  overrides: Map<string, string>;
  /** The overrides of the options or the settings, which setOverrides(undefined) restores. */
  configured: Map<string, string>;
  mode: LadderMode;
  logTimings: boolean;
  cache: LadderCache;
  registry: LadderRegistry;
}

export class KernelLadder {
  /** Kernels timed so far (tests check that a cached choice is not timed again). */
  timings = 0;
  readonly #options: KernelLadderOptions;
  #resolved: Resolved | undefined;
  readonly #decided = new Map<string, LadderDecision>();
  readonly #pending = new Map<string, Promise<LadderDecision>>();
  /** One timing at a time: concurrent probes would slow each other. */
  #queue: Promise<unknown> = Promise.resolve();
  #logged = new Set<string>();

  constructor(options: KernelLadderOptions = {}) {
    this.#options = { ...options };
  }

  /**
   * Reads the settings the options leave open, once; a bad value throws (naming the variable)
   * at every use until fixed. Not in the constructor: the process-wide ladder is made while the
   * kernel modules that src/kernels/registry.ts lists are still loading.
   */
  #config(): Resolved {
    if (this.#resolved) return this.#resolved;
    const o = this.#options;
    const env = o.env ?? processEnv();
    const cachePath = o.cachePath !== undefined ? o.cachePath : ladderCachePath(env);
    const overrides = parseVariantOverrides(o.overrides ?? env.get(VARIANTS_ENV));
    this.#resolved = {
      overrides,
      configured: overrides,
      mode: o.mode ?? parseLadderMode(env.get(MODE_ENV)),
      logTimings: Boolean(env.get(LOG_ENV)),
      cache: new LadderCache(cachePath, (line) => this.#log(line)),
      registry: new LadderRegistry(o.kernels ?? ladderKernels()),
    };
    return this.#resolved;
  }

  get cachePath(): string | null {
    return this.#config().cache.path;
  }

  get mode(): LadderMode {
    return this.#config().mode;
  }

  /** The forced choices in effect (QLORAD_KERNEL_VARIANTS as read, or setOverrides'), for reports. */
  get overrides(): ReadonlyMap<string, string> {
    return this.#config().overrides;
  }

  /**
   * Forces choices from now on, in QLORAD_KERNEL_VARIANTS syntax (undefined: back to the
   * settings'), e.g. a benchmark that runs two backends with the same variants.
   */
  setOverrides(overrides: string | undefined): void {
    const config = this.#config();
    config.overrides = overrides === undefined
      ? config.configured
      : parseVariantOverrides(overrides);
  }

  #now(): number {
    return (this.#options.now ?? Date.now)();
  }

  #log(line: string): void {
    if (this.#logged.has(line)) return;
    this.#logged.add(line);
    (this.#options.log ?? ((l) => console.error(l)))(`qlorad: kernel ladder: ${line}`);
  }

  #override(ctx: GpuContext, k: LadderKernel): string | undefined {
    const v = this.#config().overrides.get(k.name);
    if (v !== undefined && !k.variants.includes(v)) {
      throw invalidArgument(
        `${VARIANTS_ENV}: ${k.name}=${v}: not one of ${k.variants.join(", ")}`,
      );
    }
    if (v !== undefined && !(k.variantAvailable?.(ctx, v) ?? true)) {
      throw invalidArgument(
        `${VARIANTS_ENV}: ${k.name}=${v}: needs a feature this adapter lacks (${ctx.adapterKey})`,
      );
    }
    return v;
  }

  /** The disk entry for this adapter and kernel, unless missing, invalid or too old. */
  #entry(ctx: GpuContext, k: LadderKernel): CacheEntry | undefined {
    return this.#config().cache.entry(ctx.adapterKey, k, this.#now());
  }

  #fromEntry(ctx: GpuContext, k: LadderKernel, e: CacheEntry): LadderDecision {
    const merged = mergeRuns(e.runs, availableVariants(ctx, k));
    return {
      kernel: k.name,
      variant: merged.best ?? k.prior(ctx),
      source: "cache",
      ms: merged.score,
      runs: e.runs,
      settled: isSettled(e.runs, merged, k.prior(ctx)),
      measuredAt: e.measuredAt,
    };
  }

  /** The choice without timing: override, then memory, then disk, then the prior. */
  choice(ctx: GpuContext, kernel: string): string {
    const k = this.#config().registry.get(kernel);
    const forced = this.#override(ctx, k);
    if (forced !== undefined) return forced;
    if (this.mode === "prior") return k.prior(ctx);
    const key = `${ctx.adapterKey}|${k.name}`;
    const known = this.#decided.get(key);
    if (known) return known.variant;
    const e = this.#entry(ctx, k);
    if (!e) return k.prior(ctx);
    const d = this.#fromEntry(ctx, k, e);
    if (d.settled) this.#decided.set(key, d); // an unsettled one is timed again by decide()
    return d.variant;
  }

  /** The variant to run: as `choice`, but times the variants when nothing is known yet. */
  async variant(ctx: GpuContext, kernel: string): Promise<string> {
    return (await this.decide(ctx, kernel)).variant;
  }

  /**
   * The decision for this kernel on this adapter: forced, the prior (mode `prior`), decided
   * earlier in this process, a settled disk entry, or a timing now (merged with an unsettled
   * disk entry's runs). Each kernel is timed at most once per process.
   */
  async decide(ctx: GpuContext, kernel: string): Promise<LadderDecision> {
    const k = this.#config().registry.get(kernel);
    const forced = this.#override(ctx, k);
    if (forced !== undefined) return { kernel: k.name, variant: forced, source: "override" };
    if (this.mode === "prior") {
      return { kernel: k.name, variant: k.prior(ctx), source: "prior" };
    }
    const key = `${ctx.adapterKey}|${k.name}`;
    const known = this.#decided.get(key);
    if (known) return known;
    const entry = this.#entry(ctx, k);
    if (entry) {
      const d = this.#fromEntry(ctx, k, entry);
      if (d.settled) {
        this.#decided.set(key, d);
        return d;
      }
    }
    let p = this.#pending.get(key);
    if (!p) {
      const run = this.#queue.then(() => this.#time(ctx, k, entry));
      this.#queue = run.catch(() => {});
      p = run.then(async (d) => {
        this.#decided.set(key, d);
        if (d.source === "timed") await this.#store(ctx, k, d, entry);
        return d;
      }).finally(() => this.#pending.delete(key));
      this.#pending.set(key, p);
    }
    return await p;
  }

  /** Decides every kernel this ladder knows (or the named ones) now, e.g. at start-up. */
  async warm(ctx: GpuContext, kernels?: string[]): Promise<LadderDecision[]> {
    const names = kernels ?? this.#config().registry.list().map((k) => k.name);
    const out: LadderDecision[] = [];
    for (const name of names) out.push(await this.decide(ctx, name));
    return out;
  }

  /** Times the kernel's variants once and merges the run with an unsettled entry's runs. */
  async #time(ctx: GpuContext, k: LadderKernel, entry?: CacheEntry): Promise<LadderDecision> {
    this.timings++;
    const log = this.#config().logTimings;
    if (log) this.#log(`timing ${k.name} on ${ctx.adapterKey}`);
    const candidates = availableVariants(ctx, k);
    const run = this.#options.timeVariants
      ? await this.#options.timeVariants(ctx, k, candidates)
      : await timeVariants(ctx, k, candidates, (line) => this.#log(line));
    for (const [v, why] of Object.entries(run.failures ?? {})) {
      this.#log(`${k.name}: variant ${v} failed on ${ctx.adapterKey}: ${why}`);
    }
    if (!candidates.some((v) => typeof run.ms[v] === "number")) {
      this.#log(`${k.name}: no variant ran; using ${k.prior(ctx)}`);
      return {
        kernel: k.name,
        variant: k.prior(ctx),
        source: "prior",
        ms: run.ms,
        failures: run.failures,
      };
    }
    const runs = [...(entry?.runs ?? []), run.ms].slice(-MAX_RUNS);
    const merged = mergeRuns(runs, candidates);
    const variant = merged.best!;
    if (log) this.#log(`${k.name}: ${JSON.stringify(run.ms)} -> ${variant} (${runs.length} runs)`);
    return {
      kernel: k.name,
      variant,
      source: "timed",
      ms: runs.length === 1 ? run.ms : merged.score,
      runs,
      settled: isSettled(runs, merged, k.prior(ctx)),
      failures: run.failures && Object.keys(run.failures).length ? run.failures : undefined,
      measuredAt: new Date(this.#now()).toISOString(),
    };
  }

  async #store(
    ctx: GpuContext,
    k: LadderKernel,
    d: LadderDecision,
    previous?: CacheEntry,
  ): Promise<void> {
    await this.#config().cache.store(ctx.adapterKey, k.name, {
      variant: d.variant,
      fingerprint: ladderFingerprint(k),
      runs: d.runs ?? [],
      firstMeasuredAt: previous?.firstMeasuredAt ?? d.measuredAt!,
      measuredAt: d.measuredAt!,
    });
  }

  /** What is known for this adapter (decided in this process), for reports. */
  decisions(ctx: GpuContext): LadderDecision[] {
    const out: LadderDecision[] = [];
    for (const k of this.#config().registry.list()) {
      const d = this.#decided.get(`${ctx.adapterKey}|${k.name}`);
      if (d) out.push(d);
    }
    return out;
  }
}

/** The process-wide ladder the kernel wrappers consult. */
export const kernelLadder = new KernelLadder();
