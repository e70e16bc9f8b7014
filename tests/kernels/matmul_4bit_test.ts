/**
 * The 4-bit matmul's f32 variants (regblock, tiled, and subgroup where the adapter has
 * subgroups) against float64 dequantization for NF4/FP4 with and without double quant, odd and
 * unaligned shapes, accumulate mode; the f16 variants are checked in matmul_f16_test.ts and
 * matmul_subgroup_matrix_test.ts.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { dequantizeWeight, quantizeWeight } from "../../src/quant/quant_state.ts";
import { uploadQuantWeight } from "../../src/kernels/quant_weight.ts";
import {
  availableMatmul4bitVariants,
  chooseMatmul4bitVariant,
  encodeMatmul4bit,
  encodeMatmul4bitT,
  type Matmul4bitVariant,
  MATMUL_4BIT_F32_VARIANTS,
  MATMUL_4BIT_VARIANTS,
} from "../../src/kernels/matmul_4bit.ts";
import { availableVariants, KernelLadder, ladderKernels } from "../../src/kernels/ladder.ts";
import {
  dequantizeF64,
  FP4_TABLE,
  matmulDyW,
  matmulXWt,
  NF4_TABLE,
  signedDynamicMap,
} from "../reference/dequant_f64.ts";
import { randomQuantWeight } from "../reference/random_quant_weight.ts";

// f32 weights and activations: a few f32 roundings of partial sums (~1e-6 here).
const TOLERANCE = 1e-5;
/** The f32 variants this adapter can run. */
const F32_VARIANTS = availableMatmul4bitVariants(await gpu()).filter((v) =>
  MATMUL_4BIT_F32_VARIANTS.includes(v)
);

function randomF32(rng: Rng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.uniform(-1, 1);
  return a;
}

interface Case {
  label: string;
  out: GpuBuffer;
  expected: Float64Array;
}

/** Output buffer: NaN-poisoned, or (accumulate) random values that the kernel must add to. */
async function outputBuffer(
  ctx: GpuContext,
  rng: Rng,
  count: number,
  accumulate: boolean,
  label: string,
): Promise<{ buf: GpuBuffer; prior?: Float32Array }> {
  if (!accumulate) return { buf: await poisonedF32(ctx, label, count) };
  const prior = randomF32(rng, count);
  return { buf: ctx.upload(label, "scratch", prior), prior };
}

async function runAll(
  ctx: GpuContext,
  seed: number,
  quantType: "nf4" | "fp4",
  doubleQuant: boolean,
  variant: Matmul4bitVariant,
  shapes: Array<{ blocksize: number; m: number[]; nIn: number; nOut: number }>,
): Promise<void> {
  const rng = new Rng(seed);
  const cases: Case[] = [];
  const owned: Array<{ destroy(): void }> = [];
  const batch = ctx.batch("matmul_4bit_test");
  for (const { blocksize, m: ms, nIn, nOut } of shapes) {
    const q = randomQuantWeight(rng, quantType, doubleQuant, blocksize, nOut, nIn);
    const wRef = dequantizeF64(q);
    const w = uploadQuantWeight(ctx, q, `w${nOut}x${nIn}`);
    owned.push(w);
    for (const m of ms) {
      for (const accumulate of [false, true]) {
        const tag = `${quantType} dq=${doubleQuant} bs=${blocksize} ${variant} m=${m} ` +
          `in=${nIn} out=${nOut} acc=${accumulate}`;
        // forward
        const xHost = randomF32(rng, m * nIn);
        const x = ctx.upload("x", "scratch", xHost);
        const y = await outputBuffer(ctx, rng, m * nOut, accumulate, "y");
        await encodeMatmul4bit(ctx, batch, { x, w, y: y.buf, m, accumulate, variant });
        const yRef = matmulXWt(xHost, wRef, m, nIn, nOut);
        if (y.prior) { for (let i = 0; i < yRef.length; i++) yRef[i] += y.prior[i]; }
        cases.push({ label: `forward ${tag}`, out: y.buf, expected: yRef });
        // backward
        const dyHost = randomF32(rng, m * nOut);
        const dy = ctx.upload("dy", "scratch", dyHost);
        const dx = await outputBuffer(ctx, rng, m * nIn, accumulate, "dx");
        await encodeMatmul4bitT(ctx, batch, { dy, w, dx: dx.buf, m, accumulate, variant });
        const dxRef = matmulDyW(dyHost, wRef, m, nIn, nOut);
        if (dx.prior) { for (let i = 0; i < dxRef.length; i++) dxRef[i] += dx.prior[i]; }
        cases.push({ label: `backward ${tag}`, out: dx.buf, expected: dxRef });
        owned.push(x, dy, y.buf, dx.buf);
      }
    }
  }
  batch.submit();
  const failures: string[] = [];
  for (const c of cases) {
    const got = await ctx.readF32(c.out);
    const err = maxRelError(got, c.expected);
    if (!(err < TOLERANCE)) failures.push(`${c.label}: rel err ${err}`);
  }
  for (const o of owned) o.destroy();
  assert.deepEqual(failures, []);
}

