/**
 * The AdamW step, both variants, against the float64 reference (3 steps, with and without
 * weight decay and clip scale), paged against whole, `vec4` against `scalar` to the bit at every
 * length mod 4 and page split, and a grid split into two dimensions.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError } from "../support/gpu.ts";
import {
  ADAMW_VARIANTS,
  type AdamWArgs,
  type AdamWVariant,
  encodeAdamW,
} from "../../src/kernels/adamw.ts";
import { KernelLadder } from "../../src/kernels/ladder.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { type AdamWRefHyper, adamwStepF64 } from "../reference/attn_ce_f64.ts";

const HP: AdamWRefHyper = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };

interface State {
  p: Float32Array;
  grads: Float32Array[];
}

function randomState(n: number, steps: number, seed: number): State {
  const rng = new Rng(seed);
  return {
    p: rng.normals(n, 0.5),
    grads: Array.from({ length: steps }, () => rng.normals(n, 0.1)),
  };
}

/** Runs `steps` steps on the GPU with the state cut into pages of `page` elements (0: whole). */
async function runGpu(
  ctx: GpuContext,
  st: State,
  hp: AdamWRefHyper,
  opts: {
    page?: number;
    gradScale?: number;
    variant?: AdamWVariant;
    maxWorkgroupsPerDimension?: number;
  } = {},
): Promise<{ p: Float32Array; m: Float32Array; v: Float32Array }> {
  const n = st.p.length;
  const param = ctx.upload("param", "lora", st.p);
  const grad = ctx.createBuffer({ label: "grad", category: "gradients", size: n * 4 });
  const m = ctx.upload("m", "optimizer", new Float32Array(n));
  const v = ctx.upload("v", "optimizer", new Float32Array(n));
  const scale = opts.gradScale === undefined
    ? undefined
    : ctx.upload("norm", "scratch", new Float32Array([123, opts.gradScale]));
  const page = opts.page ?? n;
  for (let t = 1; t <= st.grads.length; t++) {
    ctx.write(grad, st.grads[t - 1]);
    const batch = ctx.batch();
    for (let start = 0; start < n; start += page) {
      const count = Math.min(page, n - start);
      const slice = (buffer: typeof param) => ({ buffer, offset: start * 4, size: count * 4 });
      const args: AdamWArgs = {
        param: slice(param),
        grad: slice(grad),
        m: slice(m),
        v: slice(v),
        n: count,
        lr: hp.lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        eps: hp.eps,
        weightDecay: hp.weightDecay,
        step: t,
        variant: opts.variant,
        maxWorkgroupsPerDimension: opts.maxWorkgroupsPerDimension,
      };
      if (scale) Object.assign(args, { gradScale: scale, gradScaleIndex: 1 });
      await encodeAdamW(ctx, batch, args);
    }
    batch.submit();
  }
  const out = { p: await ctx.readF32(param), m: await ctx.readF32(m), v: await ctx.readF32(v) };
  for (const b of [param, grad, m, v, scale]) b?.destroy();
  return out;
}

/** bitsandbytes receives its hyperparameters as C floats: the reference starts from those. */
function runRef(st: State, hp64: AdamWRefHyper, gradScale = 1) {
  const f = Math.fround;
  const hp = {
    lr: f(hp64.lr),
    beta1: f(hp64.beta1),
    beta2: f(hp64.beta2),
    eps: f(hp64.eps),
    weightDecay: f(hp64.weightDecay),
  };
  gradScale = f(gradScale);
  const n = st.p.length;
  const p = Float64Array.from(st.p);
  const m = new Float64Array(n);
  const v = new Float64Array(n);
  st.grads.forEach((g, i) => adamwStepF64(p, g, m, v, i + 1, hp, gradScale));
  return { p, m, v };
}

