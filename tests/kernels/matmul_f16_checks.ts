/**
 * Shared by the tests of the matmul variants that round operands to f16 (matmul_f16_test.ts,
 * matmul_subgroup_matrix_test.ts): run a dense or 4-bit product on random odd-shaped inputs
 * (poisoned output, or random C in accumulate mode) and check every element against float64
 * within the bound of tests/reference/f16_error_bound.ts.
 */
import assert from "node:assert/strict";
import { poisonedF32 } from "../support/gpu.ts";
import type { Binding, GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import type { GpuQuantWeight } from "../../src/kernels/quant_weight.ts";
import { uploadQuantWeight } from "../../src/kernels/quant_weight.ts";
import type { Rng } from "../../src/util/random.ts";
import { matmulF64 } from "../reference/ops_f64.ts";
import { dequantizeF64, matmulDyW, matmulXWt } from "../reference/dequant_f64.ts";
import { randomQuantWeight } from "../reference/random_quant_weight.ts";
import {
  denseAbsTerms,
  f16MatmulBound,
  quantAbsTerms,
  worstBoundRatio,
} from "../reference/f16_error_bound.ts";

/** Random values over several magnitudes (4e-6 .. 4), some in f16's subnormal range. */
export function spread(rng: Rng, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform(-1, 1) * 4 * 10 ** -rng.int(7);
  return out;
}

export interface DenseCase {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  accumulate: boolean;
}

/** Odd shapes off every tile (64, 32, 16, 8), all layouts, alpha, accumulate. */
export const DENSE_CASES: DenseCase[] = [
  { m: 1, n: 3, k: 1, transA: false, transB: false, alpha: 1, accumulate: false },
  { m: 17, n: 80, k: 3, transA: false, transB: true, alpha: 1, accumulate: false },
  { m: 70, n: 17, k: 216, transA: true, transB: false, alpha: -0.75, accumulate: true },
  { m: 3, n: 129, k: 80, transA: true, transB: true, alpha: 1.5, accumulate: false },
  { m: 65, n: 66, k: 33, transA: false, transB: false, alpha: 1, accumulate: true },
];

/**
 * Runs `encode(a, b, c)` (it records and submits the product of the f32 operands into C) and
 * checks C = alpha op(A) op(B) (+ C0) within the f16 bound.
 */
export async function checkDense(
  ctx: GpuContext,
  rng: Rng,
  c: DenseCase,
  label: string,
  encode: (a: Float32Array, b: Float32Array, out: GpuBuffer) => Promise<void>,
): Promise<void> {
  const a = spread(rng, c.m * c.k);
  const b = spread(rng, c.k * c.n);
  const prior = c.accumulate ? rng.normals(c.m * c.n) : undefined;
  const buf = prior ? ctx.upload("c", "scratch", prior) : await poisonedF32(ctx, "c", c.m * c.n);
  await encode(a, b, buf);
  const got = await ctx.readF32(buf);
  buf.destroy();
  const want = matmulF64(a, b, c.m, c.n, c.k, c.transA, c.transB).map((v, i) =>
    c.alpha * v + (prior ? prior[i] : 0)
  );
  const bound = f16MatmulBound({
    ...denseAbsTerms(a, b, c.m, c.n, c.k, c.transA, c.transB),
    k: c.k,
    alpha: c.alpha,
    prior,
  });
  const { ratio, at } = worstBoundRatio(got, want, bound);
  assert.ok(
    ratio <= 1,
    `${label} ${JSON.stringify(c)}: element ${at} off by ${ratio.toFixed(2)} x the bound`,
  );
}

/** 4-bit shapes: m, in, out off the tiles; blocks straddling rows (in = 80 or 77 with
 * blocksize 64 / 32); in % 8 != 0 (rows not on packed words); in < 32 (one partial step). */
export const QUANT_SHAPES = [
  { blocksize: 64, m: 3, nIn: 80, nOut: 216 },
  { blocksize: 32, m: 17, nIn: 77, nOut: 45 },
  { blocksize: 64, m: 70, nIn: 136, nOut: 130 },
  { blocksize: 32, m: 21, nIn: 24, nOut: 70 },
];

export type QuantEncode = (
  direction: "forward" | "backward",
  args: { src: Binding; w: GpuQuantWeight; dst: Binding; m: number; accumulate: boolean },
) => Promise<void>;

/**
 * For each shape (NF4/FP4, double quant on and off alternating), both directions, with and
 * without accumulate: `encode` records and submits; the output is checked within the f16 bound.
 */
export async function checkQuant(
  ctx: GpuContext,
  rng: Rng,
  label: string,
  encode: QuantEncode,
): Promise<void> {
  let combo = 0;
  for (const { blocksize, m, nIn, nOut } of QUANT_SHAPES) {
    const quantType = combo % 2 ? "fp4" : "nf4";
    const doubleQuant = combo % 3 !== 1;
    combo++;
    const q = randomQuantWeight(rng, quantType, doubleQuant, blocksize, nOut, nIn);
    const wRef = dequantizeF64(q);
    const w = uploadQuantWeight(ctx, q, "w");
    for (const direction of ["forward", "backward"] as const) {
      const backward = direction === "backward";
      for (const accumulate of [false, true]) {
        const [lenIn, lenOut] = backward ? [nOut, nIn] : [nIn, nOut];
        const act = spread(rng, m * lenIn);
        const prior = accumulate ? rng.normals(m * lenOut) : undefined;
        const src = ctx.upload("src", "scratch", act);
        const dst = prior
          ? ctx.upload("dst", "scratch", prior)
          : await poisonedF32(ctx, "dst", m * lenOut);
        await encode(direction, { src, w, dst, m, accumulate });
        const got = await ctx.readF32(dst);
        const exact = backward
          ? matmulDyW(act, wRef, m, nIn, nOut)
          : matmulXWt(act, wRef, m, nIn, nOut);
        const want = exact.map((v, i) => v + (prior ? prior[i] : 0));
        const bound = f16MatmulBound({
          ...quantAbsTerms(act, wRef, m, nIn, nOut, backward),
          k: lenIn,
          prior,
        });
        const { ratio, at } = worstBoundRatio(got, want, bound);
        assert.ok(
          ratio <= 1,
          `${label} ${quantType} dq=${doubleQuant} bs=${blocksize} m=${m} in=${nIn} ` +
            `out=${nOut} ${direction} acc=${accumulate}: element ${at} off by ` +
            `${ratio.toFixed(2)} x the bound`,
        );
        src.destroy();
        dst.destroy();
      }
    }
    w.destroy();
  }
}
