/**
 * Kernel timing at real sizes, where one dispatch can take from microseconds (a GEMV) to a
 * second (a 7B-sized GEMM): each contender records `reps` dispatches into one submit, sized from
 * a calibration run so a submit takes about `targetMs`, and contenders run in interleaved rounds
 * (medians), as src/gpu/timing.ts does. Beside the wall time of encode + submit + wait, the GPU
 * time of the submit's compute pass is read with timestamp queries where the device has them
 * (src/telemetry/gpu_timing.ts), so thousands of small dispatches are not charged for their
 * host-side encoding. The figure used is the GPU time when there is one, else the wall time.
 */
import type { DispatchBatch, GpuContext } from "../../src/gpu/context.ts";
import { GpuTimer } from "../../src/telemetry/gpu_timing.ts";
import { median } from "../../src/gpu/timing.ts";

export interface GpuContender {
  name: string;
  /** Records one unit of work; `rep` counts from 0 within a submit (to rotate buffers). */
  encode: (batch: DispatchBatch, rep: number) => Promise<void> | void;
}

export interface GpuKernelTiming {
  /** ms per unit of work: the GPU time when measured, else the wall time. */
  ms: number;
  method: "timestamp" | "wall";
  /** Median wall ms per unit (encode + submit + wait, divided by reps). */
  wallMs: number;
  /** Median GPU ms per unit from timestamps; undefined without timestamp queries. */
  gpuMs?: number;
  reps: number;
  rounds: number;
}

export interface GpuTimingOptions {
  targetMs: number;
  rounds: number;
  maxReps?: number;
}

/** Calibrates each contender, then times all of them in interleaved rounds. */
export async function timeGpuKernels(
  ctx: GpuContext,
  contenders: GpuContender[],
  o: GpuTimingOptions,
): Promise<Map<string, GpuKernelTiming>> {
  const previous = ctx.timing;
  const timer = ctx.capabilities.timestampQuery ? new GpuTimer(ctx.device) : undefined;
  ctx.timing = timer;
  try {
    const once = async (c: GpuContender, reps: number) => {
      const batch = ctx.batch(c.name);
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) await c.encode(batch, i);
      batch.submit();
      await ctx.sync();
      const wall = performance.now() - t0;
      let gpu: number | undefined;
      if (timer) {
        await timer.settle();
        const s = timer.take().find((t) => t.family === c.name)?.seconds ?? 0;
        // A zero reading (a counter that did not tick) falls back to the wall clock.
        gpu = s > 0 ? s * 1000 : undefined;
      }
      return { wall: wall / reps, gpu: gpu === undefined ? undefined : gpu / reps };
    };
    const reps = new Map<string, number>();
    for (const c of contenders) {
      await once(c, 1); // compiles, warms up
      const t = await once(c, 1);
      const per = Math.max(t.gpu ?? t.wall, 1e-3);
      reps.set(c.name, Math.max(1, Math.min(o.maxReps ?? 256, Math.round(o.targetMs / per))));
    }
    const wall = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
    const gpu = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? contenders : [...contenders].reverse();
      for (const c of order) {
        const t = await once(c, reps.get(c.name)!);
        wall.get(c.name)!.push(t.wall);
        if (t.gpu !== undefined) gpu.get(c.name)!.push(t.gpu);
      }
    }
    const out = new Map<string, GpuKernelTiming>();
    for (const c of contenders) {
      const w = median(wall.get(c.name)!);
      const g = gpu.get(c.name)!;
      // Timestamps count only when every round had one.
      const gpuMs = g.length === o.rounds && g.length > 0 ? median(g) : undefined;
      out.set(c.name, {
        ms: gpuMs ?? w,
        method: gpuMs === undefined ? "wall" : "timestamp",
        wallMs: w,
        gpuMs,
        reps: reps.get(c.name)!,
        rounds: o.rounds,
      });
    }
    return out;
  } finally {
    ctx.timing = previous;
    await timer?.destroy();
  }
}