for (const variant of ADAMW_VARIANTS) {
  gpuTest(
    `adamw: 3 steps with weight decay match the float64 reference (${variant})`,
    async (ctx) => {
      const st = randomState(1001, 3, 1);
      const gpu = await runGpu(ctx, st, HP, { variant });
      const ref = runRef(st, HP);
      assert.ok(maxRelError(gpu.p, ref.p) < 1e-5, `p ${maxRelError(gpu.p, ref.p)}`);
      assert.ok(maxRelError(gpu.m, ref.m) < 1e-5, `m ${maxRelError(gpu.m, ref.m)}`);
      assert.ok(maxRelError(gpu.v, ref.v) < 1e-5, `v ${maxRelError(gpu.v, ref.v)}`);
      // The step moved the parameters by far more than the tolerance.
      assert.ok(maxRelError(st.p, ref.p) > 1e-3);
    },
  );

  gpuTest(
    `adamw: without weight decay, and with a clip scale from a buffer (${variant})`,
    async (ctx) => {
      const st = randomState(517, 3, 2);
      const hp = { ...HP, weightDecay: 0, lr: 2e-4 };
      const gpu = await runGpu(ctx, st, hp, { gradScale: 0.37, variant });
      const ref = runRef(st, hp, 0.37);
      assert.ok(maxRelError(gpu.p, ref.p) < 1e-5, `p ${maxRelError(gpu.p, ref.p)}`);
      assert.ok(maxRelError(gpu.m, ref.m) < 1e-5, `m ${maxRelError(gpu.m, ref.m)}`);
      assert.ok(maxRelError(gpu.v, ref.v) < 1e-5, `v ${maxRelError(gpu.v, ref.v)}`);
      const unscaled = runRef(st, hp);
      assert.ok(maxRelError(gpu.m, unscaled.m) > 0.5, "the scale was applied");
    },
  );

  gpuTest(
    `adamw: paged in 256-element slices gives the same bits as one pass (${variant})`,
    async (ctx) => {
      const st = randomState(1001, 3, 3);
      const whole = await runGpu(ctx, st, HP, { gradScale: 0.8, variant });
      const paged = await runGpu(ctx, st, HP, { page: 256, gradScale: 0.8, variant });
      assert.deepEqual(paged.p, whole.p);
      assert.deepEqual(paged.m, whole.m);
      assert.deepEqual(paged.v, whole.v);
    },
  );
}

// The same f32 operations in the same order: vec4 must give the scalar variant's bits, at every
// length mod 4 (3 has no whole vec4), with pages whose last one ends mid-vec4, with and without
// the clip scale and decay.
gpuTest("adamw: vec4 gives the same bits as scalar", async (ctx) => {
  for (const [n, page] of [[1001, 0], [1026, 0], [4099, 192], [1024, 256], [3, 0], [1001, 192]]) {
    const st = randomState(n, 3, 10 + n);
    for (const [hp, gradScale] of [[HP, 0.6], [{ ...HP, weightDecay: 0 }, undefined]] as const) {
      const opts = { page: page || undefined, gradScale };
      const scalar = await runGpu(ctx, st, hp, { ...opts, variant: "scalar" });
      const vec4 = await runGpu(ctx, st, hp, { ...opts, variant: "vec4" });
      assert.deepEqual(vec4, scalar, `n=${n} page=${page} scale=${gradScale}`);
    }
  }
});

// 5123 elements: 21 scalar workgroups in 11 x 2, 5 vec4 workgroups in 3 x 2 (and a scalar tail).
gpuTest("adamw: a grid split into two dimensions gives the same bits", async (ctx) => {
  const st = randomState(5123, 2, 20);
  for (const variant of ADAMW_VARIANTS) {
    const whole = await runGpu(ctx, st, HP, { variant, gradScale: 0.9 });
    const split = await runGpu(ctx, st, HP, {
      variant,
      gradScale: 0.9,
      maxWorkgroupsPerDimension: 2,
    });
    assert.deepEqual(split, whole, variant);
    const ref = runRef(st, HP, 0.9);
    assert.ok(maxRelError(split.p, ref.p) < 1e-5, `${variant}: p ${maxRelError(split.p, ref.p)}`);
  }
});

gpuTest("the ladder times both adamw variants", async (ctx) => {
  const ladder = new KernelLadder({ cachePath: null, overrides: "", mode: "time", log: () => {} });
  const d = await ladder.decide(ctx, "adamw");
  assert.equal(d.source, "timed");
  for (const v of ADAMW_VARIANTS) assert.ok((d.ms?.[v] ?? 0) > 0, `${v}: ${d.ms?.[v]}`);
});

gpuTest("adamw: bad arguments name the field", async (ctx) => {
  const b = ctx.createBuffer({ label: "small", category: "scratch", size: 40 });
  const args = { param: b, grad: b, m: b, v: b, n: 10, lr: 1e-3, step: 1 };
  const batch = ctx.batch();
  await assert.rejects(encodeAdamW(ctx, batch, { ...args, step: 0 }), /step must be/);
  await assert.rejects(
    encodeAdamW(ctx, batch, { ...args, n: 11 }),
    /adamw: param: expected at least 11 elements of 4 bytes \(44 bytes\), got 40 bytes \(buffer small\)/,
  );
  await assert.rejects(encodeAdamW(ctx, batch, { ...args, beta2: 1 }), /beta2/);
  b.destroy();
});

closeGpuAfterTests();
