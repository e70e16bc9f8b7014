/**
 * The bf16 pack and expand kernels (shaders/bf16.wgsl) against tests/reference/bf16_round.ts, a
 * round-to-nearest-even written on the f32 bits apart from the shader: random odd-length ranges
 * at nonzero even offsets, plus the edges (ties both ways, negatives, f32 subnormals, overflow
 * to inf, Inf, NaN with payloads, signed zero). Both must be exact (a conversion has one right
 * answer), compared as bits. Outputs are poisoned first: nothing outside the range may change,
 * and an odd-length pack keeps the high half of its last word.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import { bf16BufferBytes, encodeExpandBf16, encodePackBf16 } from "../../src/kernels/bf16.ts";
import { encodeFill } from "../../src/kernels/fill.ts";
import { bf16BitsOfF32Bits } from "../reference/bf16_round.ts";
import { Rng } from "../../src/util/random.ts";
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";

/** Both halves of every word a bf16 NaN pattern no rounding produces (quiet bit clear). */
const POISON = 0x7f817f81;

async function poisonedWords(ctx: GpuContext, words: number): Promise<GpuBuffer> {
  const buf = ctx.createBuffer({ label: "bf16", category: "scratch", size: words * 4 });
  const batch = ctx.batch("poison");
  await encodeFill(ctx, batch, buf, POISON, words);
  batch.submit();
  return buf;
}

/** f32 bit patterns: random values over many exponents, with the edge cases spliced in. */
function inputBits(rng: Rng, n: number): Uint32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = 2 ** rng.uniform(-140, 127);
    x[i] = rng.next() < 0.5 ? -v : v;
  }
  const bits = new Uint32Array(x.buffer);
  const edges = [
    0x00000000, // +0
    0x80000000, // -0
    0x7f800000, // +inf
    0xff800000, // -inf
    0x7fc00000, // quiet NaN
    0x7f800001, // signalling NaN, payload only in the low half: must stay NaN
    0xffa5a5a5, // negative NaN with payload
    0x3f808000, // tie, kept half even: down
    0x3f818000, // tie, kept half odd: up
    0xbf818000, // negative tie, odd: up in magnitude
    0x3f808001, // just over a tie: up
    0x3f807fff, // just under a tie: down
    0x7f7fffff, // largest f32: rounds up into inf
    0x7f7f7fff, // under the tie to inf: stays finite
    0x7f7f8000, // tie at the top, kept half odd (0x7f7f): up into inf
    0x00000001, // smallest f32 subnormal: down to 0
    0x00008000, // subnormal tie, even: down to 0
    0x00018000, // subnormal tie, odd: up
    0x807fffff, // largest negative subnormal: up into the smallest normal
    0x3fffffff, // carry through the whole significand into the exponent
  ];
  if (n >= edges.length) bits.set(edges, Math.floor((n - edges.length) / 2));
  return bits;
}

gpuTest("pack rounds to nearest even on the bits, odd lengths at even offsets", async (ctx) => {
  const rng = new Rng(1701);
  for (const [n, first] of [[1, 0], [7, 2], [301, 128], [1001, 64], [33 * 81, 6]]) {
    const bits = inputBits(rng, n);
    const src = ctx.upload("x", "scratch", bits);
    const totalWords = (first + n + 1) / 2 + 3;
    const dst = await poisonedWords(ctx, Math.floor(totalWords));
    const batch = ctx.batch();
    await encodePackBf16(ctx, batch, { src, dst, n, first });
    batch.submit();
    const got = await ctx.readU32(dst);
    for (let i = 0; i < n; i++) {
      const e = first + i;
      const have = (got[e >> 1] >>> ((e & 1) * 16)) & 0xffff;
      const want = bf16BitsOfF32Bits(bits[i]);
      if (have !== want) {
        assert.fail(
          `n=${n} first=${first} [${i}] 0x${bits[i].toString(16)} -> 0x${have.toString(16)}, ` +
            `want 0x${want.toString(16)}`,
        );
      }
    }
    for (let w = 0; w < first / 2; w++) assert.equal(got[w], POISON, `n=${n}: word ${w} before`);
    const lastWord = (first + n - 1) >> 1;
    if ((first + n) % 2 === 1) {
      assert.equal(got[lastWord] >>> 16, POISON >>> 16, `n=${n}: high half of the last word`);
    }
    for (let w = lastWord + 1; w < got.length; w++) assert.equal(got[w], POISON, `n=${n}: after`);
    src.destroy();
    dst.destroy();
  }
});

gpuTest("expand is the exact shift, every bf16 pattern, odd ranges at offsets", async (ctx) => {
  // Every 16-bit pattern once (NaNs included), then a range of it at an even, nonzero start.
  const patterns = 65536;
  const packed = new Uint32Array(bf16BufferBytes(patterns) / 4);
  for (let i = 0; i < patterns; i++) packed[i >> 1] |= i << ((i & 1) * 16);
  const src = ctx.upload("bf16", "scratch", packed);
  for (const [first, n] of [[0, patterns], [2, 1], [64, 1001], [1234, 64001]]) {
    const dst = await poisonedF32(ctx, "out", n + 3);
    const batch = ctx.batch();
    await encodeExpandBf16(ctx, batch, { src, dst, n, first });
    batch.submit();
    const got = await ctx.readU32(dst);
    for (let i = 0; i < n; i++) {
      const want = ((first + i) * 65536) >>> 0;
      if (got[i] !== want) {
        assert.fail(`first=${first} [${i}]: 0x${got[i].toString(16)}, want 0x${want.toString(16)}`);
      }
    }
    const nanBits = new Uint32Array(new Float32Array([NaN]).buffer)[0];
    for (let i = n; i < n + 3; i++) assert.equal(got[i], nanBits, `first=${first}: wrote past n`);
    dst.destroy();
  }
  src.destroy();
});

gpuTest("pack and expand name a bad range", async (ctx) => {
  const small = ctx.createBuffer({ label: "small", category: "scratch", size: 16 });
  const batch = ctx.batch();
  await assert.rejects(
    encodePackBf16(ctx, batch, { src: small, dst: small, n: 4, first: 1 }),
    /bf16_pack: first: expected an even element/,
  );
  await assert.rejects(
    encodeExpandBf16(ctx, batch, { src: small, dst: small, n: 4, first: 8 }),
    /bf16_expand: src: expected at least 6 elements/,
  );
  small.destroy();
});

closeGpuAfterTests();
