/**
 * safetensors dtypes and float conversions (f32 <-> bf16/f16, round-to-nearest-even).
 * All multi-byte data is little-endian, as in safetensors; the host must be little-endian too.
 */
import { invalidArgument } from "../util/errors.ts";

/** safetensors dtype names this project reads and writes. */
export type Dtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

const DTYPE_SIZES: Record<Dtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

export const DTYPES: readonly Dtype[] = Object.keys(DTYPE_SIZES) as Dtype[];

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("qlorad needs a little-endian host (safetensors data is little-endian)");
}

export function isDtype(s: unknown): s is Dtype {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZES, s);
}

/** Bytes per element. */
export function dtypeSize(dtype: Dtype): number {
  const size = DTYPE_SIZES[dtype];
  if (size === undefined) throw invalidArgument(`unknown dtype ${JSON.stringify(dtype)}`);
  return size;
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes needed for a tensor of this dtype and shape. */
export function byteLengthOf(dtype: Dtype, shape: readonly number[]): number {
  return numel(shape) * dtypeSize(dtype);
}

// One shared scratch word for scalar bit casts.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Bits of Math.fround(x) as an unsigned 32-bit integer. */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0];
}

/** The float32 whose bits are `bits`. */
export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0];
}

function bf16FromF32Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) {
    // NaN: keep sign and top payload bits, force quiet so it cannot become infinity.
    return ((u >>> 16) | 0x0040) & 0xffff;
  }
  // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit.
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 -> bfloat16 bits, round-to-nearest-even; NaN stays NaN; overflow goes to infinity. */
export function f32ToBf16(x: number): number {
  return bf16FromF32Bits(f32Bits(x));
}

/** bfloat16 bits -> value. */
export function bf16ToF32(bits: number): number {
  return f32FromBits((bits & 0xffff) << 16);
}

function f16FromF32Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) {
    // Inf stays inf; NaN becomes a quiet NaN with the top payload bits.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15; // biased f16 exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal f16 (or zero): value / 2^-24 = (1.mant * 2^(exp-127)) / 2^-24.
    if (e < -10) return sign; // below half the smallest subnormal (ties go to 0, even)
    const m = mant | 0x800000;
    const shift = 14 - e; // 14..24
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half; // a carry into 0x400 is the smallest normal, correctly encoded
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // carry may reach inf
  return sign | half;
}

/** float32 -> IEEE half bits, round-to-nearest-even, subnormals kept, overflow to infinity. */
export function f32ToF16(x: number): number {
  return f16FromF32Bits(f32Bits(x));
}

/** IEEE half bits -> value. */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** FP8 E4M3 (fn variant: no infinities, 0x7f/0xff are NaN) bits -> value. */
export function f8e4m3ToF32(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >>> 3) & 0xf;
  const mant = bits & 0x7;
  if (exp === 15 && mant === 7) return NaN;
  if (exp === 0) return sign * mant * 2 ** -9;
  return sign * (1 + mant / 8) * 2 ** (exp - 7);
}

/** FP8 E5M2 bits -> value (IEEE-like, with infinities and NaN). */
export function f8e5m2ToF32(bits: number): number {
  return f16ToF32((bits & 0xff) << 8);
}

/** Float32Array -> bfloat16 bits, elementwise. */
export function f32ArrayToBf16(values: Float32Array): Uint16Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) out[i] = bf16FromF32Bits(u[i]);
  return out;
}

/** bfloat16 bits -> Float32Array. */
export function bf16ArrayToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
  return out;
}

/** Float32Array -> IEEE half bits, elementwise. */
export function f32ArrayToF16(values: Float32Array): Uint16Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) out[i] = f16FromF32Bits(u[i]);
  return out;
}

// All 65536 halves decoded once (256 KiB): decoding is then a table lookup.
let f16Table: Float32Array | undefined;
function halfTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
  }
  return f16Table;
}

