/**
 * The kernel ladder: which variant of each hot kernel this adapter runs fastest. A kernel
 * wrapper registers its variants, a prior guess (the barrier-free variant on CPU adapters) and a
 * probe on a representative shape; at first use the ladder times every variant for a few
 * milliseconds (warm-up, then interleaved rounds, median), keeps the fastest, and caches the
 * choice per adapter in memory and on disk, keyed by a fingerprint of the shaders and the probe
 * so an edited kernel is timed again.
 *
 * One timing run on a busy machine can be wrong, so a cached choice does not stick for good:
 * the disk keeps each run's medians (up to MAX_RUNS), and a later process times the kernel again
 * and merges the runs while the choice is unsettled: a close call (the runner-up within CLOSE of
 * the best), or a single run that overrules the prior. Each run's times are divided by that
 * run's fastest, so a run on a loaded machine weighs the same as a quiet one; the merged score of
 * a variant is the median of its ratios. Choices older than MAX_AGE_DAYS, or from another ladder
 * version, are timed from scratch.
 *
 * Environment:
 * - QLORAD_KERNEL_VARIANTS=matmul=blocked,matmul_4bit=regblock forces choices (no timing);
 * - QLORAD_LADDER=prior uses each kernel's prior and times nothing (the test suite: results do
 *   not depend on a timing race); the default `time` times as above;
 * - QLORAD_LADDER_CACHE=<file> moves the disk cache, `off` keeps choices in memory only; the
 *   default is $XDG_CACHE_HOME/qlorad/ladder.json, else ~/.cache/qlorad/ladder.json;
 * - QLORAD_LADDER_LOG=1 logs each timing as it starts and ends.
 * A cache that cannot be read or parsed is ignored (and rewritten); one that cannot be written
 * leaves the choice in memory. Probe buffers stay outside the memory ledger, so timing at first
 * use does not show in the peaks that the memory estimator is checked against.
 */
import { type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";

/** Bump when the timing method or the cache format changes, so cached choices are made again. */
export const LADDER_VERSION = 2;
/** A timed submit of the fastest variant should take about this long. */
const TARGET_MS = 4;
const MAX_REPS = 64;
const ROUNDS = 3;
/** A variant whose warm-up run is this many times the fastest's (and over 50 ms) is not rounded. */
const HOPELESS = 25;
/** Runs kept per choice; a choice with this many runs is settled. */
export const MAX_RUNS = 3;
/** A runner-up within this fraction of the best is a close call, timed again next time. */
export const CLOSE = 0.1;
/** Choices older than this are timed from scratch (drivers and machines change). */
export const MAX_AGE_DAYS = 30;

export const VARIANTS_ENV = "QLORAD_KERNEL_VARIANTS";
export const MODE_ENV = "QLORAD_LADDER";
export const CACHE_ENV = "QLORAD_LADDER_CACHE";
export const LOG_ENV = "QLORAD_LADDER_LOG";

function envValue(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

function envFlag(name: string): boolean {
  return Boolean(envValue(name));
}

/** A kernel's inputs on one context, ready to record any variant into a batch. */
export interface LadderProbe {
  run(batch: DispatchBatch, variant: string): Promise<void>;
  destroy(): void;
}

export interface LadderKernel {
  /** The name used in QLORAD_KERNEL_VARIANTS and the cache. */
  name: string;
  variants: readonly string[];
  /** The choice before (or without) timing. */
  prior(ctx: GpuContext): string;
  /** Whether a variant can run on this device (e.g. needs `ctx.capabilities.f16`); default yes. */
  variantAvailable?(ctx: GpuContext, variant: string): boolean;
  /** Files in shaders/ whose text keys the cached choice (includes too). */
  shaders: readonly string[];
  probe(ctx: GpuContext): Promise<LadderProbe>;
}

/** The kernel's variants this device can run, in registration order. */
export function availableVariants(ctx: GpuContext, k: LadderKernel): string[] {
  return k.variants.filter((v) => k.variantAvailable?.(ctx, v) ?? true);
}

export type DecisionSource = "override" | "cache" | "timed" | "prior";

/** Median ms per run of each variant in one timing run (null: failed). */
export type RunTimes = Record<string, number | null>;

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

/** What one timing run found; `timeVariants` in the options replaces the real timing (tests). */
export interface TimingRun {
  ms: RunTimes;
  failures?: Record<string, string>;
}

const registry = new Map<string, LadderKernel>();

/** Called once by each kernel wrapper at module load. */
export function registerLadderKernel(kernel: LadderKernel): void {
  if (kernel.variants.length === 0) {
    throw invalidArgument(`ladder: kernel ${kernel.name} has no variants`);
  }
  registry.set(kernel.name, kernel);
}

export function ladderKernels(): LadderKernel[] {
  return [...registry.values()];
}

function kernelOf(name: string): LadderKernel {
  const k = registry.get(name);
  if (!k) throw invalidArgument(`ladder: no kernel named ${name}`);
  return k;
}

/** `matmul=blocked, attention=row` -> Map; syntax errors name the variable. */
export function parseVariantOverrides(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (raw ?? "").split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const m = /^([a-z0-9_]+)\s*=\s*([a-z0-9_]+)$/.exec(item);
    if (!m) {
      throw invalidArgument(`${VARIANTS_ENV}: "${item}" is not kernel=variant`);
    }
    out.set(m[1], m[2]);
  }
  return out;
}

/** FNV-1a, 32 bits, as 8 hex digits: enough to notice an edited shader. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

const SHADER_DIR = new URL("../../shaders/", import.meta.url);
const fingerprints = new Map<string, string>();

function fingerprint(k: LadderKernel): string {
  let f = fingerprints.get(k.name);
  if (f === undefined) {
    // The probe's and prior's source too: a changed probe shape invalidates old timings.
    let text = `v${LADDER_VERSION}|${k.name}|${k.variants.join(",")}|${k.probe}|${k.prior}`;
    for (const s of k.shaders) {
      try {
        text += `|${s}:${Deno.readTextFileSync(new URL(s, SHADER_DIR))}`;
      } catch {
        text += `|${s}:?`;
      }
    }
    f = fnv1a(text);
    fingerprints.set(k.name, f);
  }
  return f;
}

interface CacheEntry {
  /** The merged choice (redundant with `runs`; kept for people reading the file). */
  variant: string;
  fingerprint: string;
  runs: RunTimes[];
  /** ISO time of the first run: the age that MAX_AGE_DAYS counts. */
  firstMeasuredAt: string;
  /** ISO time of the latest run. */
  measuredAt: string;
}

