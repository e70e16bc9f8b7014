/**
 * Blockwise 4-bit quantization (bitsandbytes `quantize_4bit` / `dequantize_4bit`), CUDA semantics
 * (csrc/kernels.cu::kQuantizeBlockwise, kQuantizeBlockwiseSmall, kDequantizeBlockwise):
 *
 * - The flattened weight is cut into blocks of `blocksize`; the last block may be partial and has
 *   its own absmax. `absmax = max |x|` over the block's real elements, float32.
 * - Scaling multiplies by the float32 reciprocal: `fround(x * fround(1 / absmax))`. (The default
 *   backend divides for a partial last block; CUDA multiplies everywhere. CUDA is built with
 *   --use_fast_math, so its reciprocal is the hardware approximation, which can differ by an ulp;
 *   we use the IEEE float32 reciprocal, as the default backend does for full blocks.)
 * - Packing: element 2j goes to the high nibble of byte j, element 2j+1 to the low nibble.
 *   For odd n the last low nibble is the code of the value 0.0 (NF4 7, FP4 0): the CUDA kernel
 *   loads 0.0 for items past n and quantizes them with the block's scale, and the default backend
 *   pads the scaled vector with 0 before bucketing.
 * - All-zero block (our choice, documented per REFERENCE §3): absmax is stored as 0 and the scale
 *   taken as 0, so every element becomes the code of 0.0 (NF4 7, FP4 0), which dequantizes to
 *   exactly 0 whatever absmax is reconstructed to. CUDA computes 1/0 = inf and 0 * inf = NaN,
 *   which falls to code 0 (NF4 -1.0): harmless with a stored absmax of 0, but with double
 *   quantization the reconstructed absmax is not 0 and that block would come back as -absmax'.
 *   The CPU backend also gives code 7 (it clamps absmax to 1e-38 for the scale).
 * - Denormals are not flushed (CUDA's fast-math flushes them); non-finite weights are rejected.
 */

import { invalidArgument } from "../util/errors.ts";
import { FP4_DEQUANT, NF4_DEQUANT, quantizeFp4, quantizeNf4, type QuantType } from "./codes.ts";

export const ALLOWED_BLOCKSIZES: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/** Throws invalidArgument unless blocksize is one of 32..4096 (powers of two). */
export function validateBlocksize(blocksize: number, what = "blocksize"): void {
  if (!ALLOWED_BLOCKSIZES.includes(blocksize)) {
    throw invalidArgument(
      `${what}: ${blocksize} is not allowed; use one of ${ALLOWED_BLOCKSIZES.join(", ")}`,
    );
  }
}

export function validateQuantType(
  quantType: string,
  what = "quant_type",
): asserts quantType is QuantType {
  if (quantType !== "nf4" && quantType !== "fp4") {
    throw invalidArgument(`${what}: "${quantType}" is not a 4-bit type; use "nf4" or "fp4"`);
  }
}

export interface Quantized4bit {
  /** ceil(n / 2) bytes, element 2j in the high nibble of byte j. */
  packed: Uint8Array;
  /** One float32 absmax per block (ceil(n / blocksize)). */
  absmax: Float32Array;
}

/** Quantize a flattened weight to packed 4-bit codes and per-block absmax. */
export function quantize4bit(
  w: Float32Array,
  quantType: QuantType,
  blocksize: number,
): Quantized4bit {
  validateQuantType(quantType);
  validateBlocksize(blocksize);
  const n = w.length;
  if (n === 0) throw invalidArgument("weight: cannot quantize an empty tensor");
  const nblocks = Math.ceil(n / blocksize);
  const packed = new Uint8Array((n + 1) >> 1);
  const absmax = new Float32Array(nblocks);
  const quantize = quantType === "nf4" ? quantizeNf4 : quantizeFp4;

  for (let b = 0; b < nblocks; b++) {
    const start = b * blocksize;
    const end = Math.min(start + blocksize, n);
    let m = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(w[i]);
      if (!(a <= 3.4028234663852886e38)) {
        throw invalidArgument(
          `weight: element ${i} is ${w[i]}; only finite values can be quantized`,
        );
      }
      if (a > m) m = a;
    }
    absmax[b] = m;
    const scale = m === 0 ? 0 : Math.fround(1 / m);
    // blocksize is even, so a block starts on a byte boundary.
    for (let i = start; i + 1 < end; i += 2) {
      const hi = quantize(Math.fround(w[i] * scale));
      const lo = quantize(Math.fround(w[i + 1] * scale));
      packed[i >> 1] = (hi << 4) | lo;
    }
    if ((end - start) & 1) {
      // Only the last block can be odd-sized: the pad nibble is the code of 0.0.
      const i = end - 1;
      packed[i >> 1] = (quantize(Math.fround(w[i] * scale)) << 4) | quantize(0);
    }
  }
  return { packed, absmax };
}

/** Dequantize packed 4-bit codes: `w[i] = table[code] * absmax[i / blocksize]` in float32. */
export function dequantize4bit(
  packed: Uint8Array,
  absmax: Float32Array,
  n: number,
  quantType: QuantType,
  blocksize: number,
): Float32Array {
  validateQuantType(quantType);
  validateBlocksize(blocksize);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw invalidArgument(`n: ${n} is not a positive element count`);
  }
  if (packed.length !== (n + 1) >> 1) {
    throw invalidArgument(
      `packed: ${packed.length} bytes, expected ${(n + 1) >> 1} for ${n} values`,
    );
  }
  const nblocks = Math.ceil(n / blocksize);
  if (absmax.length !== nblocks) {
    throw invalidArgument(
      `absmax: ${absmax.length} entries, expected ${nblocks} for ${n} values in blocks of ${blocksize}`,
    );
  }
  const table = quantType === "nf4" ? NF4_DEQUANT : FP4_DEQUANT;
  const out = new Float32Array(n);
  for (let b = 0; b < nblocks; b++) {
    const start = b * blocksize;
    const end = Math.min(start + blocksize, n);
    const m = absmax[b];
    for (let i = start; i + 1 < end; i += 2) {
      const byte = packed[i >> 1];
      out[i] = table[byte >> 4] * m;
      out[i + 1] = table[byte & 15] * m;
    }
    if ((end - start) & 1) out[end - 1] = table[packed[(end - 1) >> 1] >> 4] * m;
  }
  return out;
}
