/**
 * Double quantization of the 4-bit absmax statistics (bitsandbytes `quantize_4bit(...,
 * compress_statistics=True)`, functional.py):
 *
 *   offset = absmax.mean()                                   (float32)
 *   codes, nested_absmax = quantize_blockwise(absmax - offset, blocksize=256)   (dynamic map)
 *   absmax' = code8[codes] * nested_absmax[i / 256] + offset  (float32, dequantize_blockwise)
 *
 * The 8-bit step follows csrc/kernels.cu::kQuantizeBlockwise<General8bit>: per block of 256,
 * nested_absmax = max |v|, scale = float32(1 / nested_absmax), x = float32(v * scale), code =
 * dQuantize(x) (see codes.ts::quantizeDynamic8).
 *
 * offset: torch takes the float32 mean with its own reduction order (a float32 tree on CUDA), which
 * cannot be reproduced bit for bit. We sum in float64 in index order and round the mean once to
 * float32, which is the float32 mean up to the last ulp; the offset is stored in the checkpoint
 * (nested_offset), so readers never recompute it.
 *
 * A nested block whose values are all 0 (e.g. every absmax equal, or a single 4-bit block) gets
 * nested absmax 0 and scale 0, so its codes are 127 (the map's 0.0). CUDA gets NaN there and
 * code 0; both dequantize to exactly `offset`.
 */

import { invalidArgument } from "../util/errors.ts";
import { quantizeDynamic8, signedDynamicMap } from "./codes.ts";

export const NESTED_BLOCKSIZE = 256;

export interface DoubleQuantized {
  /** One 8-bit dynamic-map code per 4-bit block. */
  codes: Uint8Array;
  /** One float32 absmax per 256 codes. */
  nestedAbsmax: Float32Array;
  /** float32 mean of the original absmax, added back on dequantization. */
  offset: number;
}

/** Blockwise 8-bit quantization with a sorted 256-entry map (bnb quantize_blockwise). */
export function quantizeBlockwise8(
  values: Float32Array,
  map: Float32Array,
  blocksize: number,
): { codes: Uint8Array; absmax: Float32Array } {
  const n = values.length;
  const nblocks = Math.ceil(n / blocksize);
  const codes = new Uint8Array(n);
  const absmax = new Float32Array(nblocks);
  for (let b = 0; b < nblocks; b++) {
    const start = b * blocksize;
    const end = Math.min(start + blocksize, n);
    let m = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(values[i]);
      if (a > m) m = a;
    }
    absmax[b] = m;
    const scale = m === 0 ? 0 : Math.fround(1 / m);
    for (let i = start; i < end; i++) {
      codes[i] = quantizeDynamic8(Math.fround(values[i] * scale), map);
    }
  }
  return { codes, absmax };
}

/** Double-quantize 4-bit absmax values (nested blocksize 256, signed dynamic map). */
export function doubleQuantize(absmax: Float32Array): DoubleQuantized {
  const n = absmax.length;
  if (n === 0) throw invalidArgument("absmax: cannot double-quantize an empty absmax");
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = absmax[i];
    if (!(v >= 0 && v <= 3.4028234663852886e38)) {
      throw invalidArgument(`absmax: entry ${i} is ${v}; expected a finite value >= 0`);
    }
    sum += v;
  }
  const offset = Math.fround(sum / n);
  const centered = new Float32Array(n);
  for (let i = 0; i < n; i++) centered[i] = absmax[i] - offset;
  const { codes, absmax: nestedAbsmax } = quantizeBlockwise8(
    centered,
    signedDynamicMap(),
    NESTED_BLOCKSIZE,
  );
  return { codes, nestedAbsmax, offset };
}

/**
 * Reconstruct the absmax values: `fround(fround(map[code] * nestedAbsmax[i / 256]) + offset)`.
 * `nestedMap` defaults to the signed dynamic map; pass the stored nested_quant_map when loading.
 */
export function dequantizeAbsmax(dq: {
  codes: Uint8Array;
  nestedAbsmax: Float32Array;
  offset: number;
  nestedMap?: Float32Array;
}): Float32Array {
  const { codes, nestedAbsmax } = dq;
  const map = dq.nestedMap ?? signedDynamicMap();
  if (map.length !== 256) {
    throw invalidArgument(`nested_quant_map: ${map.length} entries, expected 256`);
  }
  const nblocks = Math.ceil(codes.length / NESTED_BLOCKSIZE);
  if (nestedAbsmax.length !== nblocks) {
    throw invalidArgument(
      `nested_absmax: ${nestedAbsmax.length} entries, expected ${nblocks} for ${codes.length} codes`,
    );
  }
  const offset = Math.fround(dq.offset);
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) {
    out[i] = Math.fround(map[codes[i]] * nestedAbsmax[i >> 8]) + offset;
  }
  return out;
}
