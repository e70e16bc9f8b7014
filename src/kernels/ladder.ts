/**
 * The kernel ladder: which variant of each hot kernel this adapter runs fastest. A kernel
 * wrapper registers its variants, a prior guess (the barrier-free variant on CPU adapters) and a
 * probe on a representative shape; at first use the ladder times every variant for a few
 * milliseconds (warm-up, then interleaved rounds, median), keeps the fastest, and caches the
 * choice per adapter in memory and on disk, keyed by a fingerprint of the shaders and the probe
 * so an edited kernel is timed again. Environment:
 * - QLORAD_KERNEL_VARIANTS=matmul=blocked,matmul_4bit=regblock forces choices (no timing);
 * - QLORAD_LADDER_CACHE=<file> moves the disk cache, `off` keeps choices in memory only; the
 *   default is $XDG_CACHE_HOME/qlorad/ladder.json, else ~/.cache/qlorad/ladder.json;
 * - QLORAD_LADDER_LOG=1 logs each timing as it starts and ends.
 * A cache that cannot be read or parsed is ignored (and rewritten); one that cannot be written
 * leaves the choice in memory. Probe buffers stay outside the memory ledger, so timing at first
 * use does not show in the peaks that the memory estimator is checked against.
 */
import { type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";

/** Bump when the timing method changes, so cached choices are made again. */
const LADDER_VERSION = 1;
/** A timed submit of the fastest variant should take about this long. */
const TARGET_MS = 4;
const MAX_REPS = 64;
const ROUNDS = 3;
/** A variant whose warm-up run is this many times the fastest's (and over 50 ms) is not rounded. */
const HOPELESS = 25;

export const VARIANTS_ENV = "QLORAD_KERNEL_VARIANTS";
export const CACHE_ENV = "QLORAD_LADDER_CACHE";
export const LOG_ENV = "QLORAD_LADDER_LOG";

function envFlag(name: string): boolean {
  try {
    return Boolean(Deno.env.get(name));
  } catch {
    return false;
  }
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
  /**
   * Whether a variant can run on this device (e.g. it needs `shader-f16`); default: every
   * variant. Unavailable variants are neither timed nor accepted as overrides.
   */
  available?(ctx: GpuContext, variant: string): boolean;
  /** Files in shaders/ whose text keys the cached choice (includes too). */
  shaders: readonly string[];
  probe(ctx: GpuContext): Promise<LadderProbe>;
}

export type DecisionSource = "override" | "cache" | "timed" | "prior";

export interface LadderDecision {
  kernel: string;
  variant: string;
  source: DecisionSource;
  /** Median ms per run of each timed variant (null: failed); absent for overrides and priors. */
  ms?: Record<string, number | null>;
  /** Why a variant could not run (compile or validation error). */
  failures?: Record<string, string>;
  measuredAt?: string;
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

/** The variants of `k` that this device can run. */
export function availableVariants(ctx: GpuContext, k: LadderKernel): string[] {
  return k.variants.filter((v) => k.available?.(ctx, v) ?? true);
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
  variant: string;
  fingerprint: string;
  ms?: Record<string, number | null>;
  measuredAt?: string;
}

/** adapterKey -> kernel -> entry */
type CacheFile = Record<string, Record<string, CacheEntry>>;

function defaultCachePath(): string | null {
  const env = (name: string) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined; // no --allow-env
    }
  };
  const explicit = env(CACHE_ENV);
  if (explicit !== undefined && explicit !== "") return explicit === "off" ? null : explicit;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/qlorad/ladder.json`;
  const home = env("HOME");
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
    k.variants.includes(c.variant) && c.fingerprint === fingerprint(k);
}

export interface KernelLadderOptions {
  /** Disk cache file; null keeps choices in memory only; default from the environment. */
  cachePath?: string | null;
  /** Overrides in QLORAD_KERNEL_VARIANTS syntax; default: that variable, read at each use. */
  overrides?: string;
  /** Where notes go (a broken cache, a failed variant); default stderr. */
  log?: (line: string) => void;
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

  #log(line: string): void {
    if (this.#logged.has(line)) return;
    this.#logged.add(line);
    (this.#options.log ?? ((l) => console.error(l)))(`qlorad: kernel ladder: ${line}`);
  }

  #override(ctx: GpuContext, k: LadderKernel): string | undefined {
    let raw = this.#options.overrides;
    if (raw === undefined) {
      try {
        raw = Deno.env.get(VARIANTS_ENV);
      } catch {
        raw = undefined;
      }
    }
    const v = parseVariantOverrides(raw).get(k.name);
    if (v !== undefined && !k.variants.includes(v)) {
      throw invalidArgument(
        `${VARIANTS_ENV}: ${k.name}=${v}: not one of ${k.variants.join(", ")}`,
      );
    }
    if (v !== undefined && k.available && !k.available(ctx, v)) {
      throw invalidArgument(
        `${VARIANTS_ENV}: ${k.name}=${v}: not available on ${ctx.adapterKey} (needs a missing feature)`,
      );
    }
    return v;
  }

  #loadDisk(): CacheFile {
    if (this.#disk) return this.#disk;
    const path = this.cachePath;
    if (path === null) return (this.#disk = {});
    const { file, problem } = readCacheFile(path);
    if (problem) this.#log(`ignoring the cache (${problem}); choices will be timed again`);
    return (this.#disk = file);
  }

  #cached(ctx: GpuContext, k: LadderKernel): LadderDecision | undefined {
    const e = this.#loadDisk()[ctx.adapterKey]?.[k.name];
    if (!validEntry(e, k) || !availableVariants(ctx, k).includes(e.variant)) return undefined;
    return {
      kernel: k.name,
      variant: e.variant,
      source: "cache",
      ms: e.ms,
      measuredAt: e.measuredAt,
    };
  }

  /** The choice without timing: override, then memory, then disk, then the prior. */
  choice(ctx: GpuContext, kernel: string): string {
    const k = kernelOf(kernel);
    const forced = this.#override(ctx, k);
    if (forced !== undefined) return forced;
    const key = `${ctx.adapterKey}|${k.name}`;
    const known = this.#decided.get(key) ?? this.#cached(ctx, k);
    if (known) {
      this.#decided.set(key, known);
      return known.variant;
    }
    return k.prior(ctx);
  }

  /** The variant to run: as `choice`, but times the variants when nothing is known yet. */
  async variant(ctx: GpuContext, kernel: string): Promise<string> {
    return (await this.decide(ctx, kernel)).variant;
  }

  async decide(ctx: GpuContext, kernel: string): Promise<LadderDecision> {
    const k = kernelOf(kernel);
    const forced = this.#override(ctx, k);
    if (forced !== undefined) return { kernel: k.name, variant: forced, source: "override" };
    const key = `${ctx.adapterKey}|${k.name}`;
    const known = this.#decided.get(key) ?? this.#cached(ctx, k);
    if (known) {
      this.#decided.set(key, known);
      return known;
    }
    let p = this.#pending.get(key);
    if (!p) {
      const run = this.#queue.then(() => this.#time(ctx, k));
      this.#queue = run.catch(() => {});
      p = run.then((d) => {
        this.#decided.set(key, d);
        if (d.source === "timed") this.#store(ctx, k, d);
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

  async #time(ctx: GpuContext, k: LadderKernel): Promise<LadderDecision> {
    const d = await this.#timeAll(ctx, k);
    if (envFlag(LOG_ENV)) this.#log(`${k.name}: ${JSON.stringify(d.ms)} -> ${d.variant}`);
    return d;
  }

  async #timeAll(ctx: GpuContext, k: LadderKernel): Promise<LadderDecision> {
    this.timings++;
    if (envFlag(LOG_ENV)) this.#log(`timing ${k.name} on ${ctx.adapterKey}`);
    const failures: Record<string, string> = {};
    const ms: Record<string, number | null> = {};
    let probe: LadderProbe;
    try {
      probe = await k.probe(ctx);
    } catch (e) {
      this.#log(`${k.name}: probe failed (${(e as Error).message}); using ${k.prior(ctx)}`);
      return { kernel: k.name, variant: k.prior(ctx), source: "prior" };
    }
    try {
      // Warm-up: compiles, and a first duration to size the timed submits.
      const first = new Map<string, number>();
      for (const v of availableVariants(ctx, k)) {
        try {
          first.set(v, await timeSubmit(ctx, probe, v, 1));
        } catch (e) {
          failures[v] = (e as Error).message;
          ms[v] = null;
        }
      }
      if (first.size === 0) {
        this.#log(`${k.name}: no variant ran (${JSON.stringify(failures)}); using the prior`);
        return { kernel: k.name, variant: k.prior(ctx), source: "prior", ms, failures };
      }
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
      const ranked = Object.entries(ms).filter((e): e is [string, number] => e[1] !== null)
        .sort((a, b) => a[1] - b[1]);
      const variant = ranked[0]?.[0] ?? k.prior(ctx);
      for (const [v, why] of Object.entries(failures)) {
        this.#log(`${k.name}: variant ${v} failed on ${ctx.adapterKey}: ${why}`);
      }
      return {
        kernel: k.name,
        variant,
        source: "timed",
        ms,
        failures: Object.keys(failures).length ? failures : undefined,
        measuredAt: new Date().toISOString(),
      };
    } finally {
      probe.destroy();
    }
  }

  #store(ctx: GpuContext, k: LadderKernel, d: LadderDecision): void {
    const path = this.cachePath;
    const entry: CacheEntry = {
      variant: d.variant,
      fingerprint: fingerprint(k),
      ms: d.ms,
      measuredAt: d.measuredAt,
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
    for (const b of this.#raw) b.destroy();
    this.#raw = [];
  }
}
