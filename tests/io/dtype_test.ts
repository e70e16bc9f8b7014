import assert from "node:assert/strict";
import {
  bf16ArrayToF32,
  bf16ToF32,
  DTYPES,
  dtypeSize,
  f16ArrayToF32,
  f16ToF32,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32Bits,
  f32FromBits,
  f32ToBf16,
  f32ToF16,
  f8e4m3ToF32,
  f8e5m2ToF32,
  fromFloat,
  toFloat32,
  toFloat64,
} from "../../src/io/dtype.ts";
import { Rng } from "../../src/util/random.ts";

const hex = (n: number) => "0x" + n.toString(16).padStart(4, "0");

Deno.test("bf16: hand-computed bit patterns", () => {
  const cases: [number, number][] = [
    [0x3f800000, 0x3f80], // 1.0
    [0xc0000000, 0xc000], // -2.0
    [0x00000000, 0x0000],
    [0x80000000, 0x8000], // -0
    [0x7f800000, 0x7f80], // inf
    [0xff800000, 0xff80], // -inf
    [0x40490fdb, 0x4049], // pi rounds down
    [0x3f808000, 0x3f80], // tie, keep even 0x3f80
    [0x3f818000, 0x3f82], // tie, 0x3f81 is odd -> up
    [0x3f808001, 0x3f81], // just above the tie
    [0x3f807fff, 0x3f80], // just below the tie
    [0x7f7fffff, 0x7f80], // max f32 rounds to inf
    [0x7f7f7fff, 0x7f7f], // largest that stays finite
    [0x00000001, 0x0000], // f32 subnormal underflows
    [0x00008000, 0x0000], // subnormal tie to even
    [0x00018000, 0x0002], // subnormal tie, odd -> up
    [0x807fffff, 0x8080], // largest negative subnormal rounds to -min normal
  ];
  for (const [inBits, outBits] of cases) {
    assert.equal(hex(f32ToBf16(f32FromBits(inBits))), hex(outBits), `input ${inBits.toString(16)}`);
  }
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(bf16ToF32(0xc049), -3.140625);
  assert.ok(Object.is(bf16ToF32(0x8000), -0));
});

Deno.test("bf16: NaN stays NaN, even with only low payload bits", () => {
  for (const bits of [0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0x7f80ffff]) {
    const h = f32ToBf16(f32FromBits(bits));
    assert.ok(Number.isNaN(bf16ToF32(h)), `${bits.toString(16)} -> ${hex(h)}`);
    assert.equal(h >>> 15, bits >>> 31, "sign kept");
  }
});

Deno.test("f16: hand-computed bit patterns", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2, 0xc000],
    [0, 0x0000],
    [-0, 0x8000],
    [0.5, 0x3800],
    [0.1, 0x2e66],
    [1 / 3, 0x3555],
    [65504, 0x7bff], // max half
    [65519, 0x7bff], // below the halfway point to 65536
    [65520, 0x7c00], // tie between 65504 (odd mantissa) and 65536 -> inf
    [1e6, 0x7c00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 -> 0 (even)
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 ulps -> 2 (even)
    [5 * 2 ** -25, 0x0002], // tie between 2 and 3 ulps -> 2 (even)
    [1023.5 * 2 ** -24, 0x0400], // tie between largest subnormal and smallest normal
    [1 + 2 ** -11, 0x3c00], // tie, even
    [1 + 3 * 2 ** -11, 0x3c02], // tie, odd -> up
    [2 ** -26, 0x0000],
    [-(2 ** -24), 0x8001],
  ];
  for (const [x, bits] of cases) assert.equal(hex(f32ToF16(x)), hex(bits), `input ${x}`);
  // Just above half the smallest subnormal rounds up (needs f32 precision above 2^-25).
  assert.equal(f32ToF16(f32FromBits(0x33000001)), 0x0001);
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(f32FromBits(0x7f800001)))), "low-payload NaN");
  assert.equal(f16ToF32(0x3555), 0.333251953125);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x7bff), 65504);
});

Deno.test("bf16 and f16: every 16-bit pattern round-trips exactly", () => {
  for (let b = 0; b < 65536; b++) {
    const x = bf16ToF32(b);
    if (Number.isNaN(x)) continue;
    assert.equal(f32ToBf16(x), b);
  }
  for (let b = 0; b < 65536; b++) {
    const x = f16ToF32(b);
    if (Number.isNaN(x)) {
      assert.equal((b >>> 10) & 0x1f, 31);
      continue;
    }
    assert.equal(f32ToF16(x), b);
  }
});