/** IEEE half bits -> Float32Array. */
export function f16ArrayToF32(bits: Uint16Array): Float32Array {
  const table = halfTable();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

/** The bytes of a typed array (a view, no copy). */
export function asBytes(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function checkLength(bytes: Uint8Array, dtype: Dtype): number {
  const size = dtypeSize(dtype);
  if (bytes.byteLength % size !== 0) {
    throw invalidArgument(
      `${bytes.byteLength} bytes is not a whole number of ${dtype} elements (${size} bytes each)`,
    );
  }
  return bytes.byteLength / size;
}

/** A typed view over `bytes` with element size `size`, copying only when misaligned. */
function aligned(bytes: Uint8Array, size: number): ArrayBuffer {
  if (bytes.byteOffset % size === 0 && bytes.buffer instanceof ArrayBuffer) {
    return bytes.buffer;
  }
  return bytes.slice().buffer;
}

function view<T>(
  bytes: Uint8Array,
  size: number,
  make: (buf: ArrayBuffer, off: number, len: number) => T,
): T {
  const buf = aligned(bytes, size);
  const off = buf === bytes.buffer ? bytes.byteOffset : 0;
  return make(buf, off, bytes.byteLength / size);
}

/** Decode little-endian `bytes` of `dtype` into a new Float32Array (integers converted). */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const n = checkLength(bytes, dtype);
  switch (dtype) {
    case "F32": {
      const out = new Float32Array(n);
      asBytes(out).set(bytes);
      return out;
    }
    case "BF16":
      return bf16ArrayToF32(view(bytes, 2, (b, o, l) => new Uint16Array(b, o, l)));
    case "F16":
      return f16ArrayToF32(view(bytes, 2, (b, o, l) => new Uint16Array(b, o, l)));
    default:
      return Float32Array.from(toFloat64(bytes, dtype));
  }
}

/** Decode little-endian `bytes` of `dtype` into a new Float64Array (64-bit ints may round). */
export function toFloat64(bytes: Uint8Array, dtype: Dtype): Float64Array {
  const n = checkLength(bytes, dtype);
  const out = new Float64Array(n);
  switch (dtype) {
    case "F64":
      asBytes(out).set(bytes);
      return out;
    case "F32":
      out.set(view(bytes, 4, (b, o, l) => new Float32Array(b, o, l)));
      return out;
    case "BF16":
    case "F16":
      out.set(toFloat32(bytes, dtype));
      return out;
    case "F8_E4M3":
      for (let i = 0; i < n; i++) out[i] = f8e4m3ToF32(bytes[i]);
      return out;
    case "F8_E5M2":
      for (let i = 0; i < n; i++) out[i] = f8e5m2ToF32(bytes[i]);
      return out;
    case "I64": {
      const v = view(bytes, 8, (b, o, l) => new BigInt64Array(b, o, l));
      for (let i = 0; i < n; i++) out[i] = Number(v[i]);
      return out;
    }
    case "U64": {
      const v = view(bytes, 8, (b, o, l) => new BigUint64Array(b, o, l));
      for (let i = 0; i < n; i++) out[i] = Number(v[i]);
      return out;
    }
    case "I32":
      out.set(view(bytes, 4, (b, o, l) => new Int32Array(b, o, l)));
      return out;
    case "U32":
      out.set(view(bytes, 4, (b, o, l) => new Uint32Array(b, o, l)));
      return out;
    case "I16":
      out.set(view(bytes, 2, (b, o, l) => new Int16Array(b, o, l)));
      return out;
    case "U16":
      out.set(view(bytes, 2, (b, o, l) => new Uint16Array(b, o, l)));
      return out;
    case "I8":
      out.set(new Int8Array(bytes.buffer, bytes.byteOffset, n));
      return out;
    case "U8":
      out.set(bytes);
      return out;
    case "BOOL":
      for (let i = 0; i < n; i++) out[i] = bytes[i] !== 0 ? 1 : 0;
      return out;
  }
}

function checkInteger(x: number, lo: number, hi: number, dtype: Dtype, i: number): number {
  if (!Number.isInteger(x) || x < lo || x > hi) {
    throw invalidArgument(`element ${i} = ${x} is not representable as ${dtype}`);
  }
  return x;
}

/**
 * Encode numbers as little-endian bytes of `dtype`: floats round to nearest even;
 * integer dtypes require integral in-range values (BOOL: 0 or 1). FP8 is read-only here.
 */
export function fromFloat(values: ArrayLike<number>, dtype: Dtype): Uint8Array {
  const n = values.length;
  switch (dtype) {
    case "F64":
      return asBytes(Float64Array.from(values));
    case "F32":
      return asBytes(values instanceof Float32Array ? values.slice() : Float32Array.from(values));
    case "BF16":
      return asBytes(
        f32ArrayToBf16(values instanceof Float32Array ? values : Float32Array.from(values)),
      );
    case "F16":
      return asBytes(
        f32ArrayToF16(values instanceof Float32Array ? values : Float32Array.from(values)),
      );
    // Bounds below are the largest doubles under 2^63 and 2^64.
    case "I64": {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        out[i] = BigInt(checkInteger(values[i], -(2 ** 63), 2 ** 63 - 1024, dtype, i));
      }
      return asBytes(out);
    }
    case "U64": {
      const out = new BigUint64Array(n);
      for (let i = 0; i < n; i++) {
        out[i] = BigInt(checkInteger(values[i], 0, 2 ** 64 - 2048, dtype, i));
      }
      return asBytes(out);
    }
    case "I32":
    case "U32":
    case "I16":
    case "U16":
    case "I8":
    case "U8":
    case "BOOL": {
      const [Ctor, lo, hi] = {
        I32: [Int32Array, -(2 ** 31), 2 ** 31 - 1],
        U32: [Uint32Array, 0, 2 ** 32 - 1],
        I16: [Int16Array, -(2 ** 15), 2 ** 15 - 1],
        U16: [Uint16Array, 0, 2 ** 16 - 1],
        I8: [Int8Array, -128, 127],
        U8: [Uint8Array, 0, 255],
        BOOL: [Uint8Array, 0, 1],
      }[dtype] as [
        new (n: number) => Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array,
        number,
        number,
      ];
      const out = new Ctor(n);
      for (let i = 0; i < n; i++) out[i] = checkInteger(values[i], lo, hi, dtype, i);
      return asBytes(out);
    }
    case "F8_E4M3":
    case "F8_E5M2":
      throw invalidArgument(`encoding ${dtype} is not supported`);
  }
}
