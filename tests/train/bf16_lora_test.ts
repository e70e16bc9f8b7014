/**
 * bf16 LoRA storage (EngineOptions.loraStorage "bf16"): the GPU computes with a bf16 copy of the
 * adapter, the f32 master is paged with AdamW. Checked against independent references:
 * - gradients vs the float64 reference (tests/reference/llama_f64.ts) evaluated at the
 *   bf16-rounded parameters (rounded here by tests/reference/bf16_round.ts), with and without
 *   checkpointing (the window is re-expanded for the recompute and the backward);
 * - one AdamW step vs the float64 AdamW reference from the same gradients: the master after the
 *   step, and the GPU's bf16 copy == the master rounded, bit for bit;
 * - training: the loss falls; a checkpoint saved and resumed gives the master of an
 *   uninterrupted run bit for bit; the saved adapter holds the master's f32 values;
 * - the ledger's peaks == estimateMemory in bf16 mode, to the byte for lora and optimizer;
 * - the refusal of a budget that would not page the master.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, refConfig, relErr, TINY, tinySetup } from "../model/setup.ts";
import { forwardBackward, type RefLora } from "../reference/llama_f64.ts";
import { adamwStep, newAdamWState } from "../reference/adamw_f64.ts";
import { bf16BitsOf, roundArrayToBf16 } from "../reference/bf16_round.ts";
import { type EngineOptions, TrainingEngine } from "../../src/train/engine.ts";
import { estimateMemory } from "../../src/train/estimate.ts";
import { loadCheckpoint, saveCheckpoint } from "../../src/train/checkpoint.ts";
import { loadAdapter } from "../../src/train/peft.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import type { LoraSpec } from "../../src/model/lora.ts";
import type { GpuContext } from "../../src/gpu/context.ts";

const SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

/** Under the tiny model's master + m + v (3 x 4 x totalFloats): paged, 64-float pages. */
const BUDGET = 3072;

function make(ctx: GpuContext, seed: number, over: Partial<EngineOptions> = {}, spec = SPEC) {
  const setup = tinySetup(ctx, TINY, seed, spec);
  let engine: TrainingEngine;
  try {
    engine = new TrainingEngine(ctx, setup.model, {
      lora: spec,
      maxShape: { batch: 2, seq: 17 },
      gradientCheckpointing: false,
      seed: 99,
      maxGradNorm: 0,
      optimizerGpuBudgetBytes: BUDGET,
      adapter: setup.adapter,
      loraStorage: "bf16",
      ...over,
    });
  } catch (e) {
    setup.model.destroy(); // a refused engine (the refusal test) leaves no model behind
    throw e;
  }
  return {
    setup,
    engine,
    destroy: () => {
      engine.destroy();
      setup.model.destroy();
    },
  };
}

/** The reference LoRA tensors rounded to bf16, as the compute copy holds them. */
function roundedLora(lora: RefLora): RefLora {
  const round = (m: Map<string, Float64Array>) =>
    new Map([...m].map(([k, v]) => [k, Float64Array.from(roundArrayToBf16(Float32Array.from(v)))]));
  return { ...lora, A: round(lora.A), B: round(lora.B) };
}

