/**
 * A real shape end to end: a 1-layer model with Llama-3-8B's dimensions (vocabulary 128,256,
 * hidden 4,096, GQA 32/8 heads of 128, intermediate 14,336, rope_theta 5e5, `llama3` RoPE
 * scaling), written as a 3-shard bf16 checkpoint in a temporary folder, quantized to NF4 + double
 * quant by the GPU kernel, loaded (bf16 embedding and lm_head, split into row chunks wherever a
 * table is larger than a binding), then evaluated and trained against the float64 reference
 * (tests/reference/llama_f64.ts) computed from the dequantized linears and the checkpoint's bf16
 * tables. Tokens are spread over the whole vocabulary, including the first and last ids.
 *
 * Bounds: the GPU accumulates in f32 over up to 14,336 products (relative rounding ~2^-24·√K
 * ≈ 7e-6 per dot product, compounded over a layer and a 128k-way softmax), so the loss is held to
 * 1e-5 relative and each LoRA tensor's gradient to 1e-4 of its largest element, the bounds of the
 * tiny model's gradient check (tests/model/gradcheck_test.ts); measured here: loss 4e-7..1.3e-6,
 * gradients <= 8.5e-6.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { llama3_8bConfig, writeRandomCheckpoint } from "../support/random_checkpoint.ts";
import { refConfig, relErr } from "./setup.ts";
import { forwardBackward, type RefLora, type RefWeights } from "../reference/llama_f64.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";
import { gpuQuantizer } from "../../src/quant/gpu_quantizer.ts";
import { loadBaseModel } from "../../src/model/load.ts";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";
import { dequantizeWeight, fromBnbTensors } from "../../src/quant/quant_state.ts";
import { bf16ArrayToF32 } from "../../src/io/dtype.ts";
import { LINEAR_MODULES, linearPath, llamaConfigFromHf } from "../../src/model/config.ts";
import { LoraLayout, type LoraSpec } from "../../src/model/lora.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { Rng } from "../../src/util/random.ts";

const SPEC: LoraSpec = {
  r: 2,
  alpha: 4,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};
const VOCAB = 128256;

/** Two sequences (7 and 5 tokens) over the whole vocabulary, some labels masked. */
function batch() {
  const rng = new Rng(31);
  const id = () => rng.int(VOCAB);
  const tokens = [
    [0, id(), VOCAB - 1, id(), 65535, id(), 65536],
    [id(), VOCAB - 2, id(), 1, id()],
  ];
  const labels = [
    [id(), -100, VOCAB - 1, id(), id(), 0, id()],
    [id(), id(), -100, VOCAB - 3, id()],
  ];
  return { tokens, labels };
}

const PREFIX = "qlorad-8b-";

/**
 * Removes the fixtures of runs that were killed before their cleanup (a folder holds 2 GB of
 * memory in /dev/shm): folder names carry the pid of the test that made them.
 */
async function sweepDeadRuns(dir: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(dir)) {
      const pid = e.name.startsWith(PREFIX) ? Number(e.name.slice(PREFIX.length).split("-")[0]) : 0;
      if (!Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) continue;
      try {
        await Deno.stat(`/proc/${pid}`);
      } catch {
        await Deno.remove(join(dir, e.name), { recursive: true }).catch(() => {});
      }
    }
  } catch {
    // No such folder, or no /proc: nothing to sweep.
  }
}

async function tempRoot(): Promise<string> {
  const prefix = `${PREFIX}${Deno.pid}-`;
  // /dev/shm when there is one: 5 GB of fixtures write there in a fraction of disk's time.
  try {
    await sweepDeadRuns("/dev/shm");
    return await Deno.makeTempDir({ dir: "/dev/shm", prefix });
  } catch {
    return await Deno.makeTempDir({ prefix });
  }
}

/** The float64 reference's weights from the quantized folder: dequantized linears, bf16 tables. */
async function referenceWeights(dir: string): Promise<RefWeights> {
  const ckpt = await HfCheckpoint.open(dir);
  try {
    const table = async (name: string) => {
      const bytes = await ckpt.readBytes(name);
      return bf16ArrayToF32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2));
    };
    const vector = async (name: string) => Float64Array.from(await table(name));
    const layer: Record<string, Float64Array> = {};
    for (const m of LINEAR_MODULES) {
      const prefix = `${linearPath(0, m)}.`;
      const tensors = new Map<
        string,
        { dtype: string; shape: readonly number[]; data: Uint8Array }
      >();
      for (const name of ckpt.names()) {
        if (!name.startsWith(`${prefix}weight`)) continue;
        const info = ckpt.info(name);
        tensors.set(name, {
          dtype: info.dtype,
          shape: info.shape,
          data: await ckpt.readBytes(name),
        });
      }
      layer[m] = Float64Array.from(
        dequantizeWeight(fromBnbTensors(prefix, (n) => tensors.get(n), dir)),
      );
    }
    return {
      embed: await table("model.embed_tokens.weight"),
      lmHead: await table("lm_head.weight"),
      norm: await vector("model.norm.weight"),
      layers: [{
        inputNorm: await vector("model.layers.0.input_layernorm.weight"),
        postNorm: await vector("model.layers.0.post_attention_layernorm.weight"),
        q: layer.q,
        k: layer.k,
        v: layer.v,
        o: layer.o,
        gate: layer.gate,
        up: layer.up,
        down: layer.down,
      }],
    };
  } finally {
    ckpt.close();
  }
}