// m in {1, 3, 17}, in in {80, 200}, out in {40, 216}; with in = 80 and blocksize 64 (or
// in = 200, blocksize 128) blocks straddle rows.
const SHAPES = [64, 128].flatMap((blocksize) => [
  { blocksize, m: [1, 3, 17], nIn: 80, nOut: 216 },
  { blocksize, m: [1, 17], nIn: 200, nOut: 40 },
  { blocksize, m: [3], nIn: 200, nOut: 216 },
  { blocksize, m: [3], nIn: 80, nOut: 40 },
]);
// Rows not made of whole packed words (in % 8 != 0), and in % 16 == 8.
const UNALIGNED = [
  { blocksize: 32, m: [5], nIn: 77, nOut: 45 },
  { blocksize: 64, m: [2], nIn: 84, nOut: 9 },
  { blocksize: 32, m: [6], nIn: 24, nOut: 70 },
];

let seed = 1;
for (const variant of F32_VARIANTS) {
  for (const quantType of ["nf4", "fp4"] as const) {
    for (const doubleQuant of [false, true]) {
      const s = seed++;
      gpuTest(
        `matmul_4bit ${variant} ${quantType} dq=${doubleQuant}: forward and backward match f64`,
        (ctx) => runAll(ctx, s, quantType, doubleQuant, variant, SHAPES),
      );
    }
  }
  gpuTest(`matmul_4bit ${variant}: odd in (not whole packed words) matches f64`, async (ctx) => {
    await runAll(ctx, 100, "nf4", true, variant, UNALIGNED);
    await runAll(ctx, 101, "fp4", false, variant, UNALIGNED);
  });
}

gpuTest("matmul_4bit: a larger m crosses several register and workgroup tiles", async (ctx) => {
  for (const variant of F32_VARIANTS) {
    await runAll(ctx, 200, "nf4", true, variant, [
      { blocksize: 64, m: [70], nIn: 136, nOut: 130 },
    ]);
  }
});

// m >= 32 takes the regblock variant's wide kernels (forward 32 rows x 16 outputs, backward 16
// rows x 32 columns per invocation): m, out and in not multiples of the tiles, in < 32 (the
// backward tile past in), blocks straddling rows (in = 40 with blocksize 64, in = 24 with 32),
// and in % 8 != 0 (which falls back to the scalar kernels).
const WIDE_SHAPES = [
  { blocksize: 64, m: [33], nIn: 40, nOut: 21 },
  { blocksize: 32, m: [47], nIn: 24, nOut: 35 },
  { blocksize: 64, m: [32], nIn: 72, nOut: 16 },
  { blocksize: 32, m: [33], nIn: 21, nOut: 19 },
];
let wideSeed = 400;
for (const quantType of ["nf4", "fp4"] as const) {
  for (const doubleQuant of [false, true]) {
    const s = wideSeed++;
    gpuTest(
      `matmul_4bit ${quantType} dq=${doubleQuant}: m >= 32 (wide register tiles) matches f64`,
      async (ctx) => {
        for (const variant of F32_VARIANTS) {
          await runAll(ctx, s, quantType, doubleQuant, variant, WIDE_SHAPES);
        }
      },
    );
  }
}

