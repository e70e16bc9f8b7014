/**
 * The dense matmul's f32 variants (blocked, tiled, and subgroup where the adapter has subgroups)
 * against float64 on every layout and odd sizes; the f16 variants are checked against their own
 * bound in matmul_f16_test.ts and matmul_subgroup_matrix_test.ts.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import { matmulF64 } from "../reference/ops_f64.ts";
import {
  availableMatmulVariants,
  chooseMatmulVariant,
  encodeMatmul,
  MATMUL_F32_VARIANTS,
  MATMUL_VARIANTS,
  type MatmulVariant,
} from "../../src/kernels/matmul.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import type { LadderDecision } from "../../src/kernels/ladder.ts";
import { precisionChoice } from "../../src/kernels/matmul_features.ts";
import { Rng } from "../../src/util/random.ts";
import { QloradError } from "../../src/util/errors.ts";
import { UnexpectedShapeError } from "../../src/kernels/shape_checks.ts";

const SIZES = [1, 3, 17, 80, 216];
// f32 operands and arithmetic: the error is a few f32 roundings of partial sums (~k 2^-24 of the
// largest output at worst, ~1e-6 here), whatever the summation order of the variant.
const TOL = 1e-5;
const AVAILABLE = availableMatmulVariants(await gpu());
/** The f32 variants this adapter can run. */
const F32_VARIANTS = AVAILABLE.filter((v) => MATMUL_F32_VARIANTS.includes(v));

interface Case {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  a: Float32Array;
  b: Float32Array;
  want: Float64Array;
}

function makeCase(
  rng: Rng,
  m: number,
  n: number,
  k: number,
  transA: boolean,
  transB: boolean,
): Case {
  const a = rng.normals(m * k);
  const b = rng.normals(k * n);
  const alpha = rng.uniform(0.5, 2);
  const want = matmulF64(a, b, m, n, k, transA, transB).map((v) => alpha * v);
  return { m, n, k, transA, transB, alpha, a, b, want };
}

async function runCase(ctx: GpuContext, c: Case, variant: MatmulVariant): Promise<Float32Array> {
  const a = ctx.upload("t.a", "scratch", c.a);
  const b = ctx.upload("t.b", "scratch", c.b);
  const out = await poisonedF32(ctx, "t.c", c.m * c.n);
  const batch = ctx.batch();
  await encodeMatmul(ctx, batch, { ...c, a, b, c: out, variant });
  batch.submit();
  const got = await ctx.readF32(out);
  a.destroy();
  b.destroy();
  out.destroy();
  return got;
}

// Every (m, n, k) in SIZES³ for each layout; the f64 reference is computed once per case and
// checked against every variant.
for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
  gpuTest(
    `matmul matches float64 for m,n,k in {${SIZES}} (transA=${transA}, transB=${transB}), every variant`,
    async (ctx) => {
      const rng = new Rng(1000 + Number(transA) * 2 + Number(transB));
      for (const m of SIZES) {
        for (const n of SIZES) {
          for (const k of SIZES) {
            const c = makeCase(rng, m, n, k, transA, transB);
            for (const variant of F32_VARIANTS) {
              const err = maxRelError(await runCase(ctx, c, variant), c.want);
              assert.ok(err <= TOL, `${variant} m=${m} n=${n} k=${k}: rel err ${err}`);
            }
          }
        }
      }
    },
  );
}

gpuTest("matmul accumulate adds alpha·A·B to C and keeps C elsewhere untouched", async (ctx) => {
  const rng = new Rng(21);
  for (const variant of F32_VARIANTS) {
    for (
      const [m, n, k, transA, transB] of [[17, 80, 3, false, true], [
        80,
        3,
        216,
        true,
        false,
      ]] as const
    ) {
      const a = rng.normals(m * k);
      const b = rng.normals(k * n);
      const c0 = rng.normals(m * n);
      const alpha = -0.625;
      const prod = matmulF64(a, b, m, n, k, transA, transB);
      const want = prod.map((v, i) => c0[i] + alpha * v);
      const ga = ctx.upload("a", "scratch", a);
      const gb = ctx.upload("b", "scratch", b);
      const gc = ctx.upload("c", "scratch", c0);
      const batch = ctx.batch();
      await encodeMatmul(ctx, batch, {
        a: ga,
        b: gb,
        c: gc,
        m,
        n,
        k,
        transA,
        transB,
        alpha,
        accumulate: true,
        variant,
      });
      batch.submit();
      const err = maxRelError(await ctx.readF32(gc), want);
      assert.ok(err <= TOL, `${variant} ${m}x${n}x${k}: rel err ${err}`);
      for (const g of [ga, gb, gc]) g.destroy();
    }
  }
});

