import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import { centralDifference, dotF64, rmsnormBackwardF64, rmsnormF64 } from "../reference/ops_f64.ts";
import {
  encodeRmsNorm,
  encodeRmsNormBackward,
  RMSNORM_VARIANTS,
} from "../../src/kernels/rmsnorm.ts";
import { Rng } from "../../src/util/random.ts";

const ROWS = [1, 7, 33];
const DIMS = [20, 80, 216];
const EPS = 1e-5;
const FWD_TOL = 1e-5;
const BWD_TOL = 1e-5;

Deno.test("rmsnorm float64 backward agrees with central differences of the forward", () => {
  const rng = new Rng(5);
  for (const [rows, dim] of [[1, 20], [3, 7]]) {
    const x = Float64Array.from(rng.normals(rows * dim));
    const w = rng.normals(dim);
    const dy = rng.normals(rows * dim);
    const dx = rmsnormBackwardF64(x, w, dy, rows, dim, EPS);
    const loss = (v: Float64Array) => dotF64(dy, rmsnormF64(v, w, rows, dim, EPS).y);
    for (const i of [0, dim - 1, rows * dim - 1, Math.floor(rows * dim / 2)]) {
      const fd = centralDifference(loss, x, i);
      assert.ok(
        Math.abs(fd - dx[i]) <= 1e-7 * Math.max(1, Math.abs(dx[i])),
        `${i}: ${fd} vs ${dx[i]}`,
      );
    }
  }
});

for (const variant of RMSNORM_VARIANTS) {
  gpuTest(`rmsnorm forward matches float64 (${variant})`, async (ctx) => {
    const rng = new Rng(6);
    for (const rows of ROWS) {
      for (const dim of DIMS) {
        // Rows of different scales, so rstd varies across rows.
        const x = rng.normals(rows * dim).map((v, i) => v * (1 + Math.floor(i / dim) % 5));
        const w = rng.normals(dim);
        const want = rmsnormF64(x, w, rows, dim, EPS);
        const gx = ctx.upload("x", "scratch", x);
        const gw = ctx.upload("w", "scratch", w);
        const y = await poisonedF32(ctx, "y", rows * dim);
        const rstd = await poisonedF32(ctx, "rstd", rows);
        const batch = ctx.batch();
        await encodeRmsNorm(ctx, batch, {
          x: gx,
          weight: gw,
          y,
          rstd,
          rows,
          dim,
          eps: EPS,
          variant,
        });
        batch.submit();
        const ey = maxRelError(await ctx.readF32(y), want.y);
        const er = maxRelError(await ctx.readF32(rstd), want.rstd);
        assert.ok(ey <= FWD_TOL && er <= FWD_TOL, `rows=${rows} dim=${dim}: y ${ey}, rstd ${er}`);
        for (const b of [gx, gw, y, rstd]) b.destroy();
      }
    }
  });

  gpuTest(
    `rmsnorm backward matches float64, overwrite and accumulate (${variant})`,
    async (ctx) => {
      const rng = new Rng(7);
      for (const rows of ROWS) {
        for (const dim of DIMS) {
          const x = rng.normals(rows * dim, 2);
          const w = rng.normals(dim);
          const dy = rng.normals(rows * dim);
          const dx0 = rng.normals(rows * dim);
          const want = rmsnormBackwardF64(x, w, dy, rows, dim, EPS);
          const gx = ctx.upload("x", "scratch", x);
          const gw = ctx.upload("w", "scratch", w);
          const gdy = ctx.upload("dy", "scratch", dy);
          // rstd from the forward kernel, as the training graph uses it.
          const y = await poisonedF32(ctx, "y", rows * dim);
          const rstd = await poisonedF32(ctx, "rstd", rows);
          const dx = await poisonedF32(ctx, "dx", rows * dim);
          const dxAcc = ctx.upload("dxAcc", "scratch", dx0);
          const batch = ctx.batch();
          await encodeRmsNorm(ctx, batch, {
            x: gx,
            weight: gw,
            y,
            rstd,
            rows,
            dim,
            eps: EPS,
            variant,
          });
          const common = { x: gx, weight: gw, rstd, dy: gdy, rows, dim, variant };
          await encodeRmsNormBackward(ctx, batch, { ...common, dx });
          await encodeRmsNormBackward(ctx, batch, { ...common, dx: dxAcc, accumulate: true });
          batch.submit();
          const e1 = maxRelError(await ctx.readF32(dx), want);
          const e2 = maxRelError(await ctx.readF32(dxAcc), want.map((v, i) => v + dx0[i]));
          assert.ok(e1 <= BWD_TOL && e2 <= BWD_TOL, `rows=${rows} dim=${dim}: ${e1}, acc ${e2}`);
          for (const b of [gx, gw, gdy, y, rstd, dx, dxAcc]) b.destroy();
        }
      }
    },
  );
}

closeGpuAfterTests();
