/**
 * One timing run of a kernel's variants on the device, for the ladder: the kernel's probe (inputs
 * of a representative shape in ProbeBuffers); for each variant an untimed warm-up submit, which
 * compiles its pipelines (awaited ctx.pipeline: seconds on lavapipe, which must not count as the
 * variant's speed) and makes its bind groups and uniforms, then one timed submit that sizes the
 * rounds; then interleaved rounds of the ones not hopelessly slow with the shared harness of
 * src/gpu/timing.ts. The result is the median ms per run of each variant. Probe buffers go
 * through GpuContext.createBuffer (ledger category "scratch"), so the memory ledger sees them for
 * the few milliseconds they live.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import { Rng } from "../util/random.ts";
import { type Contender, type Encode, interleaved, timedSubmit } from "../gpu/timing.ts";
import type { LadderKernel, LadderProbe } from "./ladder_registry.ts";

/** A timed submit of the fastest variant should take about this long. */
const TARGET_MS = 4;
const MAX_REPS = 64;
const ROUNDS = 3;
/** A variant whose warm-up run is this many times the fastest's (and over 50 ms) is not rounded. */
const HOPELESS = 25;

/** Median ms per run of each variant in one timing run (null: failed). */
export type RunTimes = Record<string, number | null>;

/** What one timing run found. */
export interface TimingRun {
  ms: RunTimes;
  failures?: Record<string, string>;
}

/**
 * How a timing run submits a variant's work: `warm` untimed (its first use: compiles and
 * dispatches once), `time` timed (ms of one submit of `reps` runs). Tests wrap the device's to
 * see the order of events.
 */
export interface ProbeSubmits {
  warm(label: string, encode: Encode): Promise<void>;
  time(label: string, encode: Encode, reps: number): Promise<number>;
}

/** Submits on the device, each checked for GPU errors (src/gpu/timing.ts's timedSubmit). */
export function deviceSubmits(ctx: GpuContext): ProbeSubmits {
  return {
    warm: async (label, encode) => {
      await timedSubmit(ctx, label, encode, 1);
    },
    time: (label, encode, reps) => timedSubmit(ctx, label, encode, reps),
  };
}

/** A probe's buffers, in the memory ledger as scratch; destroy() frees them all. */
export class ProbeBuffers {
  #buffers: GpuBuffer[] = [];

  constructor(readonly ctx: GpuContext) {}

  #keep(b: GpuBuffer): GpuBuffer {
    this.#buffers.push(b);
    return b;
  }

  /** A buffer holding `data`. */
  upload(label: string, data: ArrayBufferView): GpuBuffer {
    return this.#keep(this.ctx.upload(label, "scratch", data));
  }

  /** A buffer of `bytes` (contents unspecified). */
  empty(label: string, bytes: number): GpuBuffer {
    return this.#keep(this.ctx.createBuffer({ label, category: "scratch", size: bytes }));
  }

  /** Seeded values in [-1, 1): timing needs no particular numbers, only finite ones. */
  random(label: string, count: number, seed: number): GpuBuffer {
    return this.upload(label, new Rng(seed).fillUniform(new Float32Array(count), -1, 1));
  }

  /** Seeded bytes (e.g. 4-bit codes and absmax codes: any byte is a valid one). */
  randomBytes(label: string, count: number, seed: number): GpuBuffer {
    const rng = new Rng(seed);
    return this.upload(label, Uint8Array.from({ length: count }, () => rng.int(256)));
  }

  destroy(): void {
    for (const b of this.#buffers) b.destroy();
    this.#buffers = [];
  }
}

/**
 * One timing run of `variants` of kernel `k`: a variant that fails to compile or validate is
 * null with its error in `failures`; a probe that cannot be made fails every variant.
 */
export async function timeVariants(
  ctx: GpuContext,
  k: LadderKernel,
  variants: string[],
  log: (line: string) => void,
  submits: ProbeSubmits = deviceSubmits(ctx),
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
  const label = (v: string) => `ladder ${k.name} ${v}`;
  const encode = (v: string): Encode => (batch) => probe.run(batch, v);
  const submit = (v: string, reps: number) => submits.time(label(v), encode(v), reps);
  try {
    const first = new Map<string, number>();
    for (const v of variants) {
      try {
        // Compile time must not land in any timed submit (nor decide HOPELESS or reps).
        await submits.warm(label(v), encode(v));
        first.set(v, await submit(v, 1));
      } catch (e) {
        failures[v] = (e as Error).message;
        ms[v] = null;
      }
    }
    if (first.size === 0) return { ms, failures };
    const fastest = Math.min(...first.values());
    const rounded = [...first.keys()].filter((v) =>
      first.get(v)! <= Math.max(50, HOPELESS * fastest)
    );
    for (const [v, t] of first) if (!rounded.includes(v)) ms[v] = t;
    const reps = Math.max(1, Math.min(MAX_REPS, Math.ceil(TARGET_MS / Math.max(fastest, 0.01))));
    const contenders: Contender[] = rounded.map((v) => ({
      name: v,
      perRun: reps,
      run: async () => {
        if (failures[v]) return NaN;
        try {
          return await submit(v, reps);
        } catch (e) {
          failures[v] = (e as Error).message;
          return NaN;
        }
      },
    }));
    const timings = await interleaved(contenders, { warmup: 0, rounds: ROUNDS });
    for (const v of rounded) ms[v] = failures[v] ? null : timings.get(v)!.ms;
    return { ms, failures };
  } finally {
    probe.destroy();
  }
}