gpuTest("matmul reads and writes Binding slices at 256-byte offsets only", async (ctx) => {
  const rng = new Rng(22);
  const [m, n, k] = [33, 17, 80];
  for (const variant of F32_VARIANTS) {
    const a = rng.normals(m * k);
    const b = rng.normals(n * k);
    // One buffer holds guard | A | guard | B | guard | C | guard, each slice 256-aligned.
    // In floats: A (2640) at 64, B (1360) at 3136, C at 4672; byte offsets multiples of 256.
    const off = [64, 64 + 64 * 48, 64 + 64 * 72];
    const total = off[2] + m * n + 100;
    const host = rng.normals(total);
    host.set(a, off[0]);
    host.set(b, off[1]);
    host.fill(NaN, off[2], off[2] + m * n);
    const buf = ctx.upload("all", "scratch", host);
    const inputs = ctx.upload("inputs", "scratch", host);
    const slice = (b: typeof buf, at: number, count: number) => ({
      buffer: b,
      offset: at * 4,
      size: count * 4,
    });
    const batch = ctx.batch();
    await encodeMatmul(ctx, batch, {
      a: slice(inputs, off[0], m * k),
      b: slice(inputs, off[1], n * k),
      c: slice(buf, off[2], m * n),
      m,
      n,
      k,
      transB: true,
      variant,
    });
    batch.submit();
    const got = await ctx.readF32(buf);
    const want = matmulF64(a, b, m, n, k, false, true);
    const err = maxRelError(got.subarray(off[2], off[2] + m * n), want);
    assert.ok(err <= TOL, `${variant}: rel err ${err}`);
    // Everything outside C's slice is as uploaded.
    for (let i = 0; i < total; i++) {
      if (i >= off[2] && i < off[2] + m * n) continue;
      assert.ok(Object.is(got[i], host[i]), `${variant}: element ${i} changed`);
    }
    buf.destroy();
    inputs.destroy();
  }
});

gpuTest("matmul rejects bad shapes and short buffers naming the field", async (ctx) => {
  const a = ctx.createBuffer({ label: "a", category: "scratch", size: 4 * 12 });
  const batch = ctx.batch();
  await assert.rejects(
    encodeMatmul(ctx, batch, { a, b: a, c: a, m: 3, n: 4, k: 5 }),
    (e) =>
      e instanceof UnexpectedShapeError && e.kind === "invalid_argument" &&
      e.message ===
        "matmul: a: expected at least 15 elements of 4 bytes (60 bytes), got 48 bytes (buffer a)",
  );
  await assert.rejects(
    encodeMatmul(ctx, batch, { a, b: a, c: a, m: 0, n: 1, k: 1 }),
    (e) =>
      e instanceof UnexpectedShapeError &&
      e.message === "matmul: m: expected a positive integer, got 0",
  );
  a.destroy();
});

const missing = MATMUL_VARIANTS.filter((v) => !AVAILABLE.includes(v));
Deno.test({
  name: `matmul refuses a variant the adapter lacks, naming the feature (${missing.join(", ")})`,
  ignore: missing.length === 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ctx = await gpu();
    const a = ctx.createBuffer({ label: "a", category: "scratch", size: 64 });
    for (const variant of missing) {
      await assert.rejects(
        encodeMatmul(ctx, ctx.batch(), { a, b: a, c: a, m: 2, n: 2, k: 2, variant }),
        (e) =>
          e instanceof QloradError &&
          new RegExp(`matmul: variant ${variant} needs \\w+, which .* lacks`).test(e.message),
      );
    }
    a.destroy();
  },
});

Deno.test("a call gets an f16 variant only with allowF16 or an explicit override", () => {
  const timed: LadderDecision = {
    kernel: "matmul",
    variant: "tiled_f16",
    source: "timed",
    ms: { blocked: 3, tiled: 2, tiled_f16: 1, subgroup: null },
  };
  const exact = MATMUL_F32_VARIANTS;
  assert.equal(precisionChoice(timed, exact, "blocked", false), "tiled");
  assert.equal(precisionChoice(timed, exact, "blocked", true), "tiled_f16");
  // An f32 winner stays; an override is the user's explicit choice; no timings: the fallback.
  assert.equal(precisionChoice({ ...timed, variant: "blocked" }, exact, "tiled", false), "blocked");
  const forced: LadderDecision = { kernel: "matmul", variant: "tiled_f16", source: "override" };
  assert.equal(precisionChoice(forced, exact, "blocked", false), "tiled_f16");
  const cached: LadderDecision = { kernel: "matmul", variant: "tiled_f16", source: "cache" };
  assert.equal(precisionChoice(cached, exact, "blocked", false), "blocked");
});

Deno.test({
  name: "matmul without allowF16 keeps f32 accuracy whatever the ladder picked",
  ignore: !AVAILABLE.includes("tiled_f16"),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ctx = await gpu();
    const rng = new Rng(23);
    const [m, n, k] = [9, 21, 150];
    const a = rng.normals(m * k);
    const b = rng.normals(k * n);
    const want = matmulF64(a, b, m, n, k);
    const ga = ctx.upload("a", "scratch", a);
    const gb = ctx.upload("b", "scratch", b);
    const gc = await poisonedF32(ctx, "c", m * n);
    const batch = ctx.batch();
    await encodeMatmul(ctx, batch, { a: ga, b: gb, c: gc, m, n, k });
    batch.submit();
    const err = maxRelError(await ctx.readF32(gc), want);
    assert.ok(err <= TOL, `rel err ${err} (${chooseMatmulVariant(ctx)} chosen)`);
    for (const g of [ga, gb, gc]) g.destroy();
  },
});

gpuTest("the barrier-free blocked variant is chosen on a CPU adapter", async (ctx) => {
  const cpu = /llvmpipe|lavapipe|swiftshader/i.test(ctx.adapterKey) || ctx.adapter.fallback;
  assert.equal(chooseMatmulVariant(ctx), cpu ? "blocked" : "tiled");
  await Promise.resolve();
});

closeGpuAfterTests();
