/**
 * Random Llama models for benchmarks: linears quantized to NF4 with double quant (as QLoRA
 * loads them), uniform weights of the usual scale. Speed does not depend on the values, so no
 * checkpoint needs to be read or written.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import {
  LINEAR_MODULES,
  type LinearModule,
  linearShape,
  type LlamaConfig,
} from "../../src/model/config.ts";
import type { BaseModel } from "../../src/model/base_model.ts";
import { type HostLayer, uploadBaseModel } from "../../src/model/load.ts";
import { quantizeWeight } from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";

function base(over: Partial<LlamaConfig>): LlamaConfig {
  return {
    hidden: 80,
    intermediate: 216,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 20,
    vocab: 580,
    rmsEps: 1e-5,
    ropeTheta: 10000,
    tieEmbeddings: false,
    maxPositions: 256,
    eosTokenIds: [],
    torchDtype: "float32",
    ...over,
  };
}

/** The dimensions of scripts/make_tiny_llama.ts's default fixture (about 0.24M parameters). */
export const TINY_BENCH: LlamaConfig = base({});

/**
 * About 50M parameters: SMALL_LLAMA_PRESET's layer (hidden 512, intermediate 1376, 8 heads over
 * 4 kv heads) 16 times, a 4096-word vocabulary, untied lm_head.
 */
export const MID_BENCH: LlamaConfig = base({
  hidden: 512,
  intermediate: 1376,
  layers: 16,
  heads: 8,
  kvHeads: 4,
  headDim: 64,
  vocab: 4096,
  maxPositions: 2048,
});

export function parameterCount(cfg: LlamaConfig): number {
  let linear = 0;
  for (const m of LINEAR_MODULES) {
    const [o, i] = linearShape(cfg, m);
    linear += o * i;
  }
  const norms = (2 * cfg.layers + 1) * cfg.hidden;
  const embeddings = cfg.vocab * cfg.hidden * (cfg.tieEmbeddings ? 1 : 2);
  return cfg.layers * linear + norms + embeddings;
}

function uniform(rng: Rng, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rng.next() - 1) * scale;
  return out;
}

export function randomModel(ctx: GpuContext, cfg: LlamaConfig, seed: number): BaseModel {
  const rng = new Rng(seed);
  const norm = () => uniform(rng, cfg.hidden, 0.1).map((x) => 1 + x);
  const layers: HostLayer[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const linears = {} as Record<LinearModule, ReturnType<typeof quantizeWeight>>;
    for (const m of LINEAR_MODULES) {
      const shape = linearShape(cfg, m);
      linears[m] = quantizeWeight(
        uniform(rng, shape[0] * shape[1], 1 / Math.sqrt(shape[1])),
        shape,
        { quantType: "nf4", blocksize: 64, doubleQuant: true, dtype: "float32" },
      );
    }
    layers.push({ inputNorm: norm(), postNorm: norm(), linears });
  }
  return uploadBaseModel(ctx, {
    cfg,
    embed: uniform(rng, cfg.vocab * cfg.hidden, 0.5),
    lmHead: cfg.tieEmbeddings ? undefined : uniform(rng, cfg.vocab * cfg.hidden, 0.05),
    finalNorm: norm(),
    layers,
  });
}

/** Full-length random sequences with next-token labels (the last position masked). */
export function randomBatch(
  vocab: number,
  batch: number,
  seq: number,
  seed: number,
): { tokens: number[][]; labels: number[][] } {
  const rng = new Rng(seed);
  const tokens = Array.from(
    { length: batch },
    () => Array.from({ length: seq }, () => rng.int(vocab)),
  );
  const labels = tokens.map((t) => t.map((_, i) => (i + 1 < t.length ? t[i + 1] : -100)));
  return { tokens, labels };
}
