/**
 * The GPU check's GEMM figures at real shapes: Y[M, out] = X[M, in] · Wᵀ with W random, made on
 * the GPU (scripts/bench/gpu_random.ts), as NF4 + double quant through the 4-bit kernel, and as the
 * same values in f32 through the dense matmul, each in the variant the kernel ladder picks for
 * this adapter (recorded), plus the dense f16 GEMM where one exists (scripts/bench/dense_f16_gemm.ts).
 * TFLOP/s count 2·M·out·in per product. A few rows of the 4-bit result are compared with the
 * dense one (they differ by the NF4 rounding of W, a few percent), which catches a kernel that
 * returns garbage at these sizes without timing it.
 */
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import { encodeMatmul } from "../../src/kernels/matmul.ts";
import { encodeMatmul4bit } from "../../src/kernels/matmul_4bit.ts";
import { kernelLadder } from "../../src/kernels/ladder.ts";
import { denseF16Gemm } from "./dense_f16_gemm.ts";
import { randomF32Buffer, randomQuantWeightGpu } from "./gpu_random.ts";
import { type GpuContender, timeGpuKernels } from "./gpu_kernel_timing.ts";

export interface GemmShape {
  /** The name the figure is reported under, e.g. "4096x4096" (W [out, in]). */
  key: string;
  out: number;
  in: number;
}

export interface GemmFigure {
  tflops: number;
  ms: number;
  method: "timestamp" | "wall";
  wallMs: number;
  reps: number;
  variant: string;
}

export interface GemmRow {
  key: string;
  m: number;
  out: number;
  in: number;
  nf4: GemmFigure;
  denseF32: GemmFigure;
  denseF16: GemmFigure | { unavailable: string };
  /** RMS of (Y_nf4 - Y_f32) over RMS of Y_f32, over the rows checked. */
  nf4VsF32RelRms: number;
  rowsChecked: number;
}

export interface GemmBenchOptions {
  m: number;
  shapes: GemmShape[];
  targetMs: number;
  rounds: number;
  onRow?: (row: GemmRow) => void;
}

/** Variant the ladder runs for `kernel` on this adapter (after a use, so decided). */
function ladderVariant(ctx: GpuContext, kernel: string): string {
  return kernelLadder.choice(ctx, kernel);
}

export async function benchGemm(ctx: GpuContext, o: GemmBenchOptions): Promise<GemmRow[]> {
  const rows: GemmRow[] = [];
  for (const [i, shape] of o.shapes.entries()) {
    const owned: GpuBuffer[] = [];
    const { weight, f32 } = await randomQuantWeightGpu(ctx, {
      label: `gemm.w${shape.key}`,
      out: shape.out,
      in: shape.in,
      seed: 1000 + i,
      keepF32: true,
    });
    owned.push(f32!);
    try {
      const x = await randomF32Buffer(ctx, "gemm.x", "scratch", o.m * shape.in, {
        seed: 2000 + i,
        center: 0,
        scale: 1,
      });
      owned.push(x);
      const y = ctx.createBuffer({
        label: "gemm.y",
        category: "scratch",
        size: o.m * shape.out * 4,
      });
      owned.push(y);
      const operands = { x, w: f32!, y, m: o.m, n: shape.out, k: shape.in };
      const f16 = await denseF16Gemm(ctx, operands);
      const contenders: GpuContender[] = [
        { name: "nf4", encode: (b) => encodeMatmul4bit(ctx, b, { x, w: weight, y, m: o.m }) },
        {
          name: "dense f32",
          encode: (b) =>
            encodeMatmul(ctx, b, {
              a: x,
              b: f32!,
              c: y,
              m: o.m,
              n: shape.out,
              k: shape.in,
              transB: true,
            }),
        },
      ];
      if (f16.available) contenders.push({ name: "dense f16", encode: (b) => f16.encode(b) });
      try {
        const t = await timeGpuKernels(ctx, contenders, {
          targetMs: o.targetMs,
          rounds: o.rounds,
          maxReps: 64,
        });
        const flops = 2 * o.m * shape.out * shape.in;
        const figure = (name: string, variant: string): GemmFigure => {
          const s = t.get(name)!;
          return {
            tflops: flops / (s.ms * 1e9),
            ms: s.ms,
            method: s.method,
            wallMs: s.wallMs,
            reps: s.reps,
            variant,
          };
        };
        const check = await compareRows(ctx, contenders, y, Math.min(4, o.m), shape.out);
        const row: GemmRow = {
          key: shape.key,
          m: o.m,
          out: shape.out,
          in: shape.in,
          nf4: figure("nf4", ladderVariant(ctx, "matmul_4bit")),
          denseF32: figure("dense f32", ladderVariant(ctx, "matmul")),
          denseF16: f16.available ? figure("dense f16", f16.variant) : { unavailable: f16.reason },
          nf4VsF32RelRms: check,
          rowsChecked: Math.min(4, o.m),
        };
        rows.push(row);
        o.onRow?.(row);
      } finally {
        if (f16.available) f16.destroy();
      }
    } finally {
      for (const b of owned) b.destroy();
      weight.destroy();
    }
  }
  return rows;
}

/** Runs the first two contenders once each and compares the first `rows` rows of Y. */
async function compareRows(
  ctx: GpuContext,
  contenders: GpuContender[],
  y: GpuBuffer,
  rows: number,
  out: number,
): Promise<number> {
  const results: Float32Array[] = [];
  for (const c of contenders.slice(0, 2)) {
    const b = ctx.batch(`check ${c.name}`);
    await c.encode(b, 0);
    b.submit();
    results.push(await ctx.readF32(y, 0, rows * out));
  }
  const [q, d] = results;
  let num = 0, den = 0;
  for (let i = 0; i < q.length; i++) {
    num += (q[i] - d[i]) ** 2;
    den += d[i] ** 2;
  }
  const rel = Math.sqrt(num / den);
  if (!Number.isFinite(rel) || rel > 0.5) {
    throw new Error(
      `the 4-bit GEMM's first ${rows} rows differ from the dense f32 GEMM's by ${rel} (RMS ratio)`,
    );
  }
  return rel;
}
