import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import {
  encodeAdd,
  encodeAddRows,
  encodeAxpy,
  encodeCopy,
  encodeScale,
} from "../../src/kernels/elementwise.ts";
import { Rng } from "../../src/util/random.ts";

const SIZES = [1, 7, 1001, 33 * 216];

/** |got - want| within 1e-6 of the operands' magnitude (a sum may cancel to near 0). */
function assertSumClose(got: Float32Array, want: number[], scale: number[], what: string) {
  for (let i = 0; i < want.length; i++) {
    const ok = Math.abs(got[i] - want[i]) <= 1e-6 * scale[i];
    if (!ok) assert.fail(`${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

gpuTest("add, axpy, scale and copy match float64 at odd sizes", async (ctx) => {
  const rng = new Rng(51);
  for (const n of SIZES) {
    const x = rng.normals(n);
    const y = rng.normals(n);
    const alpha = -1.7;
    const gx = ctx.upload("x", "scratch", x);
    const gAdd = ctx.upload("yAdd", "scratch", y);
    const gAxpy = ctx.upload("yAxpy", "scratch", y);
    const gScale = ctx.upload("scale", "scratch", x);
    const gCopy = await poisonedF32(ctx, "copy", n);
    const batch = ctx.batch();
    await encodeAdd(ctx, batch, { x: gx, y: gAdd, n });
    await encodeAxpy(ctx, batch, { x: gx, y: gAxpy, n, alpha });
    await encodeScale(ctx, batch, { x: gScale, n, alpha });
    await encodeCopy(ctx, batch, { src: gx, dst: gCopy, n });
    batch.submit();
    const add = Array.from(y, (v, i) => v + x[i]);
    const axpy = Array.from(y, (v, i) => v + alpha * x[i]);
    const scale = Array.from(x, (v) => alpha * v);
    const addScale = Array.from(y, (v, i) => Math.abs(v) + Math.abs(x[i]));
    const axpyScale = Array.from(y, (v, i) => Math.abs(v) + Math.abs(alpha * x[i]));
    assertSumClose(await ctx.readF32(gAdd), add, addScale, `add n=${n}`);
    assertSumClose(await ctx.readF32(gAxpy), axpy, axpyScale, `axpy n=${n}`);
    assert.ok(maxRelError(await ctx.readF32(gScale), scale) <= 1e-6, `scale n=${n}`);
    assert.deepEqual(Array.from(await ctx.readF32(gCopy)), Array.from(x), `copy n=${n}`);
    for (const b of [gx, gAdd, gAxpy, gScale, gCopy]) b.destroy();
  }
});

gpuTest("elementwise ops on Binding slices leave the rest of the buffers alone", async (ctx) => {
  const rng = new Rng(52);
  const n = 77;
  const len = 256 + n + 50;
  const xs = rng.normals(len);
  const ys = rng.normals(len);
  // WebGPU forbids one buffer as both read-only and writable storage in one dispatch, so x and y
  // are slices of two buffers: floats [256, 256 + n) of each (byte offset 1024).
  const bx = ctx.upload("xs", "scratch", xs);
  const by = ctx.upload("ys", "scratch", ys);
  const x = { buffer: bx, offset: 1024, size: n * 4 };
  const y = { buffer: by, offset: 1024, size: n * 4 };
  const batch = ctx.batch();
  await encodeAxpy(ctx, batch, { x, y, n, alpha: 0.5 });
  await encodeScale(ctx, batch, { x, n, alpha: 3 });
  batch.submit();
  const gotX = await ctx.readF32(bx);
  const gotY = await ctx.readF32(by);
  for (let i = 0; i < len; i++) {
    const inside = i >= 256 && i < 256 + n;
    const wantX = inside ? 3 * xs[i] : xs[i];
    const wantY = inside ? ys[i] + 0.5 * xs[i] : ys[i];
    assert.ok(Math.abs(gotX[i] - wantX) <= 1e-6 * Math.abs(wantX), `x[${i}]`);
    const scale = Math.abs(ys[i]) + Math.abs(xs[i]);
    assert.ok(Math.abs(gotY[i] - wantY) <= 1e-6 * scale, `y[${i}] ${gotY[i]} vs ${wantY}`);
  }
  bx.destroy();
  by.destroy();
});

gpuTest("add_rows adds a bias to every row, at odd shapes and on a slice", async (ctx) => {
  const rng = new Rng(53);
  for (const [rows, cols] of [[1, 1], [7, 33], [29, 40], [3, 1001]]) {
    const bias = rng.normals(cols);
    const y0 = rng.normals(rows * cols);
    // y sits at float 64 (byte 256) of a bigger buffer: the floats around it must not change.
    const pad = 64;
    const whole = new Float32Array(pad + rows * cols + 9);
    whole.set(rng.normals(whole.length));
    whole.set(y0, pad);
    const gb = ctx.upload("bias", "scratch", bias);
    const gy = ctx.upload("y", "scratch", whole);
    const batch = ctx.batch();
    await encodeAddRows(ctx, batch, {
      bias: gb,
      y: { buffer: gy, offset: pad * 4, size: rows * cols * 4 },
      rows,
      cols,
    });
    batch.submit();
    const got = await ctx.readF32(gy);
    for (let i = 0; i < whole.length; i++) {
      const j = i - pad;
      const inside = j >= 0 && j < rows * cols;
      // One f32 addition: within half an ulp of the float64 sum.
      const want = inside ? y0[j] + bias[j % cols] : whole[i];
      const tol = inside ? 6e-8 * (Math.abs(y0[j]) + Math.abs(bias[j % cols])) : 0;
      assert.ok(Math.abs(got[i] - want) <= tol, `${rows}x${cols} [${i}]: ${got[i]} vs ${want}`);
    }
    gb.destroy();
    gy.destroy();
  }
});

gpuTest("add covers more than 65535 workgroups (2-D grid)", async (ctx) => {
  const n = 65535 * 256 + 333;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = (i % 1009) - 504;
    y[i] = (i % 7) + 0.5;
  }
  const gx = ctx.upload("x", "scratch", x);
  const gy = ctx.upload("y", "scratch", y);
  const batch = ctx.batch();
  await encodeAdd(ctx, batch, { x: gx, y: gy, n });
  batch.submit();
  const got = await ctx.readF32(gy);
  for (let i = 0; i < n; i++) {
    if (got[i] !== x[i] + y[i]) assert.fail(`[${i}] ${got[i]} vs ${x[i] + y[i]}`);
  }
  gx.destroy();
  gy.destroy();
});

closeGpuAfterTests();
