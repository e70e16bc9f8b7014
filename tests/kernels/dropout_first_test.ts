/**
 * Dropout's `first` (the mask index of element 0): a chunk of a tensor's rows, masked on its
 * own, gets exactly the whole tensor's mask over those elements (the MLP chunks of
 * src/model/layer.ts rely on it), out of place and in place; checked against dropoutMaskHost.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import { dropoutMaskHost, encodeDropout } from "../../src/kernels/dropout.ts";
import { Rng } from "../../src/util/random.ts";

gpuTest("dropout: a chunk at element `first` draws the whole tensor's mask there", async (ctx) => {
  const [cols, rows, p, seed, stream] = [37, 29, 0.3, 12345, 77];
  const whole = dropoutMaskHost(seed, stream, rows * cols, p);
  // Rows 11..28 of a [29, 37] tensor: 18 rows, an odd element count and offset.
  const [firstRow, n] = [11, 18 * cols];
  const first = firstRow * cols;
  const x = new Rng(4).normals(n);
  const xb = ctx.upload("x", "scratch", x);
  const out = await poisonedF32(ctx, "out", n);
  const inPlace = ctx.upload("x_in_place", "scratch", x);
  const batch = ctx.batch();
  await encodeDropout(ctx, batch, { x: xb, out, n, p, seed, stream, first });
  await encodeDropout(ctx, batch, { x: inPlace, out: inPlace, n, p, seed, stream, first });
  batch.submit();
  const got = await ctx.readF32(out);
  const gotInPlace = await ctx.readF32(inPlace);
  let dropped = 0;
  for (let i = 0; i < n; i++) {
    const want = Math.fround(x[i] * whole[first + i]);
    assert.equal(got[i], want, `element ${i}`);
    assert.equal(gotInPlace[i], want, `in place, element ${i}`);
    if (whole[first + i] === 0) dropped++;
  }
  // The mask really drops some and keeps some here (p = 0.3 of 666 elements).
  assert.ok(dropped > 100 && dropped < n - 100, `dropped ${dropped}`);
  // And it is not the mask of index 0 onwards: the offset matters.
  const unshifted = dropoutMaskHost(seed, stream, n, p);
  assert.ok(unshifted.some((m, i) => m !== whole[first + i]));
  for (const b of [xb, out, inPlace]) b.destroy();
});

gpuTest("dropout: a `first` past 2^32 - n is refused, naming the field", async (ctx) => {
  const buf = ctx.upload("x", "scratch", new Float32Array(8).fill(1));
  const batch = ctx.batch();
  await assert.rejects(
    () =>
      encodeDropout(ctx, batch, {
        x: buf,
        out: buf,
        n: 8,
        p: 0.5,
        seed: 1,
        stream: 2,
        first: 2 ** 32 - 4,
      }),
    /first must be/,
  );
  batch.submit();
  buf.destroy();
});

closeGpuAfterTests();
