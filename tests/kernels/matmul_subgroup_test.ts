/**
 * The `subgroup` variants' own kernels on adapters with subgroups (lavapipe; ignored with the
 * reason elsewhere): the 4-bit GEMV kernels (m <= 16; backward in blocks of 8 rows) and the
 * dense split-reduction kernel for skinny products, against float64. The common shapes run in
 * matmul_test.ts and matmul_4bit_test.ts with every f32 variant; these add the GEMV row counts,
 * the backward row blocks, LoRA-like skinny products and Binding slices. f32 throughout, so the
 * f32 tolerance holds (a few f32 roundings of partial sums, ~1e-6 here).
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu, maxRelError, poisonedF32 } from "../support/gpu.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { encodeMatmul, matmulVariantAvailable } from "../../src/kernels/matmul.ts";
import { encodeMatmul4bit, encodeMatmul4bitT, GEMV_MAX_M } from "../../src/kernels/matmul_4bit.ts";
import { uploadQuantWeight } from "../../src/kernels/quant_weight.ts";
import { matmulF64 } from "../reference/ops_f64.ts";
import { dequantizeF64, matmulDyW, matmulXWt } from "../reference/dequant_f64.ts";
import { randomQuantWeight } from "../reference/random_quant_weight.ts";

const TOL = 1e-5;
const HAS_SUBGROUPS = matmulVariantAvailable(await gpu(), "subgroup");

function subgroupTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({
    name: HAS_SUBGROUPS ? name : `${name} (ignored: the adapter has no usable subgroups)`,
    ignore: !HAS_SUBGROUPS,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => fn(await gpu()),
  });
}

function randomF32(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
}

// Every GEMV row count class (1, 2, the 4/8/16 register heights, 9..16 = two backward row
// blocks, the largest); in aligned, in % 8 != 0, in < 8 words a lane; blocks straddling rows.
const GEMV_SHAPES = [
  { blocksize: 64, nIn: 80, nOut: 37, ms: [1, 2, 5] },
  { blocksize: 32, nIn: 77, nOut: 21, ms: [9, GEMV_MAX_M] },
  { blocksize: 64, nIn: 264, nOut: 9, ms: [3, 13] },
  { blocksize: 32, nIn: 12, nOut: 70, ms: [1, 8] },
];

subgroupTest(
  "matmul_4bit subgroup: GEMV forward and backward match float64 (m <= 16)",
  async (ctx) => {
    const rng = new Rng(1701);
    const failures: string[] = [];
    let combo = 0;
    for (const { blocksize, nIn, nOut, ms } of GEMV_SHAPES) {
      const quantType = combo % 2 ? "fp4" : "nf4";
      const doubleQuant = combo !== 2;
      combo++;
      const q = randomQuantWeight(rng, quantType, doubleQuant, blocksize, nOut, nIn);
      const wRef = dequantizeF64(q);
      const w = uploadQuantWeight(ctx, q, "w");
      for (const m of ms) {
        for (const accumulate of [false, true]) {
          for (const backward of [false, true]) {
            const [lenIn, lenOut] = backward ? [nOut, nIn] : [nIn, nOut];
            const act = randomF32(rng, m * lenIn);
            const prior = accumulate ? randomF32(rng, m * lenOut) : undefined;
            const src = ctx.upload("src", "scratch", act);
            const dst = prior
              ? ctx.upload("dst", "scratch", prior)
              : await poisonedF32(ctx, "dst", m * lenOut);
            const batch = ctx.batch();
            const variant = "subgroup";
            if (backward) {
              await encodeMatmul4bitT(ctx, batch, { dy: src, w, dx: dst, m, accumulate, variant });
            } else {await encodeMatmul4bit(ctx, batch, {
                x: src,
                w,
                y: dst,
                m,
                accumulate,
                variant,
              });}
            batch.submit();
            const exact = backward
              ? matmulDyW(act, wRef, m, nIn, nOut)
              : matmulXWt(act, wRef, m, nIn, nOut);
            const want = exact.map((v, i) => v + (prior ? prior[i] : 0));
            const err = maxRelError(await ctx.readF32(dst), want);
            if (!(err <= TOL)) {
              failures.push(
                `${quantType} dq=${doubleQuant} m=${m} in=${nIn} out=${nOut} ` +
                  `${backward ? "backward" : "forward"} acc=${accumulate}: rel err ${err}`,
              );
            }
            src.destroy();
            dst.destroy();
          }
        }
      }
      w.destroy();
    }
    assert.deepEqual(failures, []);
  },
);

subgroupTest("matmul_4bit subgroup: GEMV reads and writes Binding slices", async (ctx) => {
  const rng = new Rng(1702);
  const [m, nIn, nOut] = [3, 72, 40];
  const q = randomQuantWeight(rng, "nf4", true, 64, nOut, nIn);
  const wRef = dequantizeF64(q);
  const w = uploadQuantWeight(ctx, q, "w");
  const x = randomF32(rng, m * nIn);
  const dy = randomF32(rng, m * nOut);
  // Inputs in one buffer (X at 64, dY at 384 floats), outputs in another (Y at 64, dX at
  // 256): byte offsets multiples of 256, guards around every slice.
  const inputs = randomF32(rng, 384 + m * nOut + 64);
  inputs.set(x, 64);
  inputs.set(dy, 384);
  const off = [64, 256];
  const host = randomF32(rng, off[1] + m * nIn + 64);
  const inBuf = ctx.upload("inputs", "scratch", inputs);
  const buf = ctx.upload("outputs", "scratch", host);
  const slice = (on: typeof buf, at: number, n: number) => ({
    buffer: on,
    offset: at * 4,
    size: n * 4,
  });
  const batch = ctx.batch();
  const variant = "subgroup";
  await encodeMatmul4bit(ctx, batch, {
    x: slice(inBuf, 64, m * nIn),
    w,
    y: slice(buf, off[0], m * nOut),
    m,
    variant,
  });
  await encodeMatmul4bitT(ctx, batch, {
    dy: slice(inBuf, 384, m * nOut),
    w,
    dx: slice(buf, off[1], m * nIn),
    m,
    variant,
  });
  batch.submit();
  const got = await ctx.readF32(buf);
  const y = matmulXWt(x, wRef, m, nIn, nOut);
  const dx = matmulDyW(dy, wRef, m, nIn, nOut);
  assert.ok(maxRelError(got.subarray(off[0], off[0] + m * nOut), y) <= TOL, "forward");
  assert.ok(maxRelError(got.subarray(off[1], off[1] + m * nIn), dx) <= TOL, "backward");
  // Everything outside the two outputs is as uploaded.
  for (let i = 0; i < host.length; i++) {
    const inY = i >= off[0] && i < off[0] + m * nOut;
    const inDx = i >= off[1] && i < off[1] + m * nIn;
    if (!inY && !inDx) assert.ok(Object.is(got[i], host[i]), `element ${i} changed`);
  }
  buf.destroy();
  inBuf.destroy();
  w.destroy();
});

subgroupTest(
  "matmul subgroup: skinny LoRA-like products split over a subgroup match float64",
  async (ctx) => {
    const rng = new Rng(1703);
    // X A^T (rank 16 out of 300), dT^T X (rank rows, a long token reduction), rank 1, m = 1, and
    // the narrow side 32 (the split kernel's limit) with alpha and accumulate.
    const cases = [
      { m: 101, n: 16, k: 300, transA: false, transB: true, alpha: 1, accumulate: false },
      { m: 16, n: 203, k: 150, transA: true, transB: false, alpha: 0.5, accumulate: true },
      { m: 7, n: 1, k: 65, transA: false, transB: false, alpha: -2, accumulate: false },
      { m: 1, n: 45, k: 97, transA: true, transB: true, alpha: 1, accumulate: true },
      { m: 32, n: 77, k: 64, transA: false, transB: true, alpha: 1.25, accumulate: false },
    ];
    for (const c of cases) {
      const a = rng.normals(c.m * c.k);
      const b = rng.normals(c.k * c.n);
      const prior = c.accumulate ? rng.normals(c.m * c.n) : undefined;
      const ga = ctx.upload("a", "scratch", a);
      const gb = ctx.upload("b", "scratch", b);
      const gc = prior ? ctx.upload("c", "scratch", prior) : await poisonedF32(ctx, "c", c.m * c.n);
      const batch = ctx.batch();
      await encodeMatmul(ctx, batch, { ...c, a: ga, b: gb, c: gc, variant: "subgroup" });
      batch.submit();
      const want = matmulF64(a, b, c.m, c.n, c.k, c.transA, c.transB).map((v, i) =>
        c.alpha * v + (prior ? prior[i] : 0)
      );
      const err = maxRelError(await ctx.readF32(gc), want);
      assert.ok(err <= TOL, `${JSON.stringify(c)}: rel err ${err}`);
      for (const g of [ga, gb, gc]) g.destroy();
    }
  },
);

closeGpuAfterTests();
