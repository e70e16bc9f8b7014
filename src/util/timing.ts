/**
 * Side-by-side timing for benchmarks on a shared machine: every contender is warmed up, then
 * the contenders run in interleaved rounds (A B C, A B C, ...) so that a slow spell of the
 * machine hits all of them alike, and each is summarized by its median. GPU kernels are timed
 * as one submit of `reps` dispatches until the queue is done, with reps sized so a submit takes
 * about `targetMs` (per-submit overhead amortized, as in a training step's single submit).
 */
import type { DispatchBatch, GpuContext } from "../gpu/context.ts";

export interface Contender {
  name: string;
  /** One unit of work, finished (GPU work waited for) when the promise resolves. */
  run: () => Promise<void>;
  /** Units of work per run (a run of `reps` dispatches counts `reps`); default 1. */
  perRun?: number;
}

export interface Timing {
  /** Median ms per unit of work. */
  ms: number;
  min: number;
  max: number;
  /** ms per unit of work, one per round. */
  samples: number[];
}

export interface RoundsOptions {
  warmup?: number;
  rounds: number;
  /** Called after each round (progress). */
  onRound?: (round: number) => void;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Warm-up runs of each contender, then `rounds` interleaved rounds; medians by name. */
export async function interleaved(
  contenders: Contender[],
  opts: RoundsOptions,
): Promise<Map<string, Timing>> {
  for (const c of contenders) {
    for (let i = 0; i < (opts.warmup ?? 1); i++) await c.run();
  }
  const samples = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  for (let r = 0; r < opts.rounds; r++) {
    // Alternate the order so neither contender always runs right after the other.
    const order = r % 2 === 0 ? contenders : [...contenders].reverse();
    for (const c of order) {
      const t0 = performance.now();
      await c.run();
      samples.get(c.name)!.push((performance.now() - t0) / (c.perRun ?? 1));
    }
    opts.onRound?.(r);
  }
  const out = new Map<string, Timing>();
  for (const [name, s] of samples) {
    out.set(name, { ms: median(s), min: Math.min(...s), max: Math.max(...s), samples: s });
  }
  return out;
}

export type Encode = (batch: DispatchBatch) => Promise<void> | void;

/**
 * A contender that records `encode` reps times into one batch, submits, and waits. The first
 * call compiles (and is a warm-up); `calibrate` then sizes reps from one timed submit.
 */
export function kernelContender(
  ctx: GpuContext,
  name: string,
  encode: Encode,
  o: { targetMs: number; maxReps?: number },
): Contender & { calibrate(): Promise<number> } {
  let reps = 1;
  const c = {
    name,
    perRun: 1,
    async run() {
      const batch = ctx.batch(name);
      for (let i = 0; i < reps; i++) await encode(batch);
      batch.submit();
      await ctx.sync();
    },
    /** Compiles, then picks reps from a timed single run; returns ms of one dispatch. */
    async calibrate() {
      reps = 1;
      await c.run();
      const t0 = performance.now();
      await c.run();
      const once = Math.max(performance.now() - t0, 0.01);
      reps = Math.max(1, Math.min(o.maxReps ?? 256, Math.round(o.targetMs / once)));
      c.perRun = reps;
      return once;
    },
  };
  return c;
}

/** Calibrates GPU contenders, then times them interleaved (calibration is the warm-up). */
export async function timeKernels(
  contenders: Array<Contender & { calibrate(): Promise<number> }>,
  rounds: number,
): Promise<Map<string, Timing>> {
  for (const c of contenders) await c.calibrate();
  return await interleaved(contenders, { warmup: 0, rounds });
}
