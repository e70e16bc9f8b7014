/**
 * The code tables of bitsandbytes' 4-bit (NF4, FP4) and 8-bit dynamic formats: the quant_map
 * values a checkpoint stores, the decision thresholds the quantize kernels compare against and
 * the dequantization tables. They are number formats (like dtype.ts's bf16 and f16), so they sit
 * in io, below the kernels and the quantizers that both read them; the per-value quantizers are
 * src/quant/codes.ts.
 *
 * Sources (bitsandbytes-foundation/bitsandbytes):
 * - `bitsandbytes/functional.py::get_4bit_type`: the NF4 list (16 doubles stored as float32) and
 *   the FP4 list `[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...]` divided by its absmax 12 in float32.
 *   The `-0` there is a Python int, so code 8 of the stored FP4 map is +0.0.
 * - `csrc/kernels.cu::dQuantizeNF4`: each float32 literal of its comparison tree is exactly the
 *   float32 midpoint `fround((a + b) / 2)` of adjacent NF4 values (checked in tests).
 * - `csrc/kernels.cu::dQuantizeFP4`: the decimal literals 0.00260417, 0.0859375, 0.20833333,
 *   0.29166667, 0.4166667, 0.583333, 0.8333333 on |x|. Five of these are NOT the float32 midpoints
 *   of the FP4 magnitudes (the default/CPU backend buckets against the true midpoints instead); we
 *   follow CUDA.
 * - `csrc/kernels.cu::dDequantizeFP4Tree`: `lut[c & 7] * (1 - 2 * (c >> 3))`, so code 8 dequantizes
 *   to -0.0 on CUDA while the stored quant_map has +0.0.
 * - `bitsandbytes/functional.py::create_dynamic_map` for the 8-bit map (see below).
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
 * from rank k + 1 (ranks sorted by value; src/quant/codes.ts maps ranks to code bits).
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
