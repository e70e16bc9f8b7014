/**
 * RMSNorm forward and backward, every variant the adapter can run, against the float64
 * reference: odd dims (below, between and above the workgroup and subgroup sizes), the
 * `subgroup` variant also with workgroups that end in a partial subgroup, and more rows than one
 * grid dimension holds. Variants the adapter lacks the features for are reported as ignored.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu, maxRelError, poisonedF32 } from "../support/gpu.ts";
import { centralDifference, dotF64, rmsnormBackwardF64, rmsnormF64 } from "../reference/ops_f64.ts";
import {
  encodeRmsNorm,
  encodeRmsNormBackward,
  RMSNORM_VARIANTS,
  type RmsNormVariant,
  rmsNormVariantAvailable,
} from "../../src/kernels/rmsnorm.ts";
import { KernelLadder } from "../../src/kernels/ladder.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";

const ROWS = [1, 7, 33];
/** 1 and 20 leave invocations idle; 83 and 213 end mid-subgroup for sizes 4..64. */
const DIMS = [1, 20, 83, 213];
const EPS = 1e-5;
/**
 * Relative to the largest reference value. f32 sums of up to 213 squares (or products) carry a
 * relative rounding error of a few 1e-7 in practice (the bound n·2^-24 is 1.3e-5); the scaling
 * adds 2-3 roundings of 6e-8. 1e-5 leaves room for that and fails on any wrong term, which is
 * off by far more (an element dropped from a row of 213 moves rstd by ~0.5%).
 */
const FWD_TOL = 1e-5;
/**
 * The backward's two terms, rstd·w·dy and x·c, cancel where a row is short (at dim 1 the true
 * gradient is ~eps/x² of them), so its error is taken relative to the larger of the largest
 * reference value and the largest first term; 1e-5 as for the forward.
 */
const BWD_TOL = 1e-5;

const ctx = await gpu();

/** Deno.test on the shared device, ignored (and listed as such) where the variant cannot run. */
function variantTest(
  name: string,
  variant: RmsNormVariant,
  fn: (ctx: GpuContext) => Promise<void>,
) {
  Deno.test({
    name: `${name} (${variant})`,
    ignore: !rmsNormVariantAvailable(ctx, variant),
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => fn(ctx),
  });
}

/** Forward and backward (overwrite and accumulate) of one shape; returns the outputs. */
async function runRmsNorm(
  ctx: GpuContext,
  shape: { rows: number; dim: number; variant: RmsNormVariant; workgroupSize?: number },
  x: Float32Array,
  w: Float32Array,
  dy: Float32Array,
  dx0: Float32Array,
) {
  const { rows, dim } = shape;
  const gx = ctx.upload("x", "scratch", x);
  const gw = ctx.upload("w", "scratch", w);
  const gdy = ctx.upload("dy", "scratch", dy);
  const y = await poisonedF32(ctx, "y", rows * dim);
  const rstd = await poisonedF32(ctx, "rstd", rows);
  const dx = await poisonedF32(ctx, "dx", rows * dim);
  const dxAcc = ctx.upload("dxAcc", "scratch", dx0);
  const batch = ctx.batch();
  await encodeRmsNorm(ctx, batch, { ...shape, x: gx, weight: gw, y, rstd, eps: EPS });
  // rstd from the forward kernel, as the training graph uses it.
  const common = { ...shape, x: gx, weight: gw, rstd, dy: gdy };
  await encodeRmsNormBackward(ctx, batch, { ...common, dx });
  await encodeRmsNormBackward(ctx, batch, { ...common, dx: dxAcc, accumulate: true });
  batch.submit();
  const out = {
    y: await ctx.readF32(y),
    rstd: await ctx.readF32(rstd),
    dx: await ctx.readF32(dx),
    dxAcc: await ctx.readF32(dxAcc),
  };
  for (const b of [gx, gw, gdy, y, rstd, dx, dxAcc]) b.destroy();
  return out;
}