gpuTest(
  "matmul_4bit: a weight quantized by src/quant multiplies as its dequantization",
  async (ctx) => {
    const rng = new Rng(300);
    const [nOut, nIn, m] = [24, 96, 5];
    const wHost = rng.normals(nOut * nIn, 0.05);
    for (const quantType of ["nf4", "fp4"] as const) {
      for (const doubleQuant of [false, true]) {
        const q = quantizeWeight(wHost, [nOut, nIn], {
          quantType,
          blocksize: 64,
          doubleQuant,
          dtype: "bfloat16",
        });
        const wRef = dequantizeWeight(q);
        const w = uploadQuantWeight(ctx, q, "q_proj");
        const xHost = randomF32(rng, m * nIn);
        const x = ctx.upload("x", "scratch", xHost);
        for (const variant of F32_VARIANTS) {
          const y = await poisonedF32(ctx, "y", m * nOut);
          const batch = ctx.batch();
          await encodeMatmul4bit(ctx, batch, { x, w, y, m, variant });
          batch.submit();
          const err = maxRelError(await ctx.readF32(y), matmulXWt(xHost, wRef, m, nIn, nOut));
          assert.ok(err < TOLERANCE, `${quantType} dq=${doubleQuant} ${variant}: rel err ${err}`);
          y.destroy();
        }
        x.destroy();
        w.destroy();
      }
    }
  },
);

gpuTest(
  "matmul_4bit: a software adapter's prior is regblock; forced and chosen are variants",
  async (ctx) => {
    // Which variant wins a timing race is never asserted (tests/kernels/ladder_test.ts checks that
    // a timed choice is the fastest the ladder measured); the prior and a forced choice are fixed.
    const quiet = { cachePath: null, log: () => {} };
    const prior = await new KernelLadder({ ...quiet, overrides: "", mode: "prior" })
      .variant(ctx, "matmul_4bit");
    assert.ok(MATMUL_4BIT_VARIANTS.includes(prior as Matmul4bitVariant));
    if (ctx.isSoftware) assert.equal(prior, "regblock");
    const ladderKernel = ladderKernels().find((k) => k.name === "matmul_4bit")!;
    for (const v of availableVariants(ctx, ladderKernel)) {
      const forced = new KernelLadder({ ...quiet, overrides: `matmul_4bit=${v}`, mode: "time" });
      assert.equal(await forced.variant(ctx, "matmul_4bit"), v);
      assert.equal(forced.timings, 0);
    }
    assert.ok(MATMUL_4BIT_VARIANTS.includes(chooseMatmul4bitVariant(ctx)));
  },
);

gpuTest("matmul_4bit: a too-small output binding is refused with the tensor named", async (ctx) => {
  const rng = new Rng(7);
  const w = uploadQuantWeight(ctx, randomQuantWeight(rng, "nf4", false, 64, 8, 16), "q_proj");
  const x = ctx.createBuffer({ label: "x", category: "scratch", size: 3 * 16 * 4 });
  const y = ctx.createBuffer({ label: "y", category: "scratch", size: 3 * 7 * 4 });
  await assert.rejects(
    encodeMatmul4bit(ctx, ctx.batch(), { x, w, y, m: 3 }),
    /encodeMatmul4bit: q_proj: y: expected at least 24 elements of 4 bytes \(96 bytes\) for m=3, W \[8, 16\], got 84 bytes \(buffer y\)/,
  );
  w.destroy();
  x.destroy();
  y.destroy();
});

Deno.test("dequant reference tables match REFERENCE §2 and §4 checks", () => {
  const map = signedDynamicMap();
  assert.equal(map[0], Math.fround(-0.99296874));
  assert.equal(map[127], 0);
  assert.equal(map[254], Math.fround(0.99296874));
  assert.equal(map[255], 1);
  assert.equal(FP4_TABLE[3], 1);
  assert.equal(FP4_TABLE[8 + 2], Math.fround(-8 / 12));
  assert.equal(NF4_TABLE[7], 0);
});

closeGpuAfterTests();
