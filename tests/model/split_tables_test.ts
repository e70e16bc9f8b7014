/**
 * The whole training path with the embeddings and lm_head split into row chunks by a forced
 * 4 KiB binding limit (GpuContext.open's maxBindingBytes, as QLORAD_MAX_BINDING_BYTES sets it):
 * the gather, the vocabulary blocks cut at chunk boundaries and the shrunken cross-entropy
 * block all run, and loss and every LoRA gradient match the float64 reference (bf16 tables
 * rounded independently there) as tightly as the unsplit path does (tests/model/gradcheck_test).
 */
import assert from "node:assert/strict";
import { GpuContext } from "../../src/gpu/context.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import type { LoraSpec } from "../../src/model/lora.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { forwardBackward } from "../reference/llama_f64.ts";
import { randomBatch, refConfig, relErr, TINY, tinySetup } from "./setup.ts";

const SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

for (const tieEmbeddings of [false, true]) {
  Deno.test({
    name: `tables split by a 4 KiB binding limit${tieEmbeddings ? " (tied)" : ""}: ` +
      `loss and LoRA gradients match float64`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const ctx = await GpuContext.open({ log: () => {}, maxBindingBytes: 4096 });
      const cfg = { ...TINY, tieEmbeddings };
      const setup = tinySetup(ctx, cfg, 8, SPEC);
      const engine = new TrainingEngine(ctx, setup.model, {
        lora: SPEC,
        maxShape: { batch: 2, seq: 17 },
        gradientCheckpointing: false,
        seed: 99,
        maxGradNorm: 0,
        optimizerGpuBudgetBytes: 0,
        adapter: setup.adapter,
      });
      try {
        // 80 columns of bf16 are 160 bytes: 25 rows a chunk, so 61 words are 25 + 25 + 11.
        assert.deepEqual(setup.model.lmHead.chunks.map((c) => c.rows), [25, 25, 11]);
        // The logits block shrinks to fit: 4,096 / (61 x 4) = 16 rows.
        assert.deepEqual([engine.graph.rowChunk, engine.graph.vocabChunk], [16, 61]);
        const batch = randomBatch(cfg.vocab, [17, 11], 7);
        const got = await engine.accumulateGradients([batch]);
        const ref = forwardBackward(refConfig(cfg), setup.refWeights, setup.refLora, batch);
        // As in gradcheck_test: f32 reaches ~1e-6 on the loss and gradients here.
        assert.ok(Math.abs(got.loss - ref.loss) / ref.loss <= 1e-5, `${got.loss} vs ${ref.loss}`);
        const grads = await engine.readGradients();
        for (const s of engine.layout.slots) {
          const key = `${s.layer}.${s.module}`;
          const want = (s.kind === "A" ? ref.gradA : ref.gradB).get(key)!;
          const e = relErr(grads.subarray(s.offset, s.offset + s.numel), want);
          assert.ok(e <= 1e-4, `${key}.${s.kind}: relative error ${e}`);
        }
      } finally {
        engine.destroy();
        setup.model.destroy();
        ctx.destroy();
      }
    },
  });
}