/** Checks one shape against float64; rows of different scales, so rstd varies across rows. */
async function checkShape(
  ctx: GpuContext,
  rng: Rng,
  shape: { rows: number; dim: number; variant: RmsNormVariant; workgroupSize?: number },
) {
  const { rows, dim } = shape;
  const x = rng.normals(rows * dim).map((v, i) => v * (1 + Math.floor(i / dim) % 5));
  const w = rng.normals(dim);
  const dy = rng.normals(rows * dim);
  const dx0 = rng.normals(rows * dim);
  const got = await runRmsNorm(ctx, shape, x, w, dy, dx0);
  const want = rmsnormF64(x, w, rows, dim, EPS);
  const wantDx = rmsnormBackwardF64(x, w, dy, rows, dim, EPS);
  const at = `rows=${rows} dim=${dim} wg=${shape.workgroupSize ?? "default"}`;
  const ey = maxRelError(got.y, want.y);
  const er = maxRelError(got.rstd, want.rstd);
  assert.ok(ey <= FWD_TOL && er <= FWD_TOL, `${at}: y ${ey}, rstd ${er}`);
  let terms = 0;
  for (let i = 0; i < rows * dim; i++) {
    terms = Math.max(terms, Math.abs(want.rstd[Math.floor(i / dim)] * w[i % dim] * dy[i]));
  }
  const e1 = maxRelError(got.dx, wantDx, terms);
  const e2 = maxRelError(got.dxAcc, wantDx.map((v, i) => v + dx0[i]), terms);
  assert.ok(e1 <= BWD_TOL && e2 <= BWD_TOL, `${at}: dx ${e1}, accumulated ${e2}`);
}

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
  variantTest("rmsnorm forward and backward match float64, odd dims", variant, async (ctx) => {
    const rng = new Rng(6);
    for (const rows of ROWS) {
      for (const dim of DIMS) await checkShape(ctx, rng, { rows, dim, variant });
    }
  });

  // 65539 workgroups (one per row) split into a 2-D grid; `row` runs 64 rows per workgroup.
  // The subgroup variant runs 8 invocations per row here: the same grid, an eighth of the work
  // on CPU adapters (multi-second GPU waits can stall `deno test` on lavapipe; see the report).
  variantTest("rmsnorm over more rows than one grid dimension holds", variant, async (ctx) => {
    const workgroupSize = variant === "subgroup" ? 8 : undefined;
    await checkShape(ctx, new Rng(8), { rows: 65539, dim: 3, variant, workgroupSize });
  });
}

variantTest(
  "rmsnorm with workgroups that end in a partial subgroup or hold less than one",
  "subgroup",
  async (ctx) => {
    const { subgroupMinSize, subgroupMaxSize } = ctx.capabilities;
    // Not multiples of any subgroup size above 4 (60, 100), below the smallest (3), and above
    // the largest with a tail (max + 3).
    const sizes = [60, 100, 3, Math.min(subgroupMaxSize + 3, 256)];
    assert.ok(subgroupMinSize >= 4, `subgroupMinSize ${subgroupMinSize}`);
    const rng = new Rng(9);
    for (const workgroupSize of sizes) {
      for (const dim of [1, 83, 213]) {
        await checkShape(ctx, rng, { rows: 5, dim, variant: "subgroup", workgroupSize });
      }
    }
  },
);

variantTest("rmsnorm gives the same bits on every run", "subgroup", async (ctx) => {
  const rng = new Rng(10);
  const [rows, dim] = [9, 213];
  const inputs = [rng.normals(rows * dim), rng.normals(dim), rng.normals(rows * dim)] as const;
  const shape = { rows, dim, variant: "subgroup" as const, workgroupSize: 60 };
  const a = await runRmsNorm(ctx, shape, ...inputs, new Float32Array(rows * dim));
  const b = await runRmsNorm(ctx, shape, ...inputs, new Float32Array(rows * dim));
  assert.deepEqual(a, b);
});

Deno.test({
  name: "rmsnorm refuses the subgroup variant where the device lacks subgroups",
  ignore: ctx.capabilities.subgroups,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const b = ctx.createBuffer({ label: "b", category: "scratch", size: 64 });
    const args = { x: b, weight: b, y: b, rstd: b, rows: 2, dim: 2, eps: 1e-5 };
    await assert.rejects(
      encodeRmsNorm(ctx, ctx.batch(), { ...args, variant: "subgroup" }),
      /rmsnorm: variant subgroup needs the subgroups feature/,
    );
    const ladder = new KernelLadder({ cachePath: null, overrides: "rmsnorm=subgroup" });
    assert.throws(() => ladder.choice(ctx, "rmsnorm"), /rmsnorm=subgroup: needs a feature/);
    b.destroy();
  },
});

Deno.test({
  name: "the ladder times exactly the rmsnorm variants this device can run",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ladder = new KernelLadder({
      cachePath: null,
      overrides: "",
      mode: "time",
      log: () => {},
    });
    const d = await ladder.decide(ctx, "rmsnorm");
    assert.equal(d.source, "timed");
    for (const v of RMSNORM_VARIANTS) {
      const ran = (d.ms?.[v] ?? 0) > 0;
      assert.equal(ran, rmsNormVariantAvailable(ctx, v), `${v}: ${d.ms?.[v]}`);
    }
    assert.ok(rmsNormVariantAvailable(ctx, d.variant as RmsNormVariant), d.variant);
  },
});

closeGpuAfterTests();
