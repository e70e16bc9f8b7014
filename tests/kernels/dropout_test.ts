import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import { dropoutMaskHost, dropoutScale, encodeDropout } from "../../src/kernels/dropout.ts";
import type { Binding, GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";

async function runDropout(
  ctx: GpuContext,
  x: Float32Array,
  p: number,
  seed: number,
  stream: number,
): Promise<Float32Array> {
  const xb = ctx.upload("x", "scratch", x);
  const out = await poisonedF32(ctx, "out", x.length);
  const batch = ctx.batch();
  await encodeDropout(ctx, batch, { x: xb, out, n: x.length, p, seed, stream });
  batch.submit();
  const r = await ctx.readF32(out);
  xb.destroy();
  out.destroy();
  return r;
}

gpuTest("dropout: the GPU mask equals dropoutMaskHost and out = x * mask", async (ctx) => {
  const n = 4099;
  const x = new Rng(3).normals(n);
  for (const [p, seed, stream] of [[0.1, 42, 0], [0.37, 7, 1234567], [0.5, 0xffffffff, 3]]) {
    const mask = dropoutMaskHost(seed, stream, n, p);
    const out = await runDropout(ctx, x, p, seed, stream);
    for (let i = 0; i < n; i++) {
      assert.equal(out[i], Math.fround(x[i] * mask[i]), `p=${p} element ${i}`);
    }
    const ones = await runDropout(ctx, new Float32Array(n).fill(1), p, seed, stream);
    assert.deepEqual(ones, mask);
  }
});

gpuTest("dropout: deterministic, and the backward call reproduces the mask", async (ctx) => {
  const n = 1001;
  const x = new Rng(5).normals(n);
  const a = await runDropout(ctx, x, 0.2, 11, 40213);
  const b = await runDropout(ctx, x, 0.2, 11, 40213);
  assert.deepEqual(a, b);
  // d(out)/dx = mask: the gradient passed through the same call gets the same zeros and scale.
  const grad = new Rng(6).normals(n);
  const dx = await runDropout(ctx, grad, 0.2, 11, 40213);
  const scale = dropoutScale(0.2);
  for (let i = 0; i < n; i++) {
    const kept = a[i] !== 0;
    assert.equal(dx[i], kept ? Math.fround(grad[i] * scale) : grad[i] * 0, `element ${i}`);
  }
  const other = await runDropout(ctx, x, 0.2, 11, 40214);
  const otherSeed = await runDropout(ctx, x, 0.2, 12, 40213);
  assert.notDeepEqual(other, a);
  assert.notDeepEqual(otherSeed, a);
});

gpuTest("dropout: p = 0 is the identity", async (ctx) => {
  const x = new Rng(8).normals(777);
  assert.deepEqual(await runDropout(ctx, x, 0, 1, 2), x);
});

Deno.test("dropout mask: mean about 1, drop fraction about p, streams independent", () => {
  const n = 200_003;
  for (const p of [0.05, 0.1, 0.5]) {
    const m = dropoutMaskHost(1234, 99, n, p);
    let sum = 0;
    let dropped = 0;
    for (const v of m) {
      sum += v;
      if (v === 0) dropped++;
    }
    // Binomial: sd of the drop fraction is sqrt(p(1-p)/n) < 0.0012; allow 5 sd.
    assert.ok(Math.abs(dropped / n - p) < 0.006, `p=${p} dropped ${dropped / n}`);
    assert.ok(Math.abs(sum / n - 1) < 0.006 / (1 - p) + 1e-6, `p=${p} mean ${sum / n}`);
  }
  // Adjacent streams and seeds agree on about (1-p)^2 + p^2 of the elements, not all.
  const a = dropoutMaskHost(1, 10, n, 0.5);
  const b = dropoutMaskHost(1, 11, n, 0.5);
  const c = dropoutMaskHost(2, 10, n, 0.5);
  for (const other of [b, c]) {
    let same = 0;
    for (let i = 0; i < n; i++) if ((a[i] === 0) === (other[i] === 0)) same++;
    assert.ok(Math.abs(same / n - 0.5) < 0.01, `agreement ${same / n}`);
  }
});

gpuTest("dropout: in place on a slice at an offset, nothing outside it touched", async (ctx) => {
  const n = 301;
  const offset = 64; // elements: 256 bytes
  const total = offset + n + 5;
  const x = new Rng(9).normals(total);
  const buf = ctx.upload("x", "scratch", x);
  const slice: Binding = { buffer: buf, offset: offset * 4, size: n * 4 };
  const batch = ctx.batch();
  await encodeDropout(ctx, batch, { x: slice, out: slice, n, p: 0.3, seed: 5, stream: 6 });
  batch.submit();
  const out = await ctx.readF32(buf);
  const mask = dropoutMaskHost(5, 6, n, 0.3);
  for (let i = 0; i < total; i++) {
    const want = i >= offset && i < offset + n ? Math.fround(x[i] * mask[i - offset]) : x[i];
    assert.equal(out[i], want, `element ${i}`);
  }
  buf.destroy();
});

Deno.test("dropout: p outside [0, 1) is refused", () => {
  assert.throws(() => dropoutMaskHost(1, 1, 10, 1), /p must be in \[0, 1\)/);
  assert.throws(() => dropoutMaskHost(1, 1, 10, -0.1), /p must be in \[0, 1\)/);
});

closeGpuAfterTests();
