/**
 * Published architectures end to end on the GPU, against float64:
 * - A Qwen2-style model (q/k/v biases, tied embeddings) written as 3 bf16 shards, quantized:
 *   the Evaluate loss and the LoRA gradients of the 4-bit model match the float64 reference
 *   (tests/reference/llama_f64.ts) built from the quantized folder's own bytes (4-bit groups
 *   dequantized by tests/reference/dequant_f64.ts, biases/norms/embeddings from bf16); loading
 *   the full-precision shards (quantized on load) computes the same bits.
 * - Train, PEFT adapter and merged export of that model keep the biases and the tie.
 * - A Mistral folder with head_dim != hidden / heads matches float64 and computes what the same
 *   weights as a Llama compute; a job longer than its sliding_window is refused naming the field.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { closeGpuAfterTests, gpu, gpuTest } from "../support/gpu.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";
import { loadBaseModel } from "../../src/model/load.ts";
import { LINEAR_MODULES, linearPath, llamaConfigFromHf } from "../../src/model/config.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { LoraLayout, type LoraSpec } from "../../src/model/lora.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { estimateMemory } from "../../src/train/estimate.ts";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";
import { runTrainJob } from "../../src/train/train_job.ts";
import { runEvaluateJob } from "../../src/train/evaluate_job.ts";
import { loadAdapter } from "../../src/train/peft.ts";
import { mergeAdapter } from "../../src/train/merge.ts";
import { Rng } from "../../src/util/random.ts";
import { QloradError } from "../../src/util/errors.ts";
import { forwardBackward, type RefLora, type RefWeights } from "../reference/llama_f64.ts";
import { dequantizeF64, type QuantWeightRef } from "../reference/dequant_f64.ts";
import { randomBatch, refConfig, relErr } from "./setup.ts";

const SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

let fixtureDir: string | undefined;
/** The Qwen2 fixture (3 bf16 shards, tied, biased) and its quantized folder, made once. */
async function qwenFixture(): Promise<string> {
  if (fixtureDir) return fixtureDir;
  const dir = await Deno.makeTempDir({ prefix: "qlorad-qwen2-" });
  await makeTinyLlama(join(dir, "model"), {
    modelType: "qwen2",
    tieWordEmbeddings: true,
    shards: 3,
    dtype: "BF16",
    seed: 91,
    // Wider weights than the default fixture: logits far from uniform, biases (std 1, as large
    // as Qwen2's k biases tend to be) that move attention, so leaving them out shows.
    initStd: 0.12,
    biasStd: 1,
    trainRecords: 24,
    evalRecords: 6,
  });
  await quantizeModel({
    modelDir: join(dir, "model"),
    outputDir: join(dir, "q"),
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
    skipModules: ["lm_head"],
    overwrite: false,
  });
  fixtureDir = dir;
  return dir;
}

/**
 * One 4-bit group read straight from the safetensors bytes (REFERENCE §5), decoded without
 * src/quant: packed codes, absmax codes, nested absmax and maps, and quant_state's JSON.
 */
async function readGroupRef(ck: HfCheckpoint, weight: string): Promise<QuantWeightRef> {
  const f32 = async (n: string) => new Float32Array((await ck.readBytes(n)).slice().buffer);
  const state = JSON.parse(
    new TextDecoder().decode(await ck.readBytes(`${weight}.quant_state.bitsandbytes__nf4`)),
  );
  return {
    blocksize: state.blocksize,
    shape: state.shape,
    packed: await ck.readBytes(weight),
    quantMap: await f32(`${weight}.quant_map`),
    dq: {
      codes: await ck.readBytes(`${weight}.absmax`),
      nestedAbsmax: await f32(`${weight}.nested_absmax`),
      offset: state.nested_offset,
      nestedMap: await f32(`${weight}.nested_quant_map`),
    },
  };
}