/** adapterKey -> kernel -> entry */
type CacheFile = Record<string, Record<string, CacheEntry>>;

function defaultCachePath(): string | null {
  const explicit = envValue(CACHE_ENV);
  if (explicit !== undefined && explicit !== "") return explicit === "off" ? null : explicit;
  const xdg = envValue("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/qlorad/ladder.json`;
  const home = envValue("HOME");
  return home ? `${home}/.cache/qlorad/ladder.json` : null;
}

function readCacheFile(path: string): { file: CacheFile; problem?: string } {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { file: {} };
    return { file: {}, problem: `cannot read ${path}: ${(e as Error).message}` };
  }
  try {
    const raw = JSON.parse(text);
    if (raw?.version !== LADDER_VERSION || typeof raw.adapters !== "object" || !raw.adapters) {
      return { file: {}, problem: `${path}: not a version ${LADDER_VERSION} ladder cache` };
    }
    return { file: raw.adapters as CacheFile };
  } catch (e) {
    return { file: {}, problem: `${path}: ${(e as Error).message}` };
  }
}

function validEntry(e: unknown, k: LadderKernel): e is CacheEntry {
  const c = e as CacheEntry | undefined;
  return typeof c === "object" && c !== null && typeof c.variant === "string" &&
    k.variants.includes(c.variant) && c.fingerprint === fingerprint(k) &&
    Array.isArray(c.runs) && c.runs.length > 0 &&
    c.runs.every((r) => typeof r === "object" && r !== null) &&
    typeof c.firstMeasuredAt === "string" && Number.isFinite(Date.parse(c.firstMeasuredAt));
}

/** The merge of several timing runs: a score per variant, the choice, and how close it was. */
export interface MergedRuns {
  /** Median over runs of (variant ms / that run's fastest ms); null when it ever failed. */
  score: Record<string, number | null>;
  /** Lowest score; undefined when no variant ran. */
  best?: string;
  /** Runner-up score / best score - 1 (Infinity with a single candidate). */
  margin: number;
}

/**
 * Merges timing runs over `variants`: a variant that failed (null) or was not timed in any run is
 * out (a failure is a compile or validation error, not noise). Ties go to the earlier variant.
 */
