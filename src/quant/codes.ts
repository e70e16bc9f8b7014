/**
 * The per-value quantizers of bitsandbytes: each picks a 4-bit (NF4, FP4) or 8-bit dynamic code
 * exactly as bitsandbytes' CUDA kernels do. The tables they pick from are src/io/quant_codes.ts
 * (re-exported here for the quantizers' users).
 *
 * Every input `x` is expected to be a float32 value (a JS number that `Math.fround` leaves
 * unchanged); comparing such a number with a float32 constant in double precision is the same
 * comparison the kernel makes in float32.
 *
 * Sources (bitsandbytes-foundation/bitsandbytes):
 * - `csrc/kernels.cu::dQuantizeNF4`: a comparison tree `x > t` on float32 literals, the float32
 *   midpoints of adjacent NF4 values, so a value exactly on a midpoint takes the lower code.
 * - `csrc/kernels.cu::dQuantizeFP4`: sign bit 8 when `x < 0` (so -0.0 gets no sign), then a tree
 *   on |x| with the CUDA literals (FP4_THRESHOLDS).
 * - `csrc/kernels.cu::dQuantize` for the 8-bit map (see below).
 */
import { FP4_THRESHOLDS, NF4_THRESHOLDS } from "../io/quant_codes.ts";

export {
  FP4_CODE,
  FP4_DEQUANT,
  FP4_THRESHOLDS,
  NF4_CODE,
  NF4_DEQUANT,
  NF4_THRESHOLDS,
  quantMapFor,
  type QuantType,
  signedDynamicMap,
} from "../io/quant_codes.ts";

/** The 3 magnitude bits of FP4 for magnitudes in ascending order: 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1. */
const FP4_RANK_TO_BITS = Uint8Array.from([0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011]);

/**
 * NF4 code of a scaled float32 value: the number of thresholds that `x` is strictly greater than.
 * A value exactly on a midpoint takes the lower code; NaN gives code 0 (as the CUDA tree does).
 */
export function quantizeNf4(x: number): number {
  const t = NF4_THRESHOLDS;
  // Four halving steps over the 15 sorted thresholds.
  let c = x > t[7] ? 8 : 0;
  if (x > t[c + 3]) c += 4;
  if (x > t[c + 1]) c += 2;
  if (x > t[c]) c += 1;
  return c;
}

/** FP4 code of a scaled float32 value: sign bit 8 when x < 0, magnitude bits from the CUDA tree. */
export function quantizeFp4(x: number): number {
  const sign = x < 0 ? 8 : 0;
  const a = Math.abs(x);
  const t = FP4_THRESHOLDS;
  let rank = a > t[3] ? 4 : 0;
  if (a > t[rank + 1]) rank += 2;
  if (a > t[rank]) rank += 1;
  return FP4_RANK_TO_BITS[rank] | sign;
}

/**
 * 8-bit code of a scaled float32 value in a sorted 256-entry map, as csrc/kernels.cu::dQuantize
 * (non-stochastic) picks it: a 7-step bisection from index 127 (steps 64..1) lands on an even
 * index p; the answer is p or its neighbour on x's side, whichever is nearer by comparison with
 * the float32 midpoint `fround(a + b) * 0.5`. Consequence: an exact midpoint goes to the EVEN
 * index of the two (lower when the lower index is even, upper otherwise). Below map[0] gives 0,
 * above the last midpoint gives 255, NaN gives 0.
 */
export function quantizeDynamic8(x: number, map: Float32Array): number {
  let p = 127;
  for (let step = 64; step > 0; step >>= 1) p += x > map[p] ? step : -step;
  if (x > map[p]) {
    const mid = Math.fround(map[p] + map[p + 1]) * 0.5;
    return x > mid ? p + 1 : p;
  }
  if (p === 0) return 0;
  const mid = Math.fround(map[p - 1] + map[p]) * 0.5;
  return x < mid ? p - 1 : p;
}