/** The float64 reference's weights, from the quantized folder's bytes. */
async function refWeightsOf(dir: string, cfg: LlamaConfig): Promise<RefWeights> {
  const ck = await HfCheckpoint.open(dir);
  try {
    const layers = [];
    for (let l = 0; l < cfg.layers; l++) {
      const p = `model.layers.${l}.`;
      const layer: Record<string, unknown> = {
        inputNorm: await ck.readFloat64(`${p}input_layernorm.weight`),
        postNorm: await ck.readFloat64(`${p}post_attention_layernorm.weight`),
      };
      for (const m of LINEAR_MODULES) {
        layer[m] = dequantizeF64(await readGroupRef(ck, `${linearPath(l, m)}.weight`));
      }
      if (cfg.qkvBias) {
        layer.bias = {
          q: await ck.readFloat64(`${linearPath(l, "q")}.bias`),
          k: await ck.readFloat64(`${linearPath(l, "k")}.bias`),
          v: await ck.readFloat64(`${linearPath(l, "v")}.bias`),
        };
      }
      layers.push(layer as unknown as RefWeights["layers"][number]);
    }
    return {
      embed: await ck.readFloat64("model.embed_tokens.weight"),
      norm: await ck.readFloat64("model.norm.weight"),
      lmHead: cfg.tieEmbeddings ? undefined : await ck.readFloat64("lm_head.weight"),
      layers,
    };
  } finally {
    ck.close();
  }
}

/** Random non-zero A and B (a gradient check needs both paths live), in both layouts. */
function randomLora(cfg: LlamaConfig, seed: number): { flat: Float32Array; ref: RefLora } {
  const layout = new LoraLayout(cfg, SPEC);
  const flat = new Float32Array(layout.totalFloats);
  const rng = new Rng(seed);
  const ref: RefLora = {
    r: SPEC.r,
    scaling: layout.scaling,
    targets: [...SPEC.targets],
    A: new Map(),
    B: new Map(),
  };
  for (const s of layout.slots) {
    const v = rng.normals(s.numel, 0.1);
    flat.set(v, s.offset);
    (s.kind === "A" ? ref.A : ref.B).set(`${s.layer}.${s.module}`, Float64Array.from(v));
  }
  return { flat, ref };
}

async function configOf(dir: string): Promise<LlamaConfig> {
  return llamaConfigFromHf(JSON.parse(await Deno.readTextFile(join(dir, "config.json"))));
}

gpuTest(
  "Qwen2 (q/k/v bias, tied) from 3 bf16 shards, quantized: Evaluate loss and LoRA gradients match float64",
  async (ctx) => {
    const dir = await qwenFixture();
    const qDir = join(dir, "q");
    const cfg = await configOf(qDir);
    assert.equal(cfg.qkvBias, true);
    assert.equal(cfg.tieEmbeddings, true);

    // The quantized folder: biases and embeddings kept in bf16, byte for byte; no lm_head.
    const src = await HfCheckpoint.open(join(dir, "model"));
    const q = await HfCheckpoint.open(qDir);
    try {
      assert.equal(src.weightFiles.length, 3);
      for (let l = 0; l < cfg.layers; l++) {
        for (const m of ["q", "k", "v"] as const) {
          const name = `${linearPath(l, m)}.bias`;
          assert.equal(q.info(name).dtype, "BF16", name);
          assert.deepEqual(await q.readBytes(name), await src.readBytes(name), name);
        }
        assert.ok(!q.has(`${linearPath(l, "o")}.bias`));
      }
      assert.deepEqual(
        await q.readBytes("model.embed_tokens.weight"),
        await src.readBytes("model.embed_tokens.weight"),
      );
      assert.ok(!q.has("lm_head.weight") && !src.has("lm_head.weight"));
    } finally {
      src.close();
      q.close();
    }

    const ref = await refWeightsOf(qDir, cfg);
    const { flat, ref: refLora } = randomLora(cfg, 93);
    const batch = randomBatch(cfg.vocab, [17, 11], 95);
    const want = forwardBackward(refConfig(cfg), ref, refLora, batch);
    // The biases matter here: dropping them moves the loss by far more than the tolerance.
    const noBias = { ...ref, layers: ref.layers.map((L) => ({ ...L, bias: undefined })) };
    const without = forwardBackward({ ...refConfig(cfg), qkvBias: false }, noBias, refLora, batch);
    const biasEffect = Math.abs(without.loss - want.loss) / want.loss;
    const gradEffect = relErr(without.gradA.get("0.q")!, want.gradA.get("0.q")!);
    console.log(`leaving the biases out: loss moves ${biasEffect}, d/dA q ${gradEffect}`);
    // At least 100x the bounds below (loss 1e-5, gradients 1e-4).
    assert.ok(biasEffect > 1e-3 && gradEffect > 1e-2, `${biasEffect} ${gradEffect}`);

    const before = ctx.memory.current().base_weights;
    const model = await loadBaseModel(ctx, qDir);
    // The memory estimate counts the bias buffers too: base weights to the byte.
    const est = estimateMemory(cfg, {
      lora: SPEC,
      microBatchSize: 1,
      maxSeqLen: 16,
      gradientCheckpointing: false,
      optimizerGpuBudgetBytes: 0,
    });
    assert.ok(est.details.some((d) => d.name.startsWith("q_proj bias")));
    assert.equal(ctx.memory.current().base_weights - before, est.bytes.base_weights);
    const onLoad = await loadBaseModel(ctx, join(dir, "model"));
    const maxShape = { batch: 2, seq: 17 };
    const common = { lora: SPEC, maxShape, seed: 3, maxGradNorm: 0, optimizerGpuBudgetBytes: 0 };
    const evalEngine = new TrainingEngine(ctx, model, {
      ...common,
      gradientCheckpointing: false,
      adapter: flat,
      evalOnly: true,
    });
    const evalOnLoad = new TrainingEngine(ctx, onLoad, {
      ...common,
      gradientCheckpointing: false,
      adapter: flat,
      evalOnly: true,
    });
    // Checkpointing on: the recomputed forward adds the biases again before backward.
    const train = new TrainingEngine(ctx, model, {
      ...common,
      gradientCheckpointing: true,
      // f32 checkpoints for the f32 bounds (f16 ones: tests/model/f16_checkpoint_test.ts).
      activationPrecision: "f32",
      adapter: flat,
    });
    try {
      // f32 kernels against float64: the loss agrees to ~1e-6 (gradcheck_test.ts's bounds).
      const ev = await evalEngine.evaluate(batch);
      assert.equal(ev.tokens, want.count);
      const evErr = Math.abs(ev.lossSum - want.lossSum) / want.lossSum;
      assert.ok(evErr <= 1e-5, `eval loss sum ${ev.lossSum} vs ${want.lossSum}`);
      assert.equal(ev.correct, want.correct);
      // Quantizing on load from the bf16 shards gives the same 4-bit model: the same bits.
      assert.equal((await evalOnLoad.evaluate(batch)).lossSum, ev.lossSum);

      const got = await train.accumulateGradients([batch]);
      assert.ok(Math.abs(got.loss - want.loss) / want.loss <= 1e-5, `${got.loss} vs ${want.loss}`);
      const grads = await train.readGradients();
      let worst = 0;
      for (const s of train.layout.slots) {
        const key = `${s.layer}.${s.module}`;
        const e = relErr(
          grads.subarray(s.offset, s.offset + s.numel),
          (s.kind === "A" ? want.gradA : want.gradB).get(key)!,
        );
        assert.ok(e <= 1e-4, `${key}.${s.kind}: relative error ${e}`);
        worst = Math.max(worst, e);
      }
      console.log(
        `eval loss rel err ${evErr.toExponential(2)}, worst LoRA grad ${worst.toExponential(2)}`,
      );
    } finally {
      evalEngine.destroy();
      evalOnLoad.destroy();
      train.destroy();
      model.destroy();
      onLoad.destroy();
    }
  },
);

