/**
 * Section (a): the 4-bit matmul against the best dense f32 matmul of the same shape on the same
 * adapter. The weight is a random W [out, in] quantized to NF4 with double quant (blocksize 64,
 * as QLoRA stores it); the dense contender multiplies by the same values dequantized, stored
 * [out, in] as a model stores them. Every variant of both kernels is timed side by side; each
 * side is represented by its fastest variant.
 *   forward:  Y[M, out] = X[M, in] · Wᵀ
 *   backward: dX[M, in] = dY[M, out] · W
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import {
  availableMatmulVariants,
  encodeMatmul,
  type MatmulVariant,
} from "../../src/kernels/matmul.ts";
import {
  availableMatmul4bitVariants,
  encodeMatmul4bit,
  encodeMatmul4bitT,
  type Matmul4bitVariant,
} from "../../src/kernels/matmul_4bit.ts";
import { uploadQuantWeight } from "../../src/kernels/quant_weight.ts";
import { dequantizeWeight, quantizeWeight } from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";
import { kernelContender, timeKernels } from "../../src/gpu/timing.ts";

export interface LinearShape {
  name: string;
  out: number;
  in: number;
}

/** Llama-7B's linear shapes with both sides divided by 8 (hidden 512, intermediate 1376). */
export const LLAMA7B_LINEARS_DIV8: LinearShape[] = [
  { name: "q,k,v,o 4096x4096 ÷8", out: 512, in: 512 },
  { name: "gate,up 11008x4096 ÷8", out: 1376, in: 512 },
  { name: "down 4096x11008 ÷8", out: 512, in: 1376 },
];

export type Direction = "forward" | "backward";

export interface MatmulRow {
  shape: string;
  out: number;
  in: number;
  m: number;
  direction: Direction;
  /** GFLOP/s of each variant, by kernel family. */
  fourBit: Record<string, number>;
  dense: Record<string, number>;
  best4bit: { variant: string; gflops: number };
  bestDense: { variant: string; gflops: number };
  /** best4bit / bestDense. */
  ratio: number;
}

export interface MatmulBenchOptions {
  shapes: LinearShape[];
  ms: number[];
  directions: Direction[];
  variants4bit?: readonly Matmul4bitVariant[];
  variantsDense?: readonly MatmulVariant[];
  rounds: number;
  targetMs: number;
  onRow?: (row: MatmulRow) => void;
}

function best(g: Record<string, number>): { variant: string; gflops: number } {
  const [variant, gflops] = Object.entries(g).sort((a, b) => b[1] - a[1])[0];
  return { variant, gflops };
}

export async function benchMatmul(ctx: GpuContext, o: MatmulBenchOptions): Promise<MatmulRow[]> {
  const rows: MatmulRow[] = [];
  const rng = new Rng(20261129);
  const v4 = o.variants4bit ?? availableMatmul4bitVariants(ctx);
  const vd = o.variantsDense ?? availableMatmulVariants(ctx);
  for (const shape of o.shapes) {
    const host = new Float32Array(shape.out * shape.in);
    for (let i = 0; i < host.length; i++) host[i] = (2 * rng.next() - 1) / Math.sqrt(shape.in);
    const q = quantizeWeight(host, [shape.out, shape.in], {
      quantType: "nf4",
      blocksize: 64,
      doubleQuant: true,
      dtype: "float32",
    });
    const w = uploadQuantWeight(ctx, q, `bench.${shape.out}x${shape.in}`);
    const wDense = ctx.upload("bench.w_dense", "scratch", dequantizeWeight(q));
    const maxM = Math.max(...o.ms);
    const x = ctx.upload("bench.x", "scratch", rng.normals(maxM * shape.in));
    const dy = ctx.upload("bench.dy", "scratch", rng.normals(maxM * shape.out));
    const y = ctx.createBuffer({
      label: "bench.y",
      category: "scratch",
      size: maxM * shape.out * 4,
    });
    const dx = ctx.createBuffer({
      label: "bench.dx",
      category: "scratch",
      size: maxM * shape.in * 4,
    });
    try {
      for (const direction of o.directions) {
        for (const m of o.ms) {
          const flops = 2 * m * shape.out * shape.in;
          const contenders = [
            ...v4.map((variant) =>
              kernelContender(
                ctx,
                `4bit ${variant}`,
                (b) =>
                  direction === "forward"
                    ? encodeMatmul4bit(ctx, b, { x, w, y, m, variant })
                    : encodeMatmul4bitT(ctx, b, { dy, w, dx, m, variant }),
                { targetMs: o.targetMs },
              )
            ),
            ...vd.map((variant) =>
              kernelContender(
                ctx,
                `dense ${variant}`,
                (b) =>
                  direction === "forward"
                    ? encodeMatmul(ctx, b, {
                      a: x,
                      b: wDense,
                      c: y,
                      m,
                      n: shape.out,
                      k: shape.in,
                      transB: true,
                      variant,
                    })
                    : encodeMatmul(ctx, b, {
                      a: dy,
                      b: wDense,
                      c: dx,
                      m,
                      n: shape.in,
                      k: shape.out,
                      variant,
                    }),
                { targetMs: o.targetMs },
              )
            ),
          ];
          const t = await timeKernels(contenders, o.rounds);
          const gflops = (name: string) => flops / (t.get(name)!.ms * 1e6);
          const fourBit = Object.fromEntries(v4.map((v) => [v, gflops(`4bit ${v}`)]));
          const dense = Object.fromEntries(vd.map((v) => [v, gflops(`dense ${v}`)]));
          const row: MatmulRow = {
            shape: shape.name,
            out: shape.out,
            in: shape.in,
            m,
            direction,
            fourBit,
            dense,
            best4bit: best(fourBit),
            bestDense: best(dense),
            ratio: best(fourBit).gflops / best(dense).gflops,
          };
          rows.push(row);
          o.onRow?.(row);
        }
      }
    } finally {
      for (const b of [wDense, x, dy, y, dx]) b.destroy();
      w.destroy();
    }
  }
  return rows;
}
