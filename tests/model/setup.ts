/**
 * A tiny random Llama for engine tests: linears quantized to NF4 (+DQ), uploaded to the GPU,
 * and the float64 reference's weights made from the *dequantized* values, and embeddings and
 * lm_head rounded to bf16 as the GPU stores them, so both sides compute the same function.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { LINEAR_MODULES, type LinearModule } from "../../src/model/config.ts";
import { uploadBaseModel } from "../../src/model/load.ts";
import type { BaseModel } from "../../src/model/base_model.ts";
import { dequantizeWeight, quantizeWeight } from "../../src/quant/quant_state.ts";
import { LoraLayout, type LoraSpec } from "../../src/model/lora.ts";
import {
  moduleShape,
  randomRefSetup,
  type RefConfig,
  type RefLora,
  type RefWeights,
} from "../reference/llama_f64.ts";
import { roundBf16Array } from "../reference/float16_f64.ts";

export const TINY: LlamaConfig = {
  hidden: 80,
  intermediate: 216,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  headDim: 20,
  vocab: 61,
  rmsEps: 1e-5,
  ropeTheta: 10000,
  tieEmbeddings: false,
  maxPositions: 64,
  eosTokenIds: [],
  torchDtype: "float32",
};

export function refConfig(cfg: LlamaConfig): RefConfig {
  return {
    hidden: cfg.hidden,
    intermediate: cfg.intermediate,
    layers: cfg.layers,
    heads: cfg.heads,
    kvHeads: cfg.kvHeads,
    headDim: cfg.headDim,
    vocab: cfg.vocab,
    rmsEps: cfg.rmsEps,
    ropeTheta: cfg.ropeTheta,
    ropeScaling: cfg.ropeScaling,
    tieEmbeddings: cfg.tieEmbeddings,
    ...(cfg.qkvBias ? { qkvBias: true } : {}),
  };
}

const f32 = (a: ArrayLike<number>) => Float32Array.from(a);
const f64 = (a: Float32Array) => Float64Array.from(a);

export interface TinySetup {
  model: BaseModel;
  layout: LoraLayout;
  /** Float64 reference weights (dequantized linears, bf16 embeddings and lm_head, f32 norms). */
  refWeights: RefWeights;
  /** Random non-zero A and B (a gradient check needs both), f32-rounded. */
  refLora: RefLora;
  /** The same LoRA in the engine's flat layout. */
  adapter: Float32Array;
}

export function tinySetup(
  ctx: GpuContext,
  cfg: LlamaConfig,
  seed: number,
  spec: LoraSpec,
): TinySetup {
  const rc = refConfig(cfg);
  const { weights, lora } = randomRefSetup(rc, seed, {
    r: spec.r,
    alpha: spec.alpha,
    targets: spec.targets,
    useRslora: spec.useRslora,
  });
  const layers = weights.layers.map((l) => {
    const linears = {} as Record<LinearModule, ReturnType<typeof quantizeWeight>>;
    for (const m of LINEAR_MODULES) {
      linears[m] = quantizeWeight(f32(l[m]), moduleShape(rc, m), {
        quantType: "nf4",
        blocksize: 64,
        doubleQuant: true,
        dtype: "float32",
      });
      l[m] = f64(dequantizeWeight(linears[m]));
    }
    l.inputNorm = f64(f32(l.inputNorm));
    l.postNorm = f64(f32(l.postNorm));
    return { inputNorm: f32(l.inputNorm), postNorm: f32(l.postNorm), linears };
  });
  // uploadBaseModel rounds these to bf16 (nearest even); the reference rounds independently.
  weights.embed = roundBf16Array(weights.embed);
  weights.norm = f64(f32(weights.norm));
  if (weights.lmHead) weights.lmHead = roundBf16Array(weights.lmHead);
  const model = uploadBaseModel(ctx, {
    cfg,
    embed: f32(weights.embed),
    finalNorm: f32(weights.norm),
    lmHead: weights.lmHead ? f32(weights.lmHead) : undefined,
    layers,
  });
  const layout = new LoraLayout(cfg, spec);
  const adapter = new Float32Array(layout.totalFloats);
  for (const s of layout.slots) {
    const key = `${s.layer}.${s.module}`;
    const src = (s.kind === "A" ? lora.A : lora.B).get(key)!;
    const rounded = f32(src);
    adapter.set(rounded, s.offset);
    (s.kind === "A" ? lora.A : lora.B).set(key, f64(rounded));
  }
  return { model, layout, refWeights: weights, refLora: lora, adapter };
}

/** Random token sequences of the given lengths with some labels masked (-100). */
export function randomBatch(
  vocab: number,
  lengths: number[],
  seed: number,
  maskEvery = 4,
): { tokens: number[][]; labels: number[][] } {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  const tokens = lengths.map((n) => Array.from({ length: n }, () => Math.floor(next() * vocab)));
  const labels = tokens.map((t, si) =>
    t.map((_, i) => ((i + si) % maskEvery === 1 ? -100 : Math.floor(next() * vocab)))
  );
  return { tokens, labels };
}

/** max |a - b| / max |b| over one tensor. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? (num === 0 ? 0 : Infinity) : num / den;
}