gpuTest(
  "Qwen2 tied: train, PEFT adapter, Evaluate and merged export keep biases and the tie",
  async () => {
    const dir = await qwenFixture();
    const qDir = join(dir, "q");
    const hp = {
      learningRate: 3e-3,
      lrScheduler: "constant" as const,
      warmupSteps: 0,
      maxSteps: 2,
      epochs: 1,
      microBatchSize: 2,
      gradientAccumulationSteps: 1,
      maxSeqLen: 48,
      maxGradNorm: 1,
      weightDecay: 0,
      seed: 5,
      gradientCheckpointing: true,
      saveSteps: 0,
      evalSteps: 0,
      optimizerGpuBudgetBytes: 0,
      packing: false,
    };
    const summary = await runTrainJob(gpu, {
      baseModelDir: qDir,
      datasetPath: join(dir, "model", "train.jsonl"),
      outputDir: join(dir, "adapter"),
      lora: { ...SPEC, targets: ["q", "v", "down"] },
      hp,
      labels: { baseModel: "q", dataset: "model/train.jsonl" },
    }, {});
    assert.equal(summary.steps, 2);
    const cfg = await configOf(qDir);
    const adapter = await loadAdapter(join(dir, "adapter"), cfg);
    assert.ok(adapter.flat.some((x) => x !== 0));
    const ev = await runEvaluateJob(gpu, {
      baseModelDir: qDir,
      adapterDir: join(dir, "adapter"),
      datasetPath: join(dir, "model", "eval.jsonl"),
      maxSeqLen: 48,
      batchSize: 2,
      samplePrompts: [],
      maxNewTokens: 0,
      labels: { baseModel: "q", dataset: "model/eval.jsonl", adapter: "adapter" },
    }, {});
    assert.ok(Number.isFinite(ev.loss) && ev.tokens > 0, `eval loss ${ev.loss}`);

    await mergeAdapter({
      baseModelDir: qDir,
      adapterDir: join(dir, "adapter"),
      outputDir: join(dir, "merged"),
      dtype: "BF16",
      overwrite: false,
    });
    const merged = await HfCheckpoint.open(join(dir, "merged"));
    const src = await HfCheckpoint.open(join(dir, "model"));
    try {
      // Same tensor names as the original checkpoint (biases included, no lm_head: tied).
      assert.deepEqual(new Set(merged.names()), new Set(src.names()));
      for (let l = 0; l < cfg.layers; l++) {
        for (const m of ["q", "k", "v"] as const) {
          const name = `${linearPath(l, m)}.bias`;
          assert.deepEqual(await merged.readBytes(name), await src.readBytes(name), name);
        }
      }
      assert.equal(merged.config.model_type, "qwen2");
      assert.equal(merged.config.tie_word_embeddings, true);
      assert.equal(merged.config.quantization_config, undefined);
    } finally {
      merged.close();
      src.close();
    }
  },
);

