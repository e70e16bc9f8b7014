/**
 * Training with f16 layer-input checkpoints against the float64 reference, on tiny configs with
 * 2 and 3 layers (both parities of the forward's two working buffers). The loss comes from the
 * forward, which stays f32: it must equal the f32 path's bit for bit and the reference within
 * 1e-5. The LoRA gradients are checked two ways:
 * - against a float64 reference that models exactly what f16 checkpoints do: each layer's
 *   backward sees the layer recomputed from its input rounded to f16 by
 *   tests/reference/float16_f64.ts's roundF16, the forward is exact. The input rounded is the
 *   f32 path's layer input read off the GPU (the f16 path's forward is the same arithmetic, the
 *   loss check below shows it): a float64 input can sit on the other side of an f16 rounding
 *   midpoint than its f32 value (rarely: the two differ by ~1e-7 relative, the midpoints are
 *   2^-10 apart), and those one-ulp flips moved the gradients by up to 8e-5 when the model
 *   rounded the float64 inputs (on GLES), nearly the whole f32 bound.
 *   With the GPU's own inputs rounded the bound is GRAD_TOL_F32, the f32 path's: a checkpoint
 *   rounded in the wrong place, taken from the wrong layer or not rounded at all fails it.
 * - against the plain float64 reference, within relErr(modelled, plain) + GRAD_TOL_F32 (the
 *   triangle inequality): the cost of f16 checkpoints measured in float64, not guessed.
 *   Rounding to f16 moves each input element by at most 2^-11 relative (~4.9e-4); RMSNorm and
 *   the linears carry that into the recomputed activations at the same relative size, and each
 *   of L layers adds its share to the gradients below it, so the cost is a small multiple of
 *   L 2^-11 (asserted under 8 L 2^-11; measured 6.0e-4 with 2 layers, 7.7e-4 with 3).
 * The explicit "f16" runs on every adapter (the conversion is integer arithmetic); "auto" picks
 * f16 only with shader-f16 (lavapipe Vulkan, not the GLES CI adapter).
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, refConfig, relErr, TINY, tinySetup } from "./setup.ts";
import { forwardBackward, type RefOptions, type RefResult } from "../reference/llama_f64.ts";
import { roundF16 } from "../reference/float16_f64.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import type { ActivationPrecision } from "../../src/model/graph.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import type { LoraSpec } from "../../src/model/lora.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import type { GpuContext } from "../../src/gpu/context.ts";

const SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

/**
 * tests/model/gradcheck_test.ts's bound for the f32 path (it measures ~1e-6 there): f32
 * rounding in the kernels, which the f16 path shares.
 */
const GRAD_TOL_F32 = 1e-4;
const LOSS_TOL = 1e-5;

/** Worst relative distance of two references' LoRA gradients (each tensor on its own scale). */
function refDistance(a: RefResult, b: RefResult): number {
  let worst = 0;
  for (const [key, g] of b.gradA) worst = Math.max(worst, relErr(a.gradA.get(key)!, g));
  for (const [key, g] of b.gradB) worst = Math.max(worst, relErr(a.gradB.get(key)!, g));
  return worst;
}

/** Worst relative error over the LoRA tensors (each A and B on its own scale). */
function worstGradErr(engine: TrainingEngine, grads: Float32Array, ref: RefResult): number {
  let worst = 0;
  for (const s of engine.layout.slots) {
    const key = `${s.layer}.${s.module}`;
    const want = (s.kind === "A" ? ref.gradA : ref.gradB).get(key)!;
    worst = Math.max(worst, relErr(grads.subarray(s.offset, s.offset + s.numel), want));
  }
  return worst;
}

async function gradientsWith(
  ctx: GpuContext,
  setup: ReturnType<typeof tinySetup>,
  activationPrecision: ActivationPrecision,
  batch: ReturnType<typeof randomBatch>,
) {
  const engine = new TrainingEngine(ctx, setup.model, {
    lora: SPEC,
    maxShape: { batch: 2, seq: 17 },
    gradientCheckpointing: true,
    activationPrecision,
    seed: 99,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
  });
  try {
    const { loss } = await engine.accumulateGradients([batch]);
    const grads = await engine.readGradients();
    // f32 checkpoints: every layer's input as the forward computed it, [batch * longest, hidden].
    const inputs: Float32Array[] = [];
    for (const b of engine.graph.inputs) inputs.push(await ctx.readF32(b));
    return { engine, loss, grads, inputs, precision: engine.graph.checkpointPrecision };
  } finally {
    engine.destroy();
  }
}

