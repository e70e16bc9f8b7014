/**
 * The f32 <-> half conversion kernels against float64 references: to_f16 against
 * tests/reference/float16_f64.ts's roundF16 (powers of two and round-half-even in float64, not
 * bit manipulation) on random odd-sized inputs spread over every half exponent, plus the edges
 * (ties, subnormals, overflow to inf, NaN, signed zero); from_f16 on all 65536 half patterns
 * against the IEEE formula written out here. Both must be exact: a conversion has one right
 * answer. Outputs are poisoned first and the words past n must stay poisoned. The kernel needs
 * no shader-f16 (integer ops), so it runs on every adapter.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import { encodeFromF16, encodeToF16, halfBufferBytes } from "../../src/kernels/convert_f16.ts";
import { encodeFill } from "../../src/kernels/fill.ts";
import { roundF16 } from "../reference/float16_f64.ts";
import { Rng } from "../../src/util/random.ts";
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";

/** Both halves of every word a NaN (0x7e00), so an unwritten half cannot read as a number. */
const HALF_POISON = 0x7e007e00;

/** The value of a half's bit pattern, from the IEEE 754 binary16 definition. */
function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** Same value and sign (so -0 differs from 0); NaN equals NaN. */
function same(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

async function poisonedHalves(ctx: GpuContext, words: number): Promise<GpuBuffer> {
  const buf = ctx.createBuffer({ label: "halves", category: "scratch", size: words * 4 });
  const batch = ctx.batch("poison");
  await encodeFill(ctx, batch, buf, HALF_POISON, words);
  batch.submit();
  return buf;
}

/** Random f32 values, log-uniform over 2^-27 .. 2^17 (under the subnormals to past 65504). */
function spread(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = 2 ** rng.uniform(-27, 17);
    x[i] = rng.next() < 0.5 ? -v : v;
  }
  return x;
}

/** Values on and next to the rounding edges, each with the half the reference must give. */
const EDGES = [
  0,
  -0,
  Infinity,
  -Infinity,
  NaN,
  1,
  1 + 2 ** -11, // tie: down to even 1
  1 + 3 * 2 ** -11, // tie: up to even 1 + 2^-9
  1 + 2 ** -11 + 2 ** -23, // just over the tie: up
  65504, // largest half
  65519, // under 65504 + half an ulp: stays 65504
  65520, // the tie past the largest half: inf
  -70000,
  1e30,
  2 ** -14, // smallest normal half
  2 ** -14 - 2 ** -25, // tie between the largest subnormal and the smallest normal: even (normal)
  2 ** -24, // smallest subnormal
  2 ** -25, // tie between 0 and 2^-24: even (0)
  -(2 ** -25) * 1.0000001, // just over: -2^-24
  3 * 2 ** -25, // tie between 2^-24 and 2^-23: even (2^-23)
  5 * 2 ** -26, // 1.25 * 2^-24: down
  1e-40, // an f32 subnormal: 0
  -1e-40,
  0.1,
  -3.14159,
];

gpuTest("to_f16 rounds to nearest even like the float64 reference, odd sizes", async (ctx) => {
  const rng = new Rng(1601);
  for (const n of [1, 2, 7, 1001, 33 * 81 + 2]) {
    const x = spread(rng, n);
    if (n >= EDGES.length) x.set(EDGES, Math.floor((n - EDGES.length) / 2));
    const words = halfBufferBytes(n) / 4;
    const src = ctx.upload("x", "scratch", x);
    const dst = await poisonedHalves(ctx, words + 2);
    const batch = ctx.batch();
    await encodeToF16(ctx, batch, { src, dst, n });
    batch.submit();
    const got = await ctx.readU32(dst);
    for (let i = 0; i < n; i++) {
      const bits = (got[i >> 1] >>> ((i & 1) * 16)) & 0xffff;
      const want = roundF16(x[i]);
      if (!same(halfValue(bits), want)) {
        assert.fail(
          `n=${n} [${i}]: ${x[i]} -> 0x${bits.toString(16)} (${halfValue(bits)}), want ${want}`,
        );
      }
    }
    // An odd n leaves the last word's upper half zero; nothing past the last word is written.
    if (n % 2 === 1) assert.equal(got[words - 1] >>> 16, 0, `n=${n}: upper half of the last word`);
    assert.deepEqual([got[words], got[words + 1]], [HALF_POISON, HALF_POISON], `n=${n}: tail`);
    src.destroy();
    dst.destroy();
  }
});

