/**
 * Rounding to bfloat16 and IEEE half in float64 arithmetic (powers of two and round-half-even on
 * the scaled value), independent of src/io/dtype.ts's bit manipulation, so a test of the 16-bit
 * tables checks the conversion as well as the kernels.
 */

/** x rounded to `mantissaBits` fraction bits, exponent at least `minExp` (subnormals), ties even. */
function roundToFloat(x: number, mantissaBits: number, minExp: number, maxFinite: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  // log2 may land one off near powers of two.
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, minExp) - mantissaBits);
  const q = a / ulp; // exact: a power-of-two scaling
  let n = Math.floor(q);
  const rest = q - n;
  if (rest > 0.5 || (rest === 0.5 && n % 2 === 1)) n++;
  const r = n * ulp;
  // Overflow: past the largest finite value by half an ulp or more goes to infinity.
  const out = r > maxFinite ? Infinity : r;
  return x < 0 ? -out : out;
}

const BF16_MAX = (2 - 2 ** -7) * 2 ** 127;
const F16_MAX = 65504;

/** bfloat16: 8 significant bits, the float32 exponent range. */
export function roundBf16(x: number): number {
  return roundToFloat(x, 7, -126, BF16_MAX);
}

/** IEEE half: 11 significant bits, exponents -14..15, subnormals down to 2^-24. */
export function roundF16(x: number): number {
  return roundToFloat(x, 10, -14, F16_MAX);
}

export function roundBf16Array(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values, roundBf16);
}

export function roundF16Array(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values, roundF16);
}
