/**
 * The GGUF export tests' model: the tiny Llama fixture with hidden and intermediate sizes that
 * are multiples of 32 (ggml's Q8_0/Q4_0 block; with the default 80/216 every quantized matrix
 * would fall back to F16 and the quantized checks would check nothing), quantized to NF4 + double
 * quant as qlorad trains it, a random PEFT adapter with both A and B non-zero on every linear,
 * and the float64 reference weights of base + adapter read independently of src/export.
 */
import { join } from "node:path";
import { makeTinyLlama, type TinyLlamaOptions } from "../../scripts/tiny_llama/mod.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";
import { saveAdapter } from "../../src/train/peft.ts";
import { LoraLayout } from "../../src/model/lora.ts";
import { LINEAR_MODULES, linearPath, llamaConfigFromHf } from "../../src/model/config.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { SafetensorsFile } from "../../src/io/safetensors.ts";
import { fromBnbTensors } from "../../src/quant/quant_state.ts";
import { dequantizeF64 } from "../reference/dequant_f64.ts";
import { Rng } from "../../src/util/random.ts";
import {
  loraKey,
  type RefConfig,
  type RefLayerWeights,
  type RefLora,
  type RefWeights,
} from "../reference/llama_f64.ts";
import { refConfig } from "../model/setup.ts";
import { type ReadGguf, tensorValues } from "./gguf_read.ts";

export interface GgufFixture {
  dir: string;
  /** The NF4 checkpoint (with tokenizer files). */
  baseDir: string;
  adapterDir: string;
  cfg: LlamaConfig;
  rc: RefConfig;
  /** Dequantized base, as float64 (HF layout: q/k rows not permuted). */
  weights: RefWeights;
  lora: RefLora;
  layout: LoraLayout;
  flat: Float32Array;
}

/** Variations of the fixture: a Qwen2 (q/k/v biases, NeoX RoPE), Llama 3 RoPE scaling, tied embeddings. */
export type GgufFixtureOptions = Pick<
  Partial<TinyLlamaOptions>,
  "modelType" | "ropeScaling" | "tieWordEmbeddings"
>;

export async function makeGgufFixture(options: GgufFixtureOptions = {}): Promise<GgufFixture> {
  const dir = await Deno.makeTempDir({ prefix: "gguf-" });
  await makeTinyLlama(join(dir, "m"), {
    hidden: 96,
    intermediate: 160,
    heads: 4,
    kvHeads: 2,
    layers: 2,
    initStd: 0.1,
    ...options,
  });
  const baseDir = join(dir, "q");
  await quantizeModel({
    modelDir: join(dir, "m"),
    outputDir: baseDir,
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
    skipModules: ["lm_head"],
    overwrite: false,
  });
  const cfg = llamaConfigFromHf(JSON.parse(await Deno.readTextFile(join(baseDir, "config.json"))));
  const spec = { r: 4, alpha: 8, dropout: 0, targets: [...LINEAR_MODULES], useRslora: true };
  const layout = new LoraLayout(cfg, spec);
  const flat = new Float32Array(layout.totalFloats);
  const rng = new Rng(21);
  for (const s of layout.slots) {
    for (let i = 0; i < s.numel; i++) flat[s.offset + i] = rng.normal() * 0.15;
  }
  const adapterDir = join(dir, "a");
  await saveAdapter(adapterDir, layout, flat, "q");

  const rc = refConfig(cfg);
  const st = await SafetensorsFile.open(join(baseDir, "model.safetensors"));
  try {
    const f64 = async (n: string) => Float64Array.from(await st.readFloat32(n));
    const linear = async (name: string) => {
      const group = new Map<
        string,
        { dtype: string; shape: readonly number[]; data: Uint8Array }
      >();
      for (const n of st.names().filter((n) => n.startsWith(name))) {
        group.set(n, {
          dtype: st.info(n).dtype,
          shape: st.info(n).shape,
          data: await st.readBytes(n),
        });
      }
      // The independent dequantizer (tests/reference), not the exporter's own: its f64 product
      // of two float32 values is exact, so fround gives bitsandbytes' float32 value.
      const q = fromBnbTensors(name.slice(0, -"weight".length), (n) => group.get(n), "q");
      return Float64Array.from(dequantizeF64(q), Math.fround);
    };
    const layers: RefLayerWeights[] = [];
    for (let l = 0; l < cfg.layers; l++) {
      const w: Partial<RefLayerWeights> = {
        inputNorm: await f64(`model.layers.${l}.input_layernorm.weight`),
        postNorm: await f64(`model.layers.${l}.post_attention_layernorm.weight`),
      };
      for (const m of LINEAR_MODULES) w[m] = await linear(`${linearPath(l, m)}.weight`);
      if (cfg.qkvBias) {
        w.bias = {};
        for (const m of ["q", "k", "v"] as const) w.bias[m] = await f64(`${linearPath(l, m)}.bias`);
      }
      layers.push(w as RefLayerWeights);
    }
    const weights: RefWeights = {
      embed: await f64("model.embed_tokens.weight"),
      layers,
      norm: await f64("model.norm.weight"),
      lmHead: cfg.tieEmbeddings ? undefined : await f64("lm_head.weight"),
    };
    const A = new Map<string, Float64Array>();
    const B = new Map<string, Float64Array>();
    for (const s of layout.slots) {
      const v = Float64Array.from(flat.subarray(s.offset, s.offset + s.numel));
      (s.kind === "A" ? A : B).set(loraKey(s.layer, s.module), v);
    }
    const lora: RefLora = {
      r: spec.r,
      scaling: layout.scaling,
      targets: [...LINEAR_MODULES],
      A,
      B,
    };
    return { dir, baseDir, adapterDir, cfg, rc, weights, lora, layout, flat };
  } finally {
    st.close();
  }
}