/** Random non-zero A and B in the engine's flat layout, and the same values for the reference. */
function randomLora(layout: LoraLayout, seed: number): { flat: Float32Array; ref: RefLora } {
  const rng = new Rng(seed);
  const flat = new Float32Array(layout.totalFloats);
  const ref: RefLora = {
    r: SPEC.r,
    scaling: SPEC.alpha / SPEC.r,
    targets: [...SPEC.targets],
    A: new Map(),
    B: new Map(),
  };
  for (const s of layout.slots) {
    const values = new Float32Array(s.numel);
    for (let i = 0; i < s.numel; i++) values[i] = (rng.next() * 2 - 1) * 0.02;
    flat.set(values, s.offset);
    (s.kind === "A" ? ref.A : ref.B).set(`${s.layer}.${s.module}`, Float64Array.from(values));
  }
  return { flat, ref };
}

/** The reference LoRA with the engine's current adapter values (after optimizer steps). */
function loraFrom(layout: LoraLayout, flat: Float32Array, like: RefLora): RefLora {
  const out: RefLora = { ...like, A: new Map(), B: new Map() };
  for (const s of layout.slots) {
    const v = Float64Array.from(flat.subarray(s.offset, s.offset + s.numel));
    (s.kind === "A" ? out.A : out.B).set(`${s.layer}.${s.module}`, v);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function compare(
  layout: LoraLayout,
  got: { loss: number; grads: Float32Array },
  ref: ReturnType<typeof forwardBackward>,
  what: string,
): void {
  const lossErr = Math.abs(got.loss - ref.loss) / ref.loss;
  assert.ok(lossErr <= 1e-5, `${what}: loss ${got.loss} vs ${ref.loss} (rel ${lossErr})`);
  let worst = 0;
  for (const s of layout.slots) {
    const key = `${s.layer}.${s.module}`;
    const want = (s.kind === "A" ? ref.gradA : ref.gradB).get(key)!;
    const e = relErr(got.grads.subarray(s.offset, s.offset + s.numel), want);
    assert.ok(e <= 1e-4, `${what}: ${key}.${s.kind} gradient relative error ${e}`);
    worst = Math.max(worst, e);
  }
  console.log(
    `${what}: loss ${got.loss.toFixed(6)} (rel err ${lossErr.toExponential(2)}), ` +
      `worst LoRA gradient rel err ${worst.toExponential(2)}`,
  );
}

gpuTest(
  "Llama-3-8B shapes, 1 layer: quantized on the GPU, evaluated and trained 2 steps against float64",
  async (ctx) => {
    const root = await tempRoot();
    try {
      const src = join(root, "bf16");
      const quant = join(root, "nf4");
      await writeRandomCheckpoint(src, llama3_8bConfig(1), {
        seed: 8,
        dtype: "BF16",
        maxShardBytes: 1.2 * 1024 ** 3,
      });
      await quantizeModel({
        modelDir: src,
        outputDir: quant,
        quantType: "nf4",
        blocksize: 64,
        doubleQuant: true,
        skipModules: ["lm_head"],
        overwrite: false,
        quantizer: gpuQuantizer(ctx),
      });
      await Deno.remove(src, { recursive: true });
      const cfg = llamaConfigFromHf(
        JSON.parse(await Deno.readTextFile(join(quant, "config.json"))),
      );
      assert.equal(cfg.vocab, VOCAB);
      const model = await loadBaseModel(ctx, quant);
      // 1 GiB bf16 tables exceed every CPU adapter's binding limit (128 MiB on llvmpipe and
      // lavapipe): the chunked embedding and lm_head paths run at the real size.
      assert.ok(model.lmHead.chunks.length > 1, `lm_head in ${model.lmHead.chunks.length} chunk`);
      assert.ok(model.embed.chunks.length > 1, `embed in ${model.embed.chunks.length} chunk`);
      const weights = await referenceWeights(quant);
      const layout = new LoraLayout(cfg, SPEC);
      const { flat, ref: lora } = randomLora(layout, 5);
      const engine = new TrainingEngine(ctx, model, {
        lora: SPEC,
        maxShape: { batch: 2, seq: 7 },
        gradientCheckpointing: true,
        // The f32 bounds above; f16 checkpoints are tested in tests/model/f16_checkpoint_test.ts.
        activationPrecision: "f32",
        seed: 3,
        maxGradNorm: 0,
        optimizerGpuBudgetBytes: 0,
        adapter: flat,
      });
      try {
        const b = batch();
        const rc = refConfig(cfg);

        // Evaluate: loss and token accuracy of the whole batch.
        const evaluated = await engine.evaluate(b);
        const ref0 = forwardBackward(rc, weights, lora, b);
        const evalLoss = evaluated.lossSum / evaluated.tokens;
        assert.equal(evaluated.tokens, ref0.count);
        assert.equal(evaluated.correct, ref0.correct);
        assert.ok(
          Math.abs(evalLoss - ref0.loss) / ref0.loss <= 1e-5,
          `eval ${evalLoss} vs ${ref0.loss}`,
        );

        // Train 2 steps; each step's gradients (left in the engine by trainStep, no clipping)
        // are checked against the reference at the adapter that step started from.
        let adapter = flat;
        for (let step = 0; step < 2; step++) {
          const ref = step === 0
            ? ref0
            : forwardBackward(rc, weights, loraFrom(layout, adapter, lora), b);
          const r = await engine.trainStep([b], 1e-3);
          compare(
            layout,
            { loss: r.loss, grads: await engine.readGradients() },
            ref,
            `step ${step + 1}`,
          );
          adapter = await engine.readAdapter();
        }
        assert.ok(maxAbsDiff(adapter, flat) > 0, "the adapter moved");
      } finally {
        engine.destroy();
        model.destroy();
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

closeGpuAfterTests();