gpuTest("to_f16: magnitudes from 65520 up become inf, under it stay finite", async (ctx) => {
  // Dense around the overflow edge, in f32 steps: 65504 + half an ulp (16) is the tie to inf.
  const x = Float32Array.from({ length: 41 }, (_, i) => 65500 + i * 0.5);
  const neg = x.map((v) => -v);
  const all = Float32Array.from([...x, ...neg]);
  const src = ctx.upload("x", "scratch", all);
  const dst = await poisonedHalves(ctx, halfBufferBytes(all.length) / 4);
  const batch = ctx.batch();
  await encodeToF16(ctx, batch, { src, dst, n: all.length });
  batch.submit();
  const got = await ctx.readU32(dst);
  for (let i = 0; i < all.length; i++) {
    const v = halfValue((got[i >> 1] >>> ((i & 1) * 16)) & 0xffff);
    const want = Math.abs(all[i]) >= 65520
      ? Math.sign(all[i]) * Infinity
      : Math.sign(all[i]) * 65504;
    assert.ok(same(v, want), `${all[i]} -> ${v}, want ${want}`);
    assert.ok(same(v, roundF16(all[i])), `${all[i]}: reference says ${roundF16(all[i])}`);
  }
  src.destroy();
  dst.destroy();
});

gpuTest("from_f16 is exact on all 65536 half patterns, and inverts to_f16", async (ctx) => {
  // Every pattern once, plus one more so the count is odd (the last word's upper half unused).
  const n = 65537;
  const packed = new Uint32Array(halfBufferBytes(n) / 4);
  for (let i = 0; i < n; i++) packed[i >> 1] |= (i & 0xffff) << ((i & 1) * 16);
  const src = ctx.upload("halves", "scratch", packed);
  const dst = await poisonedF32(ctx, "f32", n + 3);
  const back = await poisonedHalves(ctx, packed.length);
  const batch = ctx.batch();
  await encodeFromF16(ctx, batch, { src, dst, n });
  await encodeToF16(ctx, batch, { src: dst, dst: back, n });
  batch.submit();
  const got = await ctx.readF32(dst);
  for (let i = 0; i < n; i++) {
    const want = halfValue(i & 0xffff);
    if (!same(got[i], want)) {
      assert.fail(`0x${(i & 0xffff).toString(16)} -> ${got[i]}, want ${want}`);
    }
  }
  assert.ok(got.subarray(n).every(Number.isNaN), "wrote past n");
  // Round trip: every non-NaN pattern comes back bit for bit (NaN stays some NaN).
  const again = await ctx.readU32(back);
  for (let i = 0; i < n; i++) {
    const h = i & 0xffff;
    const b = (again[i >> 1] >>> ((i & 1) * 16)) & 0xffff;
    const ok = Number.isNaN(halfValue(h)) ? Number.isNaN(halfValue(b)) : b === h;
    if (!ok) assert.fail(`round trip 0x${h.toString(16)} -> 0x${b.toString(16)}`);
  }
  for (const b of [src, dst, back]) b.destroy();
});

gpuTest("to_f16 and from_f16 work on 256-byte-aligned slices", async (ctx) => {
  const rng = new Rng(1603);
  const n = 301;
  const x = spread(rng, 64 + n);
  const src = ctx.upload("x", "scratch", x);
  const halves = await poisonedHalves(ctx, 64 + 256);
  const out = await poisonedF32(ctx, "out", 64 + n);
  const batch = ctx.batch();
  // Elements 64.. of src into the halves' words 64.. (byte offset 256), and back.
  const srcSlice = { buffer: src, offset: 256, size: n * 4 };
  const halfSlice = { buffer: halves, offset: 256, size: halfBufferBytes(n) };
  await encodeToF16(ctx, batch, { src: srcSlice, dst: halfSlice, n });
  await encodeFromF16(ctx, batch, {
    src: halfSlice,
    dst: { buffer: out, offset: 256, size: n * 4 },
    n,
  });
  batch.submit();
  const got = await ctx.readF32(out);
  assert.ok(got.subarray(0, 64).every(Number.isNaN), "wrote before the slice");
  for (let i = 0; i < n; i++) {
    assert.ok(
      same(got[64 + i], roundF16(x[64 + i])),
      `[${i}]: ${got[64 + i]} vs ${roundF16(x[64 + i])}`,
    );
  }
  const words = await ctx.readU32(halves);
  assert.ok(words.subarray(0, 64).every((w) => w === HALF_POISON), "halves before the slice");
  for (const b of [src, halves, out]) b.destroy();
});

gpuTest("to_f16 and from_f16 name the argument that is too small", async (ctx) => {
  const small = ctx.createBuffer({ label: "small", category: "scratch", size: 16 });
  const batch = ctx.batch();
  await assert.rejects(
    () => encodeToF16(ctx, batch, { src: small, dst: small, n: 5 }),
    /to_f16: src: expected at least 5 elements of 4 bytes \(20 bytes\), got 16 bytes/,
  );
  await assert.rejects(
    () => encodeFromF16(ctx, batch, { src: small, dst: small, n: 9 }),
    /from_f16: src: expected at least 5 elements of 4 bytes \(20 bytes\), got 16 bytes/,
  );
  await assert.rejects(
    () => encodeToF16(ctx, batch, { src: small, dst: small, n: 0 }),
    /to_f16: n: expected a positive integer, got 0/,
  );
  batch.submit();
  small.destroy();
});

closeGpuAfterTests();