/** Reference rounding in double arithmetic: nearest multiple of the target ulp, ties to even. */
function roundRef(x: number, mantBits: number, minExp: number, maxFinite: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, minExp) - mantBits);
  const q = a / ulp; // exact: a has at most 24 significant bits
  const lo = Math.floor(q);
  const frac = q - lo;
  const r = frac > 0.5 ? lo + 1 : frac < 0.5 ? lo : lo % 2 === 0 ? lo : lo + 1;
  const y = r * ulp;
  return Math.sign(x) * (y > maxFinite ? Infinity : y);
}

function randomF32(rng: Rng, minExp: number, maxExp: number): number {
  const exp = minExp + rng.int(maxExp - minExp + 1) + 127; // biased
  let mant = rng.int(1 << 23);
  // One in four: force an exact tie or a near-tie in the bits that get rounded off.
  const k = rng.int(8);
  if (k === 0) mant = (mant & ~0xffff) | 0x8000;
  if (k === 1) mant = (mant & ~0x1fff) | 0x1000;
  const sign = rng.int(2);
  return f32FromBits(((sign << 31) | (Math.max(exp, 0) << 23) | mant) >>> 0);
}

Deno.test("bf16: matches a double-precision reference on random values", () => {
  const rng = new Rng(11);
  const maxBf16 = bf16ToF32(0x7f7f);
  for (let i = 0; i < 50000; i++) {
    const x = randomF32(rng, -130, 127);
    const want = roundRef(x, 7, -126, maxBf16);
    const got = bf16ToF32(f32ToBf16(x));
    assert.ok(
      Object.is(got, want) || got === want,
      `${x} (${f32Bits(x).toString(16)}): ${got} vs ${want}`,
    );
  }
});

Deno.test("f16: matches a double-precision reference on random values", () => {
  const rng = new Rng(12);
  for (let i = 0; i < 50000; i++) {
    const x = randomF32(rng, -28, 17);
    const want = roundRef(x, 10, -14, 65504);
    const got = f16ToF32(f32ToF16(x));
    assert.ok(Object.is(got, want) || got === want, `${x}: ${got} vs ${want}`);
  }
});

