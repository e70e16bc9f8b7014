import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import { centralDifference, dotF64, ropeF64, ropeInvFreqF64 } from "../reference/ops_f64.ts";
import { encodeRope, ropeInvFreq, type RopeScaling } from "../../src/kernels/rope.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";

const TOL = 1e-5;

function assertClose(got: ArrayLike<number>, want: number[], rel: number, what: string) {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    assert.ok(
      Math.abs(got[i] - want[i]) <= rel * Math.abs(want[i]),
      `${what}[${i}]: ${got[i]} vs ${want[i]}`,
    );
  }
}

Deno.test("ropeInvFreq: default, linear and llama3 against hand-computed values", () => {
  // theta 10000, head_dim 8: inv_freq[i] = 10000^(-2i/8) = 10^-i.
  assertClose(ropeInvFreq(8, 10000), [1, 0.1, 0.01, 0.001], 1e-7, "default");
  // linear, factor 4: every frequency divided by 4.
  assertClose(
    ropeInvFreq(8, 10000, { type: "linear", factor: 4 }),
    [0.25, 0.025, 0.0025, 0.00025],
    1e-7,
    "linear",
  );
  // llama3, factor 8, low 1, high 4, original 1024: wavelengths 2π/inv = 6.28, 62.8, 628.3, 6283.
  // Below 1024/4 = 256: kept (1, 0.1). Above 1024/1: divided by 8 (0.001/8 = 0.000125).
  // 628.3 is between: smooth = (1024/628.3185 - 1)/(4 - 1) = 0.2099155,
  // inv = 0.01 · ((1 - smooth)/8 + smooth) = 0.003086761.
  const llama3: RopeScaling = {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 1024,
  };
  assertClose(ropeInvFreq(8, 10000, llama3), [1, 0.1, 0.003086761, 0.000125], 1e-6, "llama3");
});

Deno.test("ropeInvFreq matches the float64 formula for Llama 2/3 shaped configs", () => {
  const configs: Array<[number, number, RopeScaling | undefined]> = [
    [128, 10000, undefined],
    [64, 500000, { type: "linear", factor: 2 }],
    [128, 500000, {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    }],
  ];
  // float32 steps (as torch computes them) against float64: a few ulps apart.
  for (const [d, theta, s] of configs) {
    const got = ropeInvFreq(d, theta, s);
    assertClose(got, Array.from(ropeInvFreqF64(d, theta, s)), 1e-6, `${d}/${theta}/${s?.type}`);
  }
  assert.throws(() => ropeInvFreq(7, 10000), /head_dim must be a positive even integer/);
});

Deno.test("rope float64: the backward (gradient of <g, rope(x)>) is the inverse rotation of g", () => {
  const rng = new Rng(11);
  const [rows, heads, d] = [3, 2, 6];
  const inv = ropeInvFreq(d, 10000);
  const pos = [0, 5, 1234];
  const x = Float64Array.from(rng.normals(rows * heads * d));
  const g = rng.normals(rows * heads * d);
  const grad = ropeF64(g, pos, inv, rows, heads, d, true);
  const loss = (v: Float64Array) => dotF64(g, ropeF64(v, pos, inv, rows, heads, d));
  for (let i = 0; i < x.length; i += 5) {
    const fd = centralDifference(loss, x, i);
    assert.ok(Math.abs(fd - grad[i]) <= 1e-8, `${i}: ${fd} vs ${grad[i]}`);
  }
});

async function runRope(
  ctx: GpuContext,
  x: Float32Array,
  positions: number[],
  inv: Float32Array,
  rows: number,
  heads: number,
  headDim: number,
  passes: boolean[], // one dispatch per entry: inverse or not
): Promise<Float32Array> {
  const gx = await poisonedF32(ctx, "x", x.length);
  ctx.write(gx, x);
  const pos = ctx.upload("pos", "scratch", new Uint32Array(positions));
  const gi = ctx.upload("inv", "scratch", inv);
  const batch = ctx.batch();
  for (const inverse of passes) {
    await encodeRope(ctx, batch, {
      x: gx,
      positions: pos,
      invFreq: gi,
      rows,
      heads,
      headDim,
      inverse,
    });
  }
  batch.submit();
  const out = await ctx.readF32(gx);
  for (const b of [gx, pos, gi]) b.destroy();
  return out;
}

const SHAPES: Array<[number, number, number]> = [];
for (const rows of [1, 7, 33]) {
  for (const [heads, d] of [[1, 8], [3, 20], [2, 64]]) SHAPES.push([rows, heads, d]);
}

gpuTest(
  "rope forward and inverse match float64 at odd shapes and positions < 4096",
  async (ctx) => {
    const rng = new Rng(12);
    const llama3: RopeScaling = {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    };
    for (const [rows, heads, d] of SHAPES) {
      for (const inv of [ropeInvFreq(d, 10000), ropeInvFreq(d, 500000, llama3)]) {
        const x = rng.normals(rows * heads * d);
        const pos = Array.from({ length: rows }, () => rng.int(4096));
        for (const inverse of [false, true]) {
          const got = await runRope(ctx, x, pos, inv, rows, heads, d, [inverse]);
          const err = maxRelError(got, ropeF64(x, pos, inv, rows, heads, d, inverse));
          assert.ok(err <= TOL, `rows=${rows} heads=${heads} d=${d} inverse=${inverse}: ${err}`);
        }
      }
    }
  },
);

gpuTest("rope: inverse(rope(x)) == x, and position 0 is the identity", async (ctx) => {
  const rng = new Rng(13);
  for (const [rows, heads, d] of SHAPES) {
    const inv = ropeInvFreq(d, 10000);
    const x = rng.normals(rows * heads * d);
    const pos = Array.from({ length: rows }, () => rng.int(100000));
    const back = await runRope(ctx, x, pos, inv, rows, heads, d, [false, true]);
    const err = maxRelError(back, x);
    assert.ok(err <= TOL, `rows=${rows} heads=${heads} d=${d}: ${err}`);
    const zero = await runRope(ctx, x, new Array(rows).fill(0), inv, rows, heads, d, [false]);
    assert.deepEqual(Array.from(zero), Array.from(x));
  }
});

gpuTest("rope keeps accuracy at long-context positions (up to 131071)", async (ctx) => {
  const rng = new Rng(14);
  const [rows, heads, d] = [33, 2, 64];
  const inv = ropeInvFreq(d, 500000);
  const x = rng.normals(rows * heads * d);
  const pos = Array.from({ length: rows }, (_, r) => (r === 0 ? 131071 : rng.int(131072)));
  const got = await runRope(ctx, x, pos, inv, rows, heads, d, [false]);
  const err = maxRelError(got, ropeF64(x, pos, inv, rows, heads, d));
  assert.ok(err <= TOL, `${err}`);
});

closeGpuAfterTests();
