/**
 * The 4-bit code tables (NF4, FP4) and the signed 8-bit dynamic map of bitsandbytes, with the
 * per-value quantizers that pick a code exactly as bitsandbytes' CUDA kernels do.
 *
 * Every input `x` is expected to be a float32 value (a JS number that `Math.fround` leaves
 * unchanged); comparing such a number with a float32 constant in double precision is the same
 * comparison the kernel makes in float32.
 *
 * Sources (bitsandbytes-foundation/bitsandbytes):
 * - `bitsandbytes/functional.py::get_4bit_type`: the NF4 list (16 doubles stored as float32) and
 *   the FP4 list `[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...]` divided by its absmax 12 in float32.
 *   The `-0` there is a Python int, so code 8 of the stored FP4 map is +0.0.
 * - `csrc/kernels.cu::dQuantizeNF4`: a comparison tree `x > t` on float32 literals; each literal is
 *   exactly the float32 midpoint `fround((a + b) / 2)` of adjacent NF4 values (checked in tests),
 *   so a value exactly on a midpoint takes the lower code.
 * - `csrc/kernels.cu::dQuantizeFP4`: sign bit 8 when `x < 0` (so -0.0 gets no sign), then a tree
 *   on |x| with the decimal literals 0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667,
 *   0.583333, 0.8333333. Five of these are NOT the float32 midpoints of the FP4 magnitudes (the
 *   default/CPU backend buckets against the true midpoints instead); we follow CUDA.
 * - `csrc/kernels.cu::dDequantizeFP4Tree`: `lut[c & 7] * (1 - 2 * (c >> 3))`, so code 8 dequantizes
 *   to -0.0 on CUDA while the stored quant_map has +0.0.
 * - `bitsandbytes/functional.py::create_dynamic_map` and `csrc/kernels.cu::dQuantize` for the
 *   8-bit map (see below).
 */

export type QuantType = "nf4" | "fp4";

/** NF4 values (REFERENCE §1 / get_4bit_type("nf4")), rounded to float32. Index = code. */
export const NF4_CODE: Float32Array = Float32Array.from([
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
]);

/** FP4 quant_map as get_4bit_type("fp4") stores it: raw values / 12 in float32; code 8 is +0. */
export const FP4_CODE: Float32Array = Float32Array.from(
  [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => v / 12),
);

/** NF4 decision thresholds: float32 midpoints of adjacent codes (equal to kernels.cu literals). */
export const NF4_THRESHOLDS: Float32Array = Float32Array.from(
  { length: 15 },
  (_, k) => Math.fround(NF4_CODE[k] + NF4_CODE[k + 1]) / 2,
);

/**
 * FP4 magnitude thresholds of dQuantizeFP4, as float32. Threshold k separates magnitude rank k
 * from rank k + 1 (ranks sorted by value; see FP4_RANK_TO_BITS).
 */
export const FP4_THRESHOLDS: Float32Array = Float32Array.from([
  0.00260417,
  0.0859375,
  0.20833333,
  0.29166667,
  0.4166667,
  0.583333,
  0.8333333,
]);

/** The 3 magnitude bits of FP4 for magnitudes in ascending order: 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1. */
const FP4_RANK_TO_BITS = Uint8Array.from([0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011]);

/** Dequantization tables as the CUDA kernels read them (FP4 code 8 is -0.0 there). */
export const NF4_DEQUANT: Float32Array = NF4_CODE.slice();
export const FP4_DEQUANT: Float32Array = Float32Array.from(
  { length: 16 },
  (_, c) => FP4_CODE[c & 7] * (c & 8 ? -1 : 1),
);

/** The stored 16-entry quant_map for a quant type. */
export function quantMapFor(quantType: QuantType): Float32Array {
  return quantType === "nf4" ? NF4_CODE.slice() : FP4_CODE.slice();
}

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
 * torch.linspace(start, end, steps, dtype=float32) on the CPU. torch computes in float32
 * `start + step * i` for the first half and `end - step * (steps - 1 - i)` for the second half,
 * with `step = (end - start) / (steps - 1)`. On x86-64 (AVX2/AVX-512 kernels) and arm64 builds
 * the compiler fuses this into one FMA, so each entry is rounded once: the map values torch
 * prints (e.g. the table hard-coded in mistral.rs' bitsandbytes port) match only the fused form.
 * Here the product (24-bit x small int) and the sum are exact in float64, so one fround is the FMA.
 */
function linspaceF32(start: number, end: number, steps: number): Float64Array {
  const s = Math.fround(start);
  const e = Math.fround(end);
  const step = Math.fround(Math.fround(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out = new Float64Array(steps);
  for (let i = 0; i < steps; i++) {
    out[i] = i < half ? Math.fround(s + step * i) : Math.fround(e - step * (steps - 1 - i));
  }
  return out;
}

let dynamicMapCache: Float32Array | undefined;

/**
 * The signed dynamic map `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`:
 * for i in 0..6, the float32 means of adjacent points of linspace(0.1, 1, 2^i + 1), scaled by
 * float32(10^(i-6)) (positive and negative), plus 0 and 1, sorted. 254 + 2 = 256 entries, no
 * padding. Entry 0 = -0.99296874, 127 = 0, 254 = 0.99296874, 255 = 1. Returns a fresh copy.
 */
export function signedDynamicMap(): Float32Array {
  if (dynamicMapCache === undefined) {
    // Literals rather than 10 ** k: V8's pow is not guaranteed correctly rounded.
    const scales = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
    const data: number[] = [];
    for (let i = 0; i < 7; i++) {
      const b = linspaceF32(0.1, 1, 2 ** i + 1);
      const scale = Math.fround(scales[i]);
      for (let j = 0; j + 1 < b.length; j++) {
        const mean = Math.fround(b[j] + b[j + 1]) / 2;
        const v = Math.fround(scale * mean);
        data.push(v, -v);
      }
    }
    data.push(0, 1);
    dynamicMapCache = Float32Array.from(data).sort();
  }
  return dynamicMapCache.slice();
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
