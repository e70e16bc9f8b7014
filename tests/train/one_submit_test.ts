/**
 * A training step is one queue submit (issue #9): the resident-optimizer step records zeroing,
 * forward, backward, clipping, AdamW and the loss's copy home into one batch. Counted with
 * ctx.stats (no timing asserted). The old submit boundaries (EngineOptions.splitSubmits) run the
 * same kernels in the same order, so both paths must give the same bits; the float64 references
 * check the numbers themselves (tests/model/gradcheck_test.ts goes through the same batch).
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, relErr, TINY, tinySetup } from "../model/setup.ts";
import { type EngineOptions, TrainingEngine } from "../../src/train/engine.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import type { LoraSpec } from "../../src/model/lora.ts";
import { type GpuContext, statsDelta } from "../../src/gpu/context.ts";

// Dropout on, so the per-micro-batch random streams are part of what must match.
const SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0.1,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

function make(ctx: GpuContext, over: Partial<EngineOptions> = {}) {
  const setup = tinySetup(ctx, TINY, 31, SPEC);
  const engine = new TrainingEngine(ctx, setup.model, {
    lora: SPEC,
    maxShape: { batch: 2, seq: 13 },
    gradientCheckpointing: false,
    seed: 5,
    maxGradNorm: 0.5,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
    adamw: { weightDecay: 0.01 },
    ...over,
  });
  return {
    engine,
    destroy: () => {
      engine.destroy();
      setup.model.destroy();
    },
  };
}

/** Submits made by `fn` (DispatchBatch submits, what GpuStats counts). */
async function submitsOf(ctx: GpuContext, fn: () => Promise<unknown>): Promise<number> {
  const before = ctx.statsSnapshot();
  await fn();
  return statsDelta(before, ctx.statsSnapshot()).submits;
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

gpuTest(
  "a resident step of one micro-batch is one submit; more micro-batches one each",
  async (ctx) => {
    const t = make(ctx);
    try {
      const batch = randomBatch(TINY.vocab, [13, 8], 70);
      assert.equal(await submitsOf(ctx, () => t.engine.trainStep([batch], 1e-2)), 1);
      assert.equal(await submitsOf(ctx, () => t.engine.trainStep([batch], 1e-2)), 1);
      const micro = [0, 1, 2].map((i) => randomBatch(TINY.vocab, [11 - i], 80 + i));
      assert.equal(await submitsOf(ctx, () => t.engine.trainStep(micro, 1e-2)), 3);
      assert.equal(await submitsOf(ctx, () => t.engine.accumulateGradients([batch])), 1);
      assert.equal(await submitsOf(ctx, () => t.engine.evaluate(batch)), 1);
    } finally {
      t.destroy();
    }
  },
);

gpuTest("a paged step is one submit plus one per group of pages", async (ctx) => {
  // 2 KiB of GPU budget: far below the state, so it pages in several groups.
  const t = make(ctx, { optimizerGpuBudgetBytes: 2048 });
  try {
    const opt = t.engine.optimizer;
    assert.equal(opt.paged, true);
    // A group is the whole pool: gpuBytes covers m and v of it, 8 bytes per float.
    const groups = Math.ceil(t.engine.layout.totalFloats / (opt.gpuBytes / 8));
    assert.ok(groups > 1, `${groups} groups`);
    const batch = randomBatch(TINY.vocab, [13, 8], 71);
    assert.equal(await submitsOf(ctx, () => t.engine.trainStep([batch], 1e-2)), 1 + groups);
  } finally {
    t.destroy();
  }
});

gpuTest(
  "one-submit and split steps give identical losses, norms, adapters and moments over 4 steps",
  async (ctx) => {
    for (const over of [{}, { optimizerGpuBudgetBytes: 2048 }, { gradientCheckpointing: true }]) {
      const one = make(ctx, over);
      const split = make(ctx, { ...over, splitSubmits: true });
      try {
        for (let step = 0; step < 4; step++) {
          // Step 2 accumulates two micro-batches of different lengths.
          const micro = step === 2
            ? [randomBatch(TINY.vocab, [9, 13], 90), randomBatch(TINY.vocab, [7], 91)]
            : [randomBatch(TINY.vocab, [13, 6 + step], 92 + step)];
          const a = await one.engine.trainStep(micro, 1e-2);
          const b = await split.engine.trainStep(micro, 1e-2);
          const what = `${JSON.stringify(over)} step ${step}`;
          assert.ok(Number.isFinite(a.loss) && a.loss > 0, `${what}: loss ${a.loss}`);
          assert.equal(a.loss, b.loss, `${what}: loss`);
          assert.equal(a.gradNorm, b.gradNorm, `${what}: gradient norm`);
          assert.equal(a.labelTokens, b.labelTokens);
          assert.equal(a.pagedInBytes, b.pagedInBytes);
        }
        const x = await one.engine.readAdapter();
        const y = await split.engine.readAdapter();
        assert.deepEqual(bits(x), bits(y), `${JSON.stringify(over)}: adapter`);
        const s1 = await one.engine.optimizer.state();
        const s2 = await split.engine.optimizer.state();
        assert.deepEqual(bits(s1.m), bits(s2.m));
        assert.deepEqual(bits(s1.v), bits(s2.v));
        // The steps moved the adapter: equality is not of two untouched copies.
        const start = make(ctx);
        try {
          assert.ok(relErr(x, await start.engine.readAdapter()) > 0);
        } finally {
          start.destroy();
        }
      } finally {
        one.destroy();
        split.destroy();
      }
    }
  },
);

closeGpuAfterTests();