for (const layers of [2, 3]) {
  gpuTest(`f16 checkpoints, ${layers} layers: loss exact, gradients as modelled`, async (ctx) => {
    const cfg: LlamaConfig = { ...TINY, layers };
    const setup = tinySetup(ctx, cfg, 40 + layers, SPEC);
    try {
      const lengths = [17, 12];
      const batch = randomBatch(cfg.vocab, lengths, 50 + layers);
      const ref = (opts?: RefOptions) =>
        forwardBackward(refConfig(cfg), setup.refWeights, setup.refLora, batch, opts);
      const plain = ref();
      // The cost of f16 checkpoints in float64 alone: the forward is untouched, the gradients
      // move by ~2^-11.
      const rounded = ref({ checkpoint: (x) => x.map(roundF16) });
      assert.equal(rounded.loss, plain.loss);
      const cost = refDistance(rounded, plain);
      assert.ok(cost < 8 * layers * 2 ** -11, `cost ${cost}`);

      const f16 = await gradientsWith(ctx, setup, "f16", batch);
      const f32 = await gradientsWith(ctx, setup, "f32", batch);
      assert.equal(f16.precision, "f16");
      assert.equal(f32.precision, "f32");
      assert.equal(f32.inputs.length, layers + 1);
      assert.ok(Math.abs(f16.loss - plain.loss) <= LOSS_TOL * plain.loss, `loss ${f16.loss}`);
      assert.equal(f16.loss, f32.loss, "the forward is the f32 one");

      // The model of the f16 path: each layer recomputed from the GPU's f32 input, rounded.
      const rowsAt = (seq: number) => seq * Math.max(...lengths) * cfg.hidden;
      const modelled = ref({
        checkpoint: (x, l, seq) =>
          Float64Array.from(f32.inputs[l].subarray(rowsAt(seq), rowsAt(seq) + x.length), roundF16),
      });
      const modelledCost = refDistance(modelled, plain);

      const toModelled = worstGradErr(f16.engine, f16.grads, modelled);
      const toPlain = worstGradErr(f16.engine, f16.grads, plain);
      const f32ToPlain = worstGradErr(f32.engine, f32.grads, plain);
      console.log(
        `${layers} layers: f16 cost in float64 ${cost.toExponential(2)} (GPU-fed model ` +
          `${modelledCost.toExponential(2)}); f16 path vs modelled ` +
          `${toModelled.toExponential(2)}, vs plain ${toPlain.toExponential(2)}; f32 path vs ` +
          `plain ${f32ToPlain.toExponential(2)}`,
      );
      assert.ok(toModelled <= GRAD_TOL_F32, `f16 path vs modelled reference: ${toModelled}`);
      assert.ok(
        toPlain <= modelledCost + GRAD_TOL_F32,
        `f16 path vs plain reference: ${toPlain}`,
      );
      // The f16 path is far nearer its model than the plain reference: it rounds where the
      // model says.
      assert.ok(toModelled < toPlain / 4, `${toModelled} vs ${toPlain}`);
      // The f32 path keeps its own bound.
      assert.ok(f32ToPlain <= GRAD_TOL_F32, `f32 path vs plain reference: ${f32ToPlain}`);
    } finally {
      setup.model.destroy();
    }
  });
}

gpuTest("auto takes f16 checkpoints exactly where the adapter has shader-f16", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 45, SPEC);
  try {
    const batch = randomBatch(TINY.vocab, [9, 5], 55);
    const auto = await gradientsWith(ctx, setup, "auto", batch);
    const want = ctx.capabilities.f16 ? "f16" : "f32";
    assert.equal(auto.precision, want);
    const pinned = await gradientsWith(ctx, setup, want, batch);
    assert.deepEqual(auto.grads, pinned.grads);
  } finally {
    setup.model.destroy();
  }
});

closeGpuAfterTests();
