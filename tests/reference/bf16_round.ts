/**
 * bfloat16 rounding for tests, written apart from src/io/dtype.ts and shaders/bf16.wgsl: the
 * f32 bits are split into the kept top half and the dropped low half, and the low half is
 * compared with the halfway point (0x8000) explicitly, ties going to the even top half. A carry
 * out of the significand moves into the exponent (and from the largest finite values into
 * infinity), as IEEE rounding does. NaN keeps its sign and top payload with the quiet bit set.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The bf16 bits (16-bit integer) nearest to the float32 value of x, ties to even. */
export function bf16BitsOf(x: number): number {
  f32[0] = x;
  return bf16BitsOfF32Bits(u32[0]);
}

/** As bf16BitsOf, from the float32 bit pattern (keeps NaN payloads the Number would lose). */
export function bf16BitsOfF32Bits(bits: number): number {
  const b = bits >>> 0;
  const exponent = (b >>> 23) & 0xff;
  const mantissa = b & 0x7fffff;
  if (exponent === 0xff && mantissa !== 0) return ((b >>> 16) | 0x0040) & 0xffff;
  const top = b >>> 16;
  const low = b & 0xffff;
  const roundUp = low > 0x8000 || (low === 0x8000 && (top & 1) === 1);
  return (roundUp ? top + 1 : top) & 0xffff;
}

/** The value of bf16 bits: the f32 with those bits on top and zeros below. */
export function bf16Value(bits: number): number {
  u32[0] = (bits & 0xffff) * 65536;
  return f32[0];
}

/** Every value of `x` rounded to bf16 (the parameters a bf16 compute copy holds). */
export function roundArrayToBf16(x: Float32Array): Float32Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = bf16Value(bf16BitsOfF32Bits(bits[i]));
  return out;
}
