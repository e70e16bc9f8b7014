import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, refConfig, relErr, TINY, tinySetup } from "../model/setup.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { greedyGenerate, nextTokenLogits } from "../../src/train/generate.ts";
import { forwardBackward } from "../reference/llama_f64.ts";
import type { LoraSpec } from "../../src/model/lora.ts";

const SPEC: LoraSpec = { r: 4, alpha: 8, dropout: 0, targets: ["q", "v", "up"], useRslora: false };

gpuTest("next-token logits and greedy decoding match the float64 reference", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 31, SPEC);
  const engine = new TrainingEngine(ctx, setup.model, {
    lora: SPEC,
    maxShape: { batch: 1, seq: 24 },
    gradientCheckpointing: false,
    seed: 1,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
    evalOnly: true,
  });
  try {
    const prompt = randomBatch(TINY.vocab, [9], 5).tokens[0];
    const row = ctx.createBuffer({ label: "r", category: "scratch", size: TINY.hidden * 4 });
    const out = ctx.createBuffer({ label: "l", category: "scratch", size: TINY.vocab * 4 });
    const got = await nextTokenLogits(engine, prompt, { row, logits: out });
    row.destroy();
    out.destroy();
    const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, {
      tokens: [prompt],
      labels: [prompt.map(() => -100)],
    }, { returnLogits: true });
    const want = ref.logits![0].subarray(8 * TINY.vocab, 9 * TINY.vocab);
    assert.ok(relErr(got, want) < 1e-5, `logits rel err ${relErr(got, want)}`);

    // Greedy continuation: each step's argmax from the reference on the growing sequence.
    const generated = await greedyGenerate(engine, prompt, 4, []);
    const seq = [...prompt];
    for (const t of generated) {
      const r = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, {
        tokens: [seq],
        labels: [seq.map(() => -100)],
      }, { returnLogits: true });
      const l = r.logits![0].subarray((seq.length - 1) * TINY.vocab, seq.length * TINY.vocab);
      let best = 0;
      for (let v = 1; v < l.length; v++) if (l[v] > l[best]) best = v;
      assert.equal(t, best);
      seq.push(t);
    }
    assert.equal(generated.length, 4);
  } finally {
    engine.destroy();
    setup.model.destroy();
  }
});

gpuTest(
  "evaluation runs without LoRA dropout even when the adapter trained with it",
  async (ctx) => {
    const spec: LoraSpec = { ...SPEC, dropout: 0.3 };
    const setup = tinySetup(ctx, TINY, 41, spec);
    const engine = new TrainingEngine(ctx, setup.model, {
      lora: spec,
      maxShape: { batch: 2, seq: 16 },
      gradientCheckpointing: false,
      seed: 1,
      maxGradNorm: 0,
      optimizerGpuBudgetBytes: 0,
      adapter: setup.adapter,
      evalOnly: true,
    });
    try {
      const batch = randomBatch(TINY.vocab, [16, 11], 9);
      const got = await engine.evaluate(batch);
      const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, batch);
      assert.equal(got.tokens, ref.count);
      assert.ok(
        Math.abs(got.lossSum - ref.lossSum) <= 1e-5 * ref.lossSum,
        `${got.lossSum} vs ${ref.lossSum}`,
      );
      assert.equal(got.correct, ref.correct);
    } finally {
      engine.destroy();
      setup.model.destroy();
    }
  },
);

closeGpuAfterTests();
