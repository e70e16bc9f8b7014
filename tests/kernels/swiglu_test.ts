import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import { centralDifference, dotF64, swigluBackwardF64, swigluF64 } from "../reference/ops_f64.ts";
import { encodeSwiglu, encodeSwigluBackward } from "../../src/kernels/swiglu.ts";
import { Rng } from "../../src/util/random.ts";

const SIZES = [1, 7, 33 * 80 + 1, 216 * 33];
const TOL = 1e-5;

/** Gates spread over the regions that matter: near 0, moderate, and saturated (±20, ±100). */
function gates(rng: Rng, n: number): Float32Array {
  return rng.normals(n).map((v, i) => v * [1, 4, 20, 100][i % 4]);
}

Deno.test("swiglu float64 backward agrees with central differences of the forward", () => {
  const rng = new Rng(31);
  const n = 24;
  const gate = Float64Array.from(gates(rng, n).map((v) => v / 10));
  const up = Float64Array.from(rng.normals(n));
  const dout = rng.normals(n);
  const { dgate, dup } = swigluBackwardF64(gate, up, dout);
  for (let i = 0; i < n; i++) {
    const fdGate = centralDifference((g) => dotF64(dout, swigluF64(g, up)), gate, i);
    const fdUp = centralDifference((u) => dotF64(dout, swigluF64(gate, u)), up, i);
    assert.ok(Math.abs(fdGate - dgate[i]) <= 1e-7 * Math.max(1, Math.abs(dgate[i])), `dgate ${i}`);
    assert.ok(Math.abs(fdUp - dup[i]) <= 1e-7 * Math.max(1, Math.abs(dup[i])), `dup ${i}`);
  }
});

gpuTest("swiglu forward matches float64", async (ctx) => {
  const rng = new Rng(32);
  for (const n of SIZES) {
    const gate = gates(rng, n);
    const up = rng.normals(n);
    const gg = ctx.upload("gate", "scratch", gate);
    const gu = ctx.upload("up", "scratch", up);
    const out = await poisonedF32(ctx, "out", n);
    const batch = ctx.batch();
    await encodeSwiglu(ctx, batch, { gate: gg, up: gu, out, n });
    batch.submit();
    const got = await ctx.readF32(out);
    const want = swigluF64(gate, up);
    // Relative to each element too: saturated negative gates give tiny outputs.
    const err = maxRelError(got, want);
    assert.ok(err <= TOL, `n=${n}: ${err}`);
    for (let i = 0; i < n; i++) {
      const e = Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-30);
      assert.ok(e <= 1e-4 || Math.abs(want[i]) < 1e-30, `n=${n} [${i}] gate=${gate[i]}: ${e}`);
    }
    for (const b of [gg, gu, out]) b.destroy();
  }
});

gpuTest("swiglu backward matches float64", async (ctx) => {
  const rng = new Rng(33);
  for (const n of SIZES) {
    const gate = gates(rng, n);
    const up = rng.normals(n);
    const dout = rng.normals(n);
    const [gg, gu, gd] = [gate, up, dout].map((v) => ctx.upload("in", "scratch", v));
    const dgate = await poisonedF32(ctx, "dgate", n);
    const dup = await poisonedF32(ctx, "dup", n);
    const batch = ctx.batch();
    await encodeSwigluBackward(ctx, batch, { gate: gg, up: gu, dout: gd, dgate, dup, n });
    batch.submit();
    const want = swigluBackwardF64(gate, up, dout);
    const eg = maxRelError(await ctx.readF32(dgate), want.dgate);
    const eu = maxRelError(await ctx.readF32(dup), want.dup);
    assert.ok(eg <= TOL && eu <= TOL, `n=${n}: dgate ${eg}, dup ${eu}`);
    for (const b of [gg, gu, gd, dgate, dup]) b.destroy();
  }
});

closeGpuAfterTests();