Deno.test("f16: agrees with numpy when it is installed", async () => {
  const rng = new Rng(13);
  const xs = new Float32Array(4001);
  for (let i = 0; i < xs.length; i++) xs[i] = randomF32(rng, -28, 17);
  let out: Deno.CommandOutput;
  try {
    const cmd = new Deno.Command("python3", {
      args: [
        "-c",
        "import sys,numpy as np;a=np.frombuffer(sys.stdin.buffer.read(),dtype='<f4');" +
        "sys.stdout.buffer.write(a.astype('<f2').tobytes())",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    });
    const child = cmd.spawn();
    const w = child.stdin.getWriter();
    await w.write(new Uint8Array(xs.buffer));
    await w.close();
    out = await child.output();
  } catch {
    return; // no python3
  }
  if (!out.success) return; // no numpy
  const np = new Uint16Array(out.stdout.buffer, 0, xs.length);
  const ours = f32ArrayToF16(xs);
  for (let i = 0; i < xs.length; i++) assert.equal(hex(ours[i]), hex(np[i]), `x=${xs[i]}`);
});

Deno.test("array conversions equal the scalar ones", () => {
  const rng = new Rng(14);
  const xs = new Float32Array(1037);
  for (let i = 0; i < xs.length; i++) xs[i] = randomF32(rng, -30, 20);
  xs[5] = NaN;
  const b = f32ArrayToBf16(xs);
  const h = f32ArrayToF16(xs);
  const bb = bf16ArrayToF32(b);
  const hh = f16ArrayToF32(h);
  for (let i = 0; i < xs.length; i++) {
    assert.equal(b[i], f32ToBf16(xs[i]));
    assert.equal(h[i], f32ToF16(xs[i]));
    assert.ok(Object.is(bb[i], Math.fround(bf16ToF32(b[i]))));
    assert.ok(Object.is(hh[i], Math.fround(f16ToF32(h[i]))));
  }
});

Deno.test("fp8 decoding: hand-computed values", () => {
  assert.equal(f8e4m3ToF32(0x38), 1);
  assert.equal(f8e4m3ToF32(0x7e), 448);
  assert.equal(f8e4m3ToF32(0xc0), -2);
  assert.equal(f8e4m3ToF32(0x01), 2 ** -9);
  assert.ok(Number.isNaN(f8e4m3ToF32(0x7f)));
  assert.equal(f8e5m2ToF32(0x3c), 1);
  assert.equal(f8e5m2ToF32(0x7b), 57344);
  assert.equal(f8e5m2ToF32(0x7c), Infinity);
});

Deno.test("toFloat32/toFloat64 decode hand-built little-endian bytes", () => {
  const b = (...xs: number[]) => new Uint8Array(xs);
  assert.deepEqual([...toFloat64(b(0xff, 0x80, 0x7f), "I8")], [-1, -128, 127]);
  assert.deepEqual([...toFloat64(b(0xff, 0x00, 0x02), "U8")], [255, 0, 2]);
  assert.deepEqual([...toFloat64(b(0x00, 0x01, 0x02), "BOOL")], [0, 1, 1]);
  assert.deepEqual([...toFloat64(b(0x34, 0x12, 0xff, 0xff), "I16")], [0x1234, -1]);
  assert.deepEqual([...toFloat64(b(0xff, 0xff), "U16")], [65535]);
  assert.deepEqual([...toFloat64(b(0x78, 0x56, 0x34, 0x12), "I32")], [0x12345678]);
  assert.deepEqual([...toFloat64(b(0xfe, 0xff, 0xff, 0xff), "I32")], [-2]);
  assert.deepEqual([...toFloat64(b(0xfe, 0xff, 0xff, 0xff), "U32")], [0xfffffffe]);
  assert.deepEqual([...toFloat64(b(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), "I64")], [-2]);
  assert.deepEqual([...toFloat64(b(0, 0, 0, 0, 0, 0, 0x10, 0), "U64")], [2 ** 52]);
  assert.deepEqual([...toFloat32(b(0x00, 0x00, 0x80, 0x3f), "F32")], [1]);
  assert.deepEqual([...toFloat32(b(0x80, 0x3f, 0x00, 0xc0), "BF16")], [1, -2]);
  assert.deepEqual([...toFloat32(b(0x00, 0x3c, 0x01, 0x00), "F16")], [1, 2 ** -24]);
  assert.deepEqual([...toFloat64(b(0, 0, 0, 0, 0, 0, 0xf0, 0x3f), "F64")], [1]);
  // Misaligned views decode the same.
  const shifted = b(0xaa, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x3c);
  assert.deepEqual([...toFloat32(shifted.subarray(1, 5), "F32")], [1]);
  assert.deepEqual([...toFloat32(shifted.subarray(5, 7), "F16")], [1]);
  assert.throws(() => toFloat32(b(1, 2, 3), "F16"), /not a whole number of F16/);
});

Deno.test("fromFloat/toFloat64 round-trip random odd-length arrays in every dtype", () => {
  const rng = new Rng(15);
  for (const dtype of DTYPES) {
    if (dtype.startsWith("F8")) continue;
    const n = 1 + 2 * rng.int(50);
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      xs[i] = dtype === "BOOL"
        ? rng.int(2)
        : dtype.startsWith("U")
        ? rng.int(dtype === "U8" ? 256 : 65536)
        : dtype.startsWith("I")
        ? rng.int(dtype === "I8" ? 256 : 65536) - (dtype === "I8" ? 128 : 32768)
        : rng.normal() * 100;
    }
    const bytes = fromFloat(xs, dtype);
    assert.equal(bytes.byteLength, n * dtypeSize(dtype), dtype);
    const back = toFloat64(bytes, dtype);
    for (let i = 0; i < n; i++) {
      const want = dtype === "F32"
        ? Math.fround(xs[i])
        : dtype === "BF16"
        ? bf16ToF32(f32ToBf16(xs[i]))
        : dtype === "F16"
        ? f16ToF32(f32ToF16(xs[i]))
        : xs[i];
      assert.equal(back[i], want, `${dtype}[${i}]`);
    }
  }
  assert.throws(() => fromFloat([1.5], "I32"), /not representable as I32/);
  assert.throws(() => fromFloat([256], "U8"), /not representable as U8/);
  assert.throws(() => fromFloat([2], "BOOL"), /not representable as BOOL/);
});
