/**
 * Element-wise error bounds for the matmul kernels that round their operands to f16 and
 * accumulate in f32 (tiled_f16, subgroup_matrix, the f16 GEMM), derived from the rounding model,
 * not from what the kernels happen to reach. For one output y = sum_k x_k w_k:
 * - f16 rounding of an operand: WGSL lets an f32 -> f16 conversion round to either neighbour, so
 *   |x^ - x| <= 2^-10 |x| in the normal range and <= 2^-24 (the subnormal spacing) below it:
 *   <= U |x| + 2^-24 with U = 2^-10 (round to nearest, what GPUs do, halves both). A 4-bit
 *   weight is first dequantized in f32 (one more 2^-24 relative rounding, folded into U's slack).
 * - one product: |x^ w^ - x w| <= |x^ - x| |w^| + |x| |w^ - w|
 *   <= 2U (1 + U) |x| |w| + 2^-23 (|x| + |w|)   (second-order terms folded in).
 * - f32 accumulation of k products: at most k * 2^-23 * sum |x w| (2^-24 per add for round to
 *   nearest; 2^-23 leaves room for matrix units whose rounding Dawn leaves undefined).
 * - epilogue: alpha * y and the add into C in accumulate mode, 2^-24 relative each.
 * So |y^ - y| <= |alpha| ((2U (1 + U) + k 2^-23) S + 2^-23 T) + 2^-23 (|alpha| S + |c0|)
 * with S = sum_k |x_k| |w_k| and T = sum_k (|x_k| + |w_k|). This is a worst case: random signs
 * and rounding to nearest make the typical error ~ sqrt(k) 2^-11 |x| |w|, far below. It still
 * catches indexing bugs: dropping or misplacing one term of a k <= 216 reduction moves y by
 * about S / k, over twice the bound's 2^-9 S.
 */
import { matmulF64 } from "./ops_f64.ts";

const U16 = 2 ** -10;
const U32 = 2 ** -24;

export interface F16BoundInput {
  /** S per output: sum_k |x_k| |w_k| (float64). */
  absProducts: ArrayLike<number>;
  /** T per output: sum_k |x_k| + sum_k |w_k| (float64). */
  absSums: ArrayLike<number>;
  /** Reduction length. */
  k: number;
  alpha?: number;
  /** C before the kernel in accumulate mode. */
  prior?: ArrayLike<number>;
}

/** The bound on |got - exact| of each output. */
export function f16MatmulBound(o: F16BoundInput): Float64Array {
  const alpha = Math.abs(o.alpha ?? 1);
  const perProduct = 2 * U16 * (1 + U16) + o.k * 2 * U32;
  const out = new Float64Array(o.absProducts.length);
  for (let i = 0; i < out.length; i++) {
    const s = o.absProducts[i];
    const c0 = o.prior ? Math.abs(o.prior[i]) : 0;
    out[i] = alpha * (perProduct * s + 2 * U32 * o.absSums[i]) + 2 * U32 * (alpha * s + c0);
  }
  return out;
}

/**
 * The largest |got - want| / bound over all outputs (<= 1 passes); NaN or a non-finite value
 * anywhere gives Infinity. Also returns where the worst one is, for messages.
 */
export function worstBoundRatio(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  bound: ArrayLike<number>,
): { ratio: number; at: number } {
  if (got.length !== want.length || want.length !== bound.length) {
    throw new Error(`lengths ${got.length}, ${want.length}, ${bound.length} differ`);
  }
  let ratio = 0;
  let at = -1;
  for (let i = 0; i < got.length; i++) {
    if (!Number.isFinite(got[i])) return { ratio: Infinity, at: i };
    const r = Math.abs(got[i] - want[i]) / bound[i];
    if (r > ratio) {
      ratio = r;
      at = i;
    }
  }
  return { ratio, at };
}

/** |a| element-wise, as float64. */
export function absF64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, Math.abs);
}

/** S and T of C = op(A) op(B) (layouts as matmulF64). */
export function denseAbsTerms(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  transA = false,
  transB = false,
): { absProducts: Float64Array; absSums: Float64Array } {
  const absProducts = matmulF64(absF64(a), absF64(b), m, n, k, transA, transB);
  const ones = (len: number) => new Float64Array(len).fill(1);
  // Row sums of |op(A)| and column sums of |op(B)| as products with ones.
  const rowA = matmulF64(absF64(a), ones(k), m, 1, k, transA, false);
  const colB = matmulF64(ones(k), absF64(b), 1, n, k, false, transB);
  const absSums = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) absSums[i * n + j] = rowA[i] + colB[j];
  }
  return { absProducts, absSums };
}

/** S and T of Y = X W^T (forward) or dX = dY W (backward), W [out, in] dequantized. */
export function quantAbsTerms(
  act: ArrayLike<number>,
  w: ArrayLike<number>,
  m: number,
  nIn: number,
  nOut: number,
  backward: boolean,
): { absProducts: Float64Array; absSums: Float64Array } {
  // X W^T is op(A) op(B) with B = W transposed; dY W is with B = W as stored.
  return backward
    ? denseAbsTerms(act, w, m, nIn, nOut, false, false)
    : denseAbsTerms(act, w, m, nOut, nIn, false, true);
}

/** The f16 values next to x: [x, x] when x is one, else the neighbours below and above. */
export function f16Neighbours(x: number): [number, number] {
  const near = Math.f16round(x);
  if (near === x || !Number.isFinite(near)) return [near, near];
  const bits = new Uint16Array(new Float16Array([near]).buffer)[0];
  // One step of the f16 bit pattern away from zero grows |near|, one toward zero shrinks it.
  const away = (near > 0) === (x > near);
  const other = bits === 0 || bits === 0x8000
    ? (x > 0 ? 2 ** -24 : -(2 ** -24))
    : new Float16Array(new Uint16Array([away ? bits + 1 : bits - 1]).buffer)[0];
  return near < other ? [near, other] : [other, near];
}
