/**
 * CPU encoders of the ggml tensor types the GGUF export writes: F32, F16, Q8_0 and Q4_0, bit for
 * bit as llama.cpp's reference quantizers make them (ggml/src/ggml-quants.c quantize_row_q8_0_ref
 * and quantize_row_q4_0_ref, and gguf-py quants.py, which agree), so an exported file equals what
 * llama.cpp's own tools would write from the same float32 weights. Every step is done in float32
 * (Math.fround) as the C code does; the block scale is stored as IEEE half, rounded to nearest
 * even.
 *
 * Block layouts (ggml-common.h), 32 values per block, blocks in row-major order:
 *   Q8_0: f16 d, then 32 int8 q;          value = d * q, d = amax / 127, q = roundf(x / d)
 *         (roundf: halves away from zero).
 *   Q4_0: f16 d, then 16 bytes of codes;  value = d * (q - 8); d = m / -8 where m is the value
 *         of largest magnitude (sign kept, the first one on ties), so m itself maps to code 0;
 *         q = min(15, trunc(x / d + 8.5)); byte j holds value j in its low nibble and value
 *         j + 16 in its high nibble.
 */
import { f32ToF16, fromFloat } from "../io/dtype.ts";
import type { GgmlTypeName } from "./gguf_writer.ts";
import { invalidArgument } from "../util/errors.ts";

const QK = 32;
const fr = Math.fround;

/** C roundf: to nearest, halves away from zero (v is a float32 value, so |v| + 0.5 is exact). */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function checkBlocks(values: ArrayLike<number>, type: string) {
  if (values.length % QK !== 0) {
    throw invalidArgument(`${type}: ${values.length} values are not whole blocks of ${QK}`);
  }
}

// F32 and F16 are dtype.ts's encoders (F16: the value rounded to float32, then to half, nearest
// even), the same bytes ggml's fp32->fp16 conversion gives.
export function encodeF32(values: ArrayLike<number>): Uint8Array {
  return fromFloat(values, "F32");
}

export function encodeF16(values: ArrayLike<number>): Uint8Array {
  return fromFloat(values, "F16");
}

export function encodeQ8_0(values: ArrayLike<number>): Uint8Array {
  checkBlocks(values, "Q8_0");
  const blocks = values.length / QK;
  const out = new Uint8Array(blocks * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const base = b * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(fr(values[base + j])));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < QK; j++) {
      view.setInt8(b * 34 + 2 + j, roundf(fr(fr(values[base + j]) * id)));
    }
  }
  return out;
}

export function encodeQ4_0(values: ArrayLike<number>): Uint8Array {
  checkBlocks(values, "Q4_0");
  const blocks = values.length / QK;
  const out = new Uint8Array(blocks * 18);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const base = b * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = fr(values[base + j]);
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    view.setUint16(b * 18, f32ToF16(d), true);
    const code = (x: number) => Math.min(15, Math.trunc(fr(fr(fr(x) * id) + 8.5)));
    for (let j = 0; j < QK / 2; j++) {
      out[b * 18 + 2 + j] = code(values[base + j]) | (code(values[base + j + QK / 2]) << 4);
    }
  }
  return out;
}

/** The bytes of `values` (row-major, float) as a tensor of this ggml type. */
export function encodeGgml(type: GgmlTypeName, values: ArrayLike<number>): Uint8Array {
  switch (type) {
    case "F32":
      return encodeF32(values);
    case "F16":
      return encodeF16(values);
    case "Q8_0":
      return encodeQ8_0(values);
    case "Q4_0":
      return encodeQ4_0(values);
  }
}