export function mergeRuns(runs: RunTimes[], variants: readonly string[]): MergedRuns {
  const score: Record<string, number | null> = {};
  const ratios = new Map<string, number[]>(variants.map((v) => [v, []]));
  for (const run of runs) {
    const times = variants.map((v) => run[v]).filter((t): t is number => typeof t === "number");
    const fastest = Math.min(...times);
    if (!(fastest > 0)) continue;
    for (const v of variants) {
      const t = run[v];
      if (typeof t === "number" && t > 0) ratios.get(v)!.push(t / fastest);
      else ratios.set(v, [NaN]);
    }
  }
  for (const [v, r] of ratios) score[v] = r.length === 0 || r.some(isNaN) ? null : median(r);
  const ranked = variants.filter((v) => score[v] !== null)
    .sort((a, b) => score[a]! - score[b]! || variants.indexOf(a) - variants.indexOf(b));
  if (ranked.length === 0) return { score, margin: 0 };
  const margin = ranked.length < 2 ? Infinity : score[ranked[1]]! / score[ranked[0]]! - 1;
  return { score, best: ranked[0], margin };
}

/**
 * Whether a choice needs no more timing: MAX_RUNS runs, or a clear winner (margin >= CLOSE) that
 * either agrees with the prior or was confirmed by a second run.
 */
export function isSettled(runs: RunTimes[], merged: MergedRuns, prior: string): boolean {
  if (runs.length >= MAX_RUNS) return true;
  if (merged.best === undefined || merged.margin < CLOSE) return false;
  return runs.length >= 2 || merged.best === prior;
}

export type LadderMode = "time" | "prior";

export interface KernelLadderOptions {
  /** Disk cache file; null keeps choices in memory only; default from the environment. */
  cachePath?: string | null;
  /** Overrides in QLORAD_KERNEL_VARIANTS syntax; default: that variable, read at each use. */
  overrides?: string;
  /** `prior` times nothing; default QLORAD_LADDER (else `time`), read at each use. */
  mode?: LadderMode;
  /** Where notes go (a broken cache, a failed variant); default stderr. */
  log?: (line: string) => void;
  /** Replaces the timing of a kernel's variants (tests inject fake timings). */
  timeVariants?: (ctx: GpuContext, kernel: LadderKernel, variants: string[]) => Promise<TimingRun>;
  /** Milliseconds since the epoch; default Date.now (tests age cache entries). */
  now?: () => number;
}

export class KernelLadder {
  /** Kernels timed so far (tests check that a cached choice is not timed again). */
  timings = 0;
  readonly #options: KernelLadderOptions;
  readonly #decided = new Map<string, LadderDecision>();
  readonly #pending = new Map<string, Promise<LadderDecision>>();
  /** One timing at a time: concurrent probes would slow each other. */
  #queue: Promise<unknown> = Promise.resolve();
  #disk: CacheFile | undefined;
  #logged = new Set<string>();

  constructor(options: KernelLadderOptions = {}) {
    this.#options = options;
  }

  get cachePath(): string | null {
    return this.#options.cachePath === undefined ? defaultCachePath() : this.#options.cachePath;
  }

  get mode(): LadderMode {
    const raw = this.#options.mode ?? envValue(MODE_ENV) ?? "time";
    const mode = raw === "" ? "time" : raw;
    if (mode !== "time" && mode !== "prior") {
      throw invalidArgument(`${MODE_ENV}: "${mode}" is not one of time, prior`);
    }
    return mode;
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
    const raw = this.#options.overrides ?? envValue(VARIANTS_ENV);
    const v = parseVariantOverrides(raw).get(k.name);
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

  #candidates(ctx: GpuContext, k: LadderKernel): string[] {
    return availableVariants(ctx, k);
  }

