/**
 * The MLP half run over row chunks (src/model/layer.ts): a forced 64-row chunk on 2 x 83 padded
 * rows gives three chunks (64, 64, 38: the last uneven), with and without gradient checkpointing
 * (which recomputes each chunk in backward from chunk-sized buffers) and with LoRA dropout 0 and
 * 0.2 (whose masks must not depend on the chunking), and query widths other than hidden (other
 * placements of d q and n1 in backward). Loss and every LoRA gradient are checked
 * against the float64 reference at the gradient check's bounds (tests/model/gradcheck_test.ts:
 * loss 1e-5 relative, each tensor's gradient 1e-4 of its largest element; f32 lands near 1e-6).
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, refConfig, relErr, TINY, tinySetup } from "./setup.ts";
import { forwardBackward } from "../reference/llama_f64.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import {
  LINEAR_MODULES,
  type LinearModule,
  linearShape,
  type LlamaConfig,
} from "../../src/model/config.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { activationPlan, attentionBorrowing } from "../../src/model/activations.ts";
import { dropoutMaskHost } from "../../src/kernels/dropout.ts";
import type { LoraSpec } from "../../src/model/lora.ts";

const SEQ = 83;
const CHUNK = 64;
const SEED = 99;

async function checkAgainstReference(
  ctx: GpuContext,
  cfg: LlamaConfig,
  dropout: number,
  gradientCheckpointing: boolean,
): Promise<void> {
  const spec: LoraSpec = {
    r: 4,
    alpha: 8,
    dropout,
    targets: [...LINEAR_MODULES],
    useRslora: false,
  };
  const setup = tinySetup(ctx, cfg, 13, spec);
  const engine = new TrainingEngine(ctx, setup.model, {
    lora: spec,
    maxShape: { batch: 2, seq: SEQ },
    gradientCheckpointing,
    activationPrecision: "f32",
    seed: SEED,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
    mlpChunkRows: CHUNK,
  });
  try {
    // The chunking is really on: 64-row chunks, and with checkpointing the gate projection
    // exists for one chunk (in the scratch), not for all 166 rows.
    const acts = engine.graph.acts[0];
    const scratch = engine.graph.scratch;
    assert.equal(acts.plan.chunkRows, CHUNK);
    const gate = gradientCheckpointing ? scratch.gate : acts.g;
    const gateRows = gradientCheckpointing ? CHUNK : 2 * SEQ;
    assert.equal(gate?.size, gateRows * cfg.intermediate * 4);
    assert.equal(gradientCheckpointing ? acts.g : scratch.gate, undefined);
    const batch = randomBatch(cfg.vocab, [SEQ, 70], 29);
    const got = await engine.accumulateGradients([batch]);
    const moduleIndex = Object.fromEntries(LINEAR_MODULES.map((m, i) => [m, i]));
    const masks = new Map<string, Float32Array>();
    const ref = forwardBackward(refConfig(cfg), setup.refWeights, setup.refLora, batch, {
      dropoutMask: dropout === 0 ? undefined : (key, s, t, i) => {
        const [layer, module] = key.split(".") as [string, LinearModule];
        const width = linearShape(cfg, module)[1];
        let mask = masks.get(key);
        if (!mask) {
          // Step 0, micro-batch 0: stream base 0 (engine.ts), then layer*8 + module.
          const stream = Number(layer) * 8 + moduleIndex[module];
          mask = dropoutMaskHost(SEED, stream, 2 * SEQ * width, dropout);
          masks.set(key, mask);
        }
        return mask[(s * SEQ + t) * width + i];
      },
    });
    const lossErr = Math.abs(got.loss - ref.loss) / ref.loss;
    assert.ok(lossErr <= 1e-5, `loss ${got.loss} vs ${ref.loss}`);
    assert.equal(got.labelTokens, ref.count);
    const grads = await engine.readGradients();
    let worst = 0;
    for (const s of engine.layout.slots) {
      const key = `${s.layer}.${s.module}`;
      const want = (s.kind === "A" ? ref.gradA : ref.gradB).get(key)!;
      const e = relErr(grads.subarray(s.offset, s.offset + s.numel), want);
      assert.ok(e <= 1e-4, `${key}.${s.kind}: relative error ${e}`);
      worst = Math.max(worst, e);
    }
    console.log(`loss rel err ${lossErr}, worst gradient rel err ${worst}`);
  } finally {
    engine.destroy();
    setup.model.destroy();
  }
}

for (const dropout of [0, 0.2]) {
  for (const gradientCheckpointing of [false, true]) {
    gpuTest(
      `MLP in ${CHUNK}-row chunks (64, 64, 38), dropout ${dropout}, checkpointing ` +
        `${gradientCheckpointing}: loss and gradients match the float64 reference`,
      (ctx) => checkAgainstReference(ctx, TINY, dropout, gradientCheckpointing),
    );
  }
}

// Query widths other than hidden 80: 6 x 16 = 96 (n1 can still borrow attn's buffer with
// checkpointing) and 4 x 16 = 64 (it cannot); neither lets d q borrow h's (src/model/
// activations.ts, attentionBorrowing), so every placement of d q and n1 runs once.
for (const heads of [6, 4]) {
  for (const gradientCheckpointing of [false, true]) {
    gpuTest(
      `query width ${heads * 16} != hidden, MLP chunked, dropout 0.2, checkpointing ` +
        `${gradientCheckpointing}: matches the float64 reference`,
      async (ctx) => {
        const cfg: LlamaConfig = { ...TINY, heads, kvHeads: 2, headDim: 16 };
        const plan = activationPlan(
          cfg,
          { batch: 2, seq: SEQ },
          { r: 4, targets: [], dropout: 0 },
          {
            gradientCheckpointing,
          },
        );
        assert.deepEqual(attentionBorrowing(plan), {
          dqInH: false,
          n1InAttn: gradientCheckpointing && heads * 16 >= cfg.hidden,
        });
        await checkAgainstReference(ctx, cfg, 0.2, gradientCheckpointing);
      },
    );
  }
}

gpuTest("an MLP chunk that is not a multiple of 64 rows is refused, naming the field", (ctx) => {
  const spec: LoraSpec = { r: 2, alpha: 4, dropout: 0, targets: ["gate"], useRslora: false };
  const setup = tinySetup(ctx, TINY, 3, spec);
  try {
    assert.throws(
      () =>
        new TrainingEngine(ctx, setup.model, {
          lora: spec,
          maxShape: { batch: 1, seq: 40 },
          gradientCheckpointing: true,
          seed: 1,
          maxGradNorm: 0,
          optimizerGpuBudgetBytes: 0,
          mlpChunkRows: 100,
        }),
      /mlpChunkRows must be a positive multiple of 64/,
    );
  } finally {
    setup.model.destroy();
  }
  return Promise.resolve();
});

closeGpuAfterTests();