/** Held-out text: not a line of the fixture's training data, and mixing words and digits. */
export const HELD_OUT_TEXT =
  "The capital of Norway is Oslo. What is 7 plus 12? The answer is 19, and the market opens early.";

/** Inverse of the exporter's llama q/k row permutation: old row j·hd/2 + i <- new row 2i + j. */
export function unpermuteQk(w: Float64Array, heads: number, hd: number): Float64Array {
  const cols = w.length / (heads * hd);
  const out = new Float64Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * hd + 2 * i + j) * cols;
        out.set(w.subarray(from, from + cols), (h * hd + j * (hd / 2) + i) * cols);
      }
    }
  }
  return out;
}

/**
 * The float64 reference weights a GGUF file holds (decoded; for llama.cpp's `llama`
 * architecture the q/k rows are put back in Hugging Face order).
 */
export function weightsFromGguf(g: ReadGguf, rc: RefConfig): RefWeights {
  const t = (n: string) => tensorValues(g, n);
  const names: Record<string, string> = {
    q: "attn_q",
    k: "attn_k",
    v: "attn_v",
    o: "attn_output",
    gate: "ffn_gate",
    up: "ffn_up",
    down: "ffn_down",
  };
  const layers: RefLayerWeights[] = [];
  for (let l = 0; l < rc.layers; l++) {
    const w: Partial<RefLayerWeights> = {
      inputNorm: t(`blk.${l}.attn_norm.weight`),
      postNorm: t(`blk.${l}.ffn_norm.weight`),
    };
    for (const m of LINEAR_MODULES) w[m] = t(`blk.${l}.${names[m]}.weight`);
    if (rc.qkvBias) {
      w.bias = {};
      for (const m of ["q", "k", "v"] as const) w.bias[m] = t(`blk.${l}.${names[m]}.bias`);
    } else {
      w.q = unpermuteQk(w.q!, rc.heads, rc.headDim);
      w.k = unpermuteQk(w.k!, rc.kvHeads, rc.headDim);
    }
    layers.push(w as RefLayerWeights);
  }
  return {
    embed: t("token_embd.weight"),
    layers,
    norm: t("output_norm.weight"),
    lmHead: g.tensors.has("output.weight") ? t("output.weight") : undefined,
  };
}