  #prior(ctx: GpuContext, k: LadderKernel): string {
    return k.prior(ctx);
  }

  #loadDisk(): CacheFile {
    if (this.#disk) return this.#disk;
    const path = this.cachePath;
    if (path === null) return (this.#disk = {});
    const { file, problem } = readCacheFile(path);
    if (problem) this.#log(`ignoring the cache (${problem}); choices will be timed again`);
    return (this.#disk = file);
  }

  /** The disk entry for this adapter and kernel, unless missing, invalid or too old. */
  #entry(ctx: GpuContext, k: LadderKernel): CacheEntry | undefined {
    const e = this.#loadDisk()[ctx.adapterKey]?.[k.name];
    if (!validEntry(e, k)) return undefined;
    const ageDays = (this.#now() - Date.parse(e.firstMeasuredAt)) / 86_400_000;
    return ageDays <= MAX_AGE_DAYS ? e : undefined;
  }

  #fromEntry(ctx: GpuContext, k: LadderKernel, e: CacheEntry): LadderDecision {
    const merged = mergeRuns(e.runs, this.#candidates(ctx, k));
    return {
      kernel: k.name,
      variant: merged.best ?? this.#prior(ctx, k),
      source: "cache",
      ms: merged.score,
      runs: e.runs,
      settled: isSettled(e.runs, merged, this.#prior(ctx, k)),
      measuredAt: e.measuredAt,
    };
  }

  /** The choice without timing: override, then memory, then disk, then the prior. */
  choice(ctx: GpuContext, kernel: string): string {
    const k = kernelOf(kernel);
    const forced = this.#override(ctx, k);
    if (forced !== undefined) return forced;
    if (this.mode === "prior") return this.#prior(ctx, k);
    const key = `${ctx.adapterKey}|${k.name}`;
    const known = this.#decided.get(key);
    if (known) return known.variant;
    const e = this.#entry(ctx, k);
    if (!e) return this.#prior(ctx, k);
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
    const k = kernelOf(kernel);
    const forced = this.#override(ctx, k);
    if (forced !== undefined) return { kernel: k.name, variant: forced, source: "override" };
    if (this.mode === "prior") {
      return { kernel: k.name, variant: this.#prior(ctx, k), source: "prior" };
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
      p = run.then((d) => {
        this.#decided.set(key, d);
        if (d.source === "timed") this.#store(ctx, k, d, entry);
        return d;
      }).finally(() => this.#pending.delete(key));
      this.#pending.set(key, p);
    }
    return await p;
  }

  /** Decides every registered kernel (or the named ones) now, e.g. at start-up. */
  async warm(ctx: GpuContext, kernels?: string[]): Promise<LadderDecision[]> {
    const names = kernels ?? ladderKernels().map((k) => k.name);
    const out: LadderDecision[] = [];
    for (const name of names) out.push(await this.decide(ctx, name));
    return out;
  }

  /** Times the kernel's variants once and merges the run with an unsettled entry's runs. */
  async #time(ctx: GpuContext, k: LadderKernel, entry?: CacheEntry): Promise<LadderDecision> {
    this.timings++;
    const log = envFlag(LOG_ENV);
    if (log) this.#log(`timing ${k.name} on ${ctx.adapterKey}`);
    const candidates = this.#candidates(ctx, k);
    const run = this.#options.timeVariants
      ? await this.#options.timeVariants(ctx, k, candidates)
      : await timeVariants(ctx, k, candidates, (line) => this.#log(line));
    for (const [v, why] of Object.entries(run.failures ?? {})) {
      this.#log(`${k.name}: variant ${v} failed on ${ctx.adapterKey}: ${why}`);
    }
    if (!candidates.some((v) => typeof run.ms[v] === "number")) {
      this.#log(`${k.name}: no variant ran; using ${this.#prior(ctx, k)}`);
      return {
        kernel: k.name,
        variant: this.#prior(ctx, k),
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
      settled: isSettled(runs, merged, this.#prior(ctx, k)),
      failures: run.failures && Object.keys(run.failures).length ? run.failures : undefined,
      measuredAt: new Date(this.#now()).toISOString(),
    };
  }

  #store(ctx: GpuContext, k: LadderKernel, d: LadderDecision, previous?: CacheEntry): void {
    const path = this.cachePath;
    const entry: CacheEntry = {
      variant: d.variant,
      fingerprint: fingerprint(k),
      runs: d.runs ?? [],
      firstMeasuredAt: previous?.firstMeasuredAt ?? d.measuredAt!,
      measuredAt: d.measuredAt!,
    };
    const disk = this.#loadDisk();
    (disk[ctx.adapterKey] ??= {})[k.name] = entry;
    if (path === null) return;
    try {
      // Merge with what other processes wrote since we read the file.
      const { file } = readCacheFile(path);
      (file[ctx.adapterKey] ??= {})[k.name] = entry;
      const dir = path.replace(/\/[^/]*$/, "");
      if (dir && dir !== path) Deno.mkdirSync(dir, { recursive: true });
      const tmp = `${path}.partial-${crypto.randomUUID().slice(0, 8)}`;
      Deno.writeTextFileSync(
        tmp,
        JSON.stringify({ version: LADDER_VERSION, adapters: file }, null, 1) + "\n",
      );
      Deno.renameSync(tmp, path);
    } catch (e) {
      this.#log(`cannot write ${path} (${(e as Error).message}); choices kept in memory`);
    }
  }

  /** What is known for this adapter (decided in this process), for reports. */
  decisions(ctx: GpuContext): LadderDecision[] {
    const out: LadderDecision[] = [];
    for (const k of ladderKernels()) {
      const d = this.#decided.get(`${ctx.adapterKey}|${k.name}`);
      if (d) out.push(d);
    }
    return out;
  }
}

/**
 * One timing run on the device: a warm-up submit of each variant (compiles, and sizes the timed
 * submits), then ROUNDS interleaved rounds of the ones not hopelessly slow; median ms per run.
 */
async function timeVariants(
  ctx: GpuContext,
  k: LadderKernel,
  variants: string[],
  log: (line: string) => void,
): Promise<TimingRun> {
  const failures: Record<string, string> = {};
  const ms: RunTimes = {};
  let probe: LadderProbe;
  try {
    probe = await k.probe(ctx);
  } catch (e) {
    log(`${k.name}: probe failed (${(e as Error).message})`);
    return { ms, failures: Object.fromEntries(variants.map((v) => [v, "probe failed"])) };
  }
  try {
    const first = new Map<string, number>();
    for (const v of variants) {
      try {
        first.set(v, await timeSubmit(ctx, probe, v, 1));
      } catch (e) {
        failures[v] = (e as Error).message;
        ms[v] = null;
      }
    }
    if (first.size === 0) return { ms, failures };
    const fastest = Math.min(...first.values());
    const rounded = [...first].filter(([, t]) => t <= Math.max(50, HOPELESS * fastest));
    for (const [v, t] of first) if (!rounded.some(([r]) => r === v)) ms[v] = t;
    const reps = Math.max(1, Math.min(MAX_REPS, Math.ceil(TARGET_MS / Math.max(fastest, 0.01))));
    const samples = new Map<string, number[]>(rounded.map(([v]) => [v, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [v] of rounded) {
        try {
          samples.get(v)!.push((await timeSubmit(ctx, probe, v, reps)) / reps);
        } catch (e) {
          failures[v] = (e as Error).message;
        }
      }
    }
    for (const [v, s] of samples) ms[v] = failures[v] || s.length === 0 ? null : median(s);
    return { ms, failures };
  } finally {
    probe.destroy();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** ms for `reps` runs of one variant in one submit; GPU errors become exceptions here. */
async function timeSubmit(
  ctx: GpuContext,
  probe: LadderProbe,
  variant: string,
  reps: number,
): Promise<number> {
  const device = ctx.device;
  device.pushErrorScope("validation");
  device.pushErrorScope("out-of-memory");
  const t0 = performance.now();
  let thrown: unknown;
  try {
    const batch = ctx.batch(`ladder ${variant}`);
    for (let i = 0; i < reps; i++) await probe.run(batch, variant);
    batch.submit();
    await ctx.wait(device.queue.onSubmittedWorkDone(), `kernel timing of ${variant}`);
  } catch (e) {
    thrown = e;
  }
  const elapsed = performance.now() - t0;
  const oom = await ctx.wait(device.popErrorScope(), "kernel timing error scope");
  const invalid = await ctx.wait(device.popErrorScope(), "kernel timing error scope");
  if (thrown) throw thrown;
  const err = oom ?? invalid;
  if (err) throw new Error(err.message);
  return elapsed;
}

/** The process-wide ladder the kernel wrappers consult. */
export const kernelLadder = new KernelLadder();

const STORAGE = 0x80;
const COPY_SRC = 0x04;
const COPY_DST = 0x08;

/**
 * Buffers for probes, outside the memory ledger (they live for a few milliseconds); call
 * destroy() once, never GpuBuffer.destroy() on them.
 */
export class ProbeBuffers {
  #raw: GPUBuffer[] = [];

  constructor(readonly ctx: GpuContext) {}

  #make(label: string, bytes: number): GpuBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const raw = this.ctx.device.createBuffer({ label, size, usage: STORAGE | COPY_SRC | COPY_DST });
    this.#raw.push(raw);
    return new GpuBuffer(this.ctx, raw, bytes, "scratch", label);
  }

  /** A buffer holding `data`. */
  upload(label: string, data: ArrayBufferView): GpuBuffer {
    const b = this.#make(label, data.byteLength);
    this.ctx.write(b, data);
    return b;
  }

  /** A buffer of `bytes` (contents unspecified). */
  empty(label: string, bytes: number): GpuBuffer {
    return this.#make(label, bytes);
  }

  /** Seeded values in [-1, 1): timing needs no particular numbers, only finite ones. */
  random(label: string, count: number, seed: number): GpuBuffer {
    const out = new Float32Array(count);
    let s = seed >>> 0;
    for (let i = 0; i < count; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      out[i] = s / 2147483648 - 1;
    }
    return this.upload(label, out);
  }

  destroy(): void {
    for (const b of this.#raw) {
      this.ctx.forgetBuffer(b);
      b.destroy();
    }
    this.#raw = [];
  }
}