for (const checkpointing of [false, true]) {
  gpuTest(
    `bf16 storage: LoRA gradients match float64 at the bf16-rounded parameters ` +
      `(checkpointing ${checkpointing})`,
    async (ctx) => {
      // f32 checkpoints: the f16 ones round the recomputed inputs (a separate test's concern).
      const { setup, engine, destroy } = make(ctx, 5, {
        gradientCheckpointing: checkpointing,
        activationPrecision: "f32",
      });
      try {
        assert.equal(engine.storage, "bf16");
        const batch = randomBatch(TINY.vocab, [17, 11], 7);
        const got = await engine.accumulateGradients([batch]);
        const lora = roundedLora(setup.refLora);
        // The rounding moved the parameters: a reference at the f32 values would be another one.
        assert.ok(relErr(lora.A.get("0.q")!, setup.refLora.A.get("0.q")!) > 1e-4);
        const ref = forwardBackward(refConfig(TINY), setup.refWeights, lora, batch);
        // The GPU runs f32 arithmetic on exactly the rounded values, so the f32 gradient check's
        // bounds hold unchanged (tests/model/gradcheck_test.ts: loss 1e-5, gradients 1e-4).
        assert.ok(
          Math.abs(got.loss - ref.loss) / ref.loss <= 1e-5,
          `loss ${got.loss} vs ${ref.loss}`,
        );
        const grads = await engine.readGradients();
        let worst = 0;
        for (const s of engine.layout.slots) {
          const key = `${s.layer}.${s.module}`;
          const want = (s.kind === "A" ? ref.gradA : ref.gradB).get(key)!;
          const e = relErr(grads.subarray(s.offset, s.offset + s.numel), want);
          assert.ok(e <= 1e-4, `${key}.${s.kind}: relative error ${e}`);
          worst = Math.max(worst, e);
        }
        console.log(`checkpointing ${checkpointing}: worst gradient relative error ${worst}`);
        // Evaluation runs the same forward through the window: the same loss per token.
        const ev = await engine.evaluate(batch);
        assert.equal(ev.tokens, ref.count);
        const evLoss = ev.lossSum / ev.tokens;
        assert.ok(Math.abs(evLoss - ref.loss) / ref.loss <= 1e-5, `eval ${evLoss} vs ${ref.loss}`);
      } finally {
        destroy();
      }
    },
  );
}

gpuTest(
  "bf16 storage: one AdamW step matches float64; the GPU copy is the master rounded",
  async (ctx) => {
    const { setup, engine, destroy } = make(ctx, 6, { adamw: { weightDecay: 0.01 } });
    try {
      const n = engine.layout.totalFloats;
      const master0 = setup.adapter.slice();
      // Before any step the compute copy is the initial adapter rounded (host packing).
      const copy0 = await engine.readComputeCopy();
      for (let i = 0; i < n; i++) {
        assert.equal(copy0[i], roundArrayToBf16(master0.subarray(i, i + 1))[0], `initial [${i}]`);
      }
      const lr = 2e-3;
      const step = await engine.trainStep([randomBatch(TINY.vocab, [13, 17], 8)], lr);
      // Master, m and v, in and out once each.
      assert.equal(step.pagedInBytes, 3 * n * 4);
      assert.equal(step.pagedOutBytes, 3 * n * 4);
      const grads = await engine.readGradients();
      const p = Float64Array.from(master0);
      adamwStep(p, Float64Array.from(grads), newAdamWState(n), { lr, weightDecay: 0.01 });
      const master = await engine.readAdapter();
      // f32 vs float64 of one update: a few f32 ulps of the parameter plus of the step (lr-sized);
      // 1e-6 relative to the largest parameter is ~10 ulps there and far under lr = 2e-3.
      let scale = 0;
      for (const v of p) scale = Math.max(scale, Math.abs(v));
      let worst = 0;
      for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(master[i] - p[i]));
      assert.ok(worst <= 1e-6 * scale, `master off by ${worst} (scale ${scale})`);
      // Every parameter that had a gradient moved by about lr (Adam's first step is ~sign(g)).
      let moved = 0;
      for (let i = 0; i < n; i++) if (grads[i] !== 0 && master[i] !== master0[i]) moved++;
      assert.ok(moved > n / 2, `only ${moved} of ${n} parameters moved`);
      const copy = await engine.readComputeCopy();
      const bits = new Uint32Array(copy.buffer);
      for (let i = 0; i < n; i++) {
        const want = bf16BitsOf(master[i]);
        if (bits[i] !== want * 65536) {
          assert.fail(
            `[${i}] copy 0x${bits[i].toString(16)}, master ${master[i]} rounds to 0x${
              want.toString(16)
            }`,
          );
        }
      }
    } finally {
      destroy();
    }
  },
);