gpuTest(
  "Mistral (head_dim != hidden / heads): float64 loss, the same bits as Llama; sliding_window bounds max_seq_len",
  async (ctx) => {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-mistral-" });
    try {
      // head_dim 16 with hidden 80 and 4 heads: q/k/v are 64 wide, not hidden (as Mistral
      // NeMo's 128 of 5120 / 32): the layout follows head_dim everywhere.
      const opts = { layers: 1, headDim: 16, seed: 97, trainRecords: 8, evalRecords: 4 };
      await makeTinyLlama(join(dir, "llama"), opts);
      await makeTinyLlama(join(dir, "model"), { ...opts, modelType: "mistral", slidingWindow: 32 });
      await quantizeModel({
        modelDir: join(dir, "model"),
        outputDir: join(dir, "q"),
        quantType: "nf4",
        blocksize: 64,
        doubleQuant: true,
        skipModules: ["lm_head"],
        overwrite: false,
      });
      const llama = await loadBaseModel(ctx, join(dir, "llama"));
      const mistral = await loadBaseModel(ctx, join(dir, "q"));
      assert.equal(mistral.cfg.modelType, "mistral");
      assert.equal(mistral.cfg.slidingWindow, 32);
      assert.equal(mistral.cfg.headDim, 16);
      const ref = await refWeightsOf(join(dir, "q"), mistral.cfg);
      const { flat, ref: refLora } = randomLora(mistral.cfg, 98);
      const engines = [llama, mistral].map((m) =>
        new TrainingEngine(ctx, m, {
          lora: SPEC,
          maxShape: { batch: 2, seq: 29 },
          gradientCheckpointing: false,
          seed: 0,
          maxGradNorm: 0,
          optimizerGpuBudgetBytes: 0,
          adapter: flat,
          evalOnly: true,
        })
      );
      try {
        // 29 tokens fit the window of 32: full causal attention is the sliding-window math.
        const batch = randomBatch(llama.cfg.vocab, [29, 13], 99);
        const [a, b] = [await engines[0].evaluate(batch), await engines[1].evaluate(batch)];
        assert.equal(b.lossSum, a.lossSum);
        const want = forwardBackward(refConfig(mistral.cfg), ref, refLora, batch);
        assert.ok(
          Math.abs(b.lossSum - want.lossSum) <= 1e-5 * want.lossSum,
          `${b.lossSum} vs ${want.lossSum}`,
        );
      } finally {
        for (const e of engines) e.destroy();
        llama.destroy();
        mistral.destroy();
      }
      await assert.rejects(
        runEvaluateJob(gpu, {
          baseModelDir: join(dir, "model"),
          datasetPath: join(dir, "model", "eval.jsonl"),
          maxSeqLen: 33,
          batchSize: 1,
          samplePrompts: [],
          maxNewTokens: 0,
          labels: { baseModel: "model", dataset: "model/eval.jsonl" },
        }, {}),
        (e: unknown) => {
          assert.ok(e instanceof QloradError && e.kind === "invalid_argument", String(e));
          assert.match(e.message, /max_seq_len 33 exceeds the model's "sliding_window" 32/);
          assert.ok(e.message.includes("model/config.json"), e.message);
          return true;
        },
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test({
  name: "(remove the Qwen2 fixture)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    if (fixtureDir) await Deno.remove(fixtureDir, { recursive: true });
    fixtureDir = undefined;
  },
});

closeGpuAfterTests();
