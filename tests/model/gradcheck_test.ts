/**
 * The WGSL training path against the float64 CPU reference on a tiny config (2 layers, GQA,
 * hidden 80, sequences of 17 and 11 tokens, some labels masked): loss within 1e-5, every
 * LoRA A and B gradient within 1e-4 relative (the issue asks 1e-3; f32 gets ~1e-6 here, so the
 * tighter bound still has margin and catches more); a few coordinates by finite differences.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, relErr, TINY, tinySetup } from "./setup.ts";
import { refConfig } from "./setup.ts";
import { forwardBackward } from "../reference/llama_f64.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import { dropoutMaskHost } from "../../src/kernels/dropout.ts";
import type { LoraSpec } from "../../src/model/lora.ts";

const SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

function engineFor(ctx: Parameters<typeof tinySetup>[0], spec: LoraSpec, seed: number) {
  const setup = tinySetup(ctx, TINY, seed, spec);
  const engine = new TrainingEngine(ctx, setup.model, {
    lora: spec,
    maxShape: { batch: 2, seq: 17 },
    gradientCheckpointing: false,
    seed: 99,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
  });
  return { setup, engine };
}

function compareGrads(
  engine: TrainingEngine,
  grads: Float32Array,
  ref: ReturnType<typeof forwardBackward>,
): number {
  let worst = 0;
  for (const s of engine.layout.slots) {
    const key = `${s.layer}.${s.module}`;
    const want = (s.kind === "A" ? ref.gradA : ref.gradB).get(key)!;
    const got = grads.subarray(s.offset, s.offset + s.numel);
    const e = relErr(got, want);
    assert.ok(e <= 1e-4, `${key}.${s.kind}: relative error ${e}`);
    worst = Math.max(worst, e);
  }
  return worst;
}

gpuTest("LoRA gradients and loss of the WGSL path match the float64 reference", async (ctx) => {
  const { setup, engine } = engineFor(ctx, SPEC, 5);
  try {
    const batch = randomBatch(TINY.vocab, [17, 11], 7);
    const got = await engine.accumulateGradients([batch]);
    const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, batch);
    assert.ok(Math.abs(got.loss - ref.loss) / ref.loss <= 1e-5, `loss ${got.loss} vs ${ref.loss}`);
    assert.equal(got.labelTokens, ref.count);
    const worst = compareGrads(engine, await engine.readGradients(), ref);
    console.log(`loss rel err ${Math.abs(got.loss - ref.loss) / ref.loss}, worst grad ${worst}`);

    // Finite differences on the GPU path itself, at the largest gradient coordinates.
    const grads = await engine.readGradients();
    const params = setup.adapter.slice();
    const order = [...grads.keys()].sort((a, b) => Math.abs(grads[b]) - Math.abs(grads[a]));
    const h = 1e-2;
    for (const i of order.slice(0, 3)) {
      const at = async (v: number) => {
        const p = params.slice();
        p[i] = v;
        engine.writeAdapter(p);
        return (await engine.accumulateGradients([batch])).loss;
      };
      const fd = (await at(params[i] + h) - await at(params[i] - h)) / (2 * h);
      assert.ok(
        Math.abs(fd - grads[i]) <= 2e-2 * Math.abs(grads[i]),
        `coord ${i}: fd ${fd} vs ${grads[i]}`,
      );
    }
  } finally {
    engine.destroy();
    setup.model.destroy();
  }
});

gpuTest("with dropout, rsLoRA and a subset of targets the gradients still match", async (ctx) => {
  const spec: LoraSpec = {
    r: 3,
    alpha: 5,
    dropout: 0.25,
    targets: ["q", "v", "down"],
    useRslora: true,
  };
  const { setup, engine } = engineFor(ctx, spec, 11);
  try {
    const batch = randomBatch(TINY.vocab, [9, 13], 3);
    const seq = 13;
    const got = await engine.accumulateGradients([batch]);
    const moduleIndex = Object.fromEntries(LINEAR_MODULES.map((m, i) => [m, i]));
    const masks = new Map<string, Float32Array>();
    const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, batch, {
      dropoutMask: (key, s, t, i) => {
        const [layer, module] = key.split(".");
        const width = module === "down" ? TINY.intermediate : module === "o" ? 80 : TINY.hidden;
        let mask = masks.get(key);
        if (!mask) {
          // Step 0, micro-batch 0: stream base 0 (engine.ts), then layer*8 + module index.
          const stream = Number(layer) * 8 + moduleIndex[module];
          mask = dropoutMaskHost(99, stream, 2 * seq * width, spec.dropout);
          masks.set(key, mask);
        }
        return mask[(s * seq + t) * width + i];
      },
    });
    assert.ok(Math.abs(got.loss - ref.loss) / ref.loss <= 1e-5, `loss ${got.loss} vs ${ref.loss}`);
    compareGrads(engine, await engine.readGradients(), ref);
  } finally {
    engine.destroy();
    setup.model.destroy();
  }
});

gpuTest(
  "llama3 RoPE scaling, tied embeddings and packed segments match the reference",
  async (ctx) => {
    const cfg = {
      ...TINY,
      tieEmbeddings: true,
      ropeTheta: 500000,
      ropeScaling: {
        type: "llama3" as const,
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 16,
      },
    };
    const setup = tinySetup(ctx, cfg, 17, SPEC);
    const engine = new TrainingEngine(ctx, setup.model, {
      lora: SPEC,
      maxShape: { batch: 2, seq: 17 },
      gradientCheckpointing: true,
      // f32 checkpoints for the f32 bounds (f16 ones: tests/model/f16_checkpoint_test.ts).
      activationPrecision: "f32",
      seed: 99,
      maxGradNorm: 0,
      optimizerGpuBudgetBytes: 0,
      adapter: setup.adapter,
    });
    try {
      const b = randomBatch(cfg.vocab, [17, 12], 23);
      // Row 0 packs two samples (positions restart, no attention across them).
      const positions = [[...Array(10).keys(), ...Array(7).keys()], [...Array(12).keys()]];
      const segments = [[...Array(10).fill(0), ...Array(7).fill(1)], Array(12).fill(0)];
      const batch = { ...b, positions, segments };
      const got = await engine.accumulateGradients([batch]);
      const ref = forwardBackward(refConfig(cfg), setup.refWeights, setup.refLora, batch);
      assert.ok(
        Math.abs(got.loss - ref.loss) / ref.loss <= 1e-5,
        `loss ${got.loss} vs ${ref.loss}`,
      );
      compareGrads(engine, await engine.readGradients(), ref);
    } finally {
      engine.destroy();
      setup.model.destroy();
    }
  },
);

closeGpuAfterTests();