gpuTest("bf16 storage: split submits give the same master and copy bits", async (ctx) => {
  const one = make(ctx, 7, { maxGradNorm: 1 });
  const split = make(ctx, 7, { maxGradNorm: 1, splitSubmits: true });
  try {
    for (let s = 0; s < 3; s++) {
      const batch = randomBatch(TINY.vocab, [15, 9], 30 + s);
      const a = await one.engine.trainStep([batch], 3e-3);
      const b = await split.engine.trainStep([batch], 3e-3);
      assert.equal(a.loss, b.loss);
    }
    const x = await one.engine.readAdapter();
    const y = await split.engine.readAdapter();
    assert.deepEqual(new Uint32Array(y.buffer), new Uint32Array(x.buffer));
    const cx = await one.engine.readComputeCopy();
    const cy = await split.engine.readComputeCopy();
    assert.deepEqual(new Uint32Array(cy.buffer), new Uint32Array(cx.buffer));
  } finally {
    one.destroy();
    split.destroy();
  }
});

gpuTest(
  "bf16 storage: training lowers the loss; resume from a checkpoint is bit-exact",
  async (ctx) => {
    const spec: LoraSpec = { ...SPEC, r: 8, dropout: 0.1 };
    const over = { gradientCheckpointing: true, maxGradNorm: 1, maxShape: { batch: 4, seq: 16 } };
    const whole = make(ctx, 21, over, spec);
    const first = make(ctx, 21, over, spec);
    const dir = await Deno.makeTempDir({ prefix: "qlorad_bf16_" });
    try {
      // A learnable pattern: each sequence counts upward.
      const tokens = [0, 1, 2, 3].map((s) =>
        Array.from({ length: 16 }, (_, i) => (s * 7 + i * 3) % TINY.vocab)
      );
      const labels = tokens.map((t) => t.map((_, i) => (i + 1 < t.length ? t[i + 1] : -100)));
      const data = [{ tokens, labels }];
      const losses: number[] = [];
      for (let s = 0; s < 12; s++) losses.push((await whole.engine.trainStep(data, 1e-2)).loss);
      console.log(`bf16 storage loss ${losses[0].toFixed(4)} -> ${losses.at(-1)!.toFixed(4)}`);
      assert.ok(losses.at(-1)! < 0.8 * losses[0], `loss ${losses[0]} -> ${losses.at(-1)}`);

      for (let s = 0; s < 5; s++) await first.engine.trainStep(data, 1e-2);
      const path = await saveCheckpoint(
        dir,
        first.engine.layout,
        await first.engine.readAdapter(),
        await first.engine.optimizer.state(),
        { step: 5, totalSteps: 12, cursor: { epoch: 0, index: 0 }, settings: {}, tokensSeen: 0 },
        "tiny",
      );
      // The saved adapter is the master's f32 values, not the bf16 copy's.
      const saved = await loadAdapter(path, TINY);
      const master = await first.engine.readAdapter();
      assert.deepEqual(new Uint32Array(saved.flat.buffer), new Uint32Array(master.buffer));
      const copy = await first.engine.readComputeCopy();
      assert.ok(master.some((v, i) => v !== copy[i]), "master and bf16 copy should differ");

      const ckpt = await loadCheckpoint(path);
      const resumed = new TrainingEngine(ctx, first.setup.model, {
        lora: spec,
        seed: 99,
        optimizerGpuBudgetBytes: BUDGET,
        loraStorage: "bf16",
        ...over,
        adapter: (await loadAdapter(ckpt.adapterDir, TINY)).flat,
      });
      try {
        resumed.optimizer.setState(ckpt.optimizer);
        for (let s = 5; s < 12; s++) await resumed.trainStep(data, 1e-2);
        const a = await whole.engine.readAdapter();
        const b = await resumed.readAdapter();
        assert.deepEqual(new Uint32Array(b.buffer), new Uint32Array(a.buffer));
        const ca = await whole.engine.readComputeCopy();
        const cb = await resumed.readComputeCopy();
        assert.deepEqual(new Uint32Array(cb.buffer), new Uint32Array(ca.buffer));
      } finally {
        resumed.destroy();
      }
    } finally {
      whole.destroy();
      first.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

gpuTest("bf16 storage: the ledger's peaks are the estimate's bytes", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 31, SPEC);
  try {
    for (const ckpt of [false, true]) {
      const s = {
        lora: SPEC,
        microBatchSize: 2,
        maxSeqLen: 31,
        gradientCheckpointing: ckpt,
        activationPrecision: "f32" as const,
        optimizerGpuBudgetBytes: BUDGET,
        loraStorage: "bf16" as const,
      };
      const before = ctx.memory.current();
      ctx.memory.resetPeak();
      const engine = new TrainingEngine(ctx, setup.model, {
        lora: SPEC,
        maxShape: { batch: 2, seq: 31 },
        gradientCheckpointing: ckpt,
        activationPrecision: "f32",
        seed: 5,
        maxGradNorm: 1,
        optimizerGpuBudgetBytes: BUDGET,
        adapter: setup.adapter,
        loraStorage: "bf16",
      });
      try {
        await engine.trainStep([randomBatch(TINY.vocab, [31, 31], 77)], 1e-3);
        const est = estimateMemory(TINY, s);
        const peak = ctx.memory.peak();
        console.log(
          `checkpointing ${ckpt}: ` +
            (["lora", "gradients", "optimizer", "activations", "scratch"] as const).map((c) =>
              `${c} ledger ${peak[c] - before[c]} estimate ${est.bytes[c]}`
            ).join(", "),
        );
        for (const c of ["lora", "gradients", "optimizer", "activations"] as const) {
          assert.equal(peak[c] - before[c], est.bytes[c], `checkpointing ${ckpt}: ${c}`);
        }
        // By hand: n floats take 2n bytes in bf16, and the window is one layer's span, n / 2
        // floats here (two layers with the same slots); f32 storage would take 4n.
        const n = engine.layout.totalFloats;
        assert.equal(est.bytes.lora, 2 * n + 4 * (n / TINY.layers));
        assert.equal(estimateMemory(TINY, { ...s, loraStorage: "f32" }).bytes.lora, 4 * n);
      } finally {
        engine.destroy();
      }
    }
  } finally {
    setup.model.destroy();
  }
});

gpuTest(
  "bf16 storage is refused without a paging optimizer budget, naming the settings",
  async (ctx) => {
    for (const budget of [0, 1 << 30]) {
      assert.throws(
        () => make(ctx, 4, { optimizerGpuBudgetBytes: budget }),
        /lora_dtype bf16 .*optimizer_gpu_budget_bytes must be > 0/,
      );
      assert.throws(
        () =>
          estimateMemory(TINY, {
            lora: SPEC,
            microBatchSize: 1,
            maxSeqLen: 8,
            gradientCheckpointing: true,
            optimizerGpuBudgetBytes: budget,
            loraStorage: "bf16",
          }),
        /lora_dtype bf16 .*optimizer_gpu_budget_bytes/,
      );
    }
    // Evaluation engines keep f32 storage whatever is asked (no optimizer to hold a master).
    const ev = make(ctx, 4, { evalOnly: true, optimizerGpuBudgetBytes: 0 });
    try {
      assert.equal(ev.engine.storage, "f32");
      const r = await ev.engine.evaluate(randomBatch(TINY.vocab, [9, 5], 3));
      assert.ok(Number.isFinite(r.lossSum) && r.tokens > 0);
    } finally {
      ev.destroy();
    }
  },
);

closeGpuAfterTests();
