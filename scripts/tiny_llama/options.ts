/**
 * The tiny Llama fixture's options: every knob with its default, the "small" benchmark preset,
 * and the validation that turns a partial set into a complete one (errors name the option).
 */
import { invalidArgument } from "../../src/util/errors.ts";

/** The architectures the fixture writes (config.json `model_type`). */
export type TinyModelType = "llama" | "mistral" | "qwen2";

export interface TinyLlamaOptions {
  /** config.json layout and tensors: qwen2 adds q/k/v biases. */
  modelType: TinyModelType;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Default hidden / heads. */
  headDim: number;
  /** BPE merges to learn (fewer if the corpus runs out of repeated pairs). */
  merges: number;
  maxPositions: number;
  ropeTheta: number;
  rmsNormEps: number;
  /** Std of the normal init of embeddings and linear weights. */
  initStd: number;
  /** Std of the noise around 1 in the RMSNorm weights. */
  normNoise: number;
  dtype: "BF16" | "F16" | "F32";
  /** 1: model.safetensors; more: model-0000k-of-0000n.safetensors + index. */
  shards: number;
  seed: number;
  trainRecords: number;
  evalRecords: number;
  tieWordEmbeddings: boolean;
  /** Std of the normal init of the q/k/v biases (qwen2). */
  biasStd: number;
  /** mistral / qwen2 `sliding_window` (qwen2 sets `use_sliding_window` when not null). */
  slidingWindow: number | null;
  /** config.json `rope_scaling` (e.g. Llama 3's llama3 scaling), null for none. */
  ropeScaling: Record<string, unknown> | null;
  /** Fields written over config.json last (tests of refused configs). */
  configOverrides: Record<string, unknown>;
  /** Replace an existing non-empty folder (an empty one is always replaced). */
  overwrite: boolean;
}

export const TINY_LLAMA_DEFAULTS: Readonly<Omit<TinyLlamaOptions, "headDim">> = {
  modelType: "llama",
  hidden: 80,
  intermediate: 216,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  merges: 320,
  maxPositions: 256,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  initStd: 0.06,
  normNoise: 0.05,
  dtype: "BF16",
  shards: 1,
  seed: 1234,
  trainRecords: 320,
  evalRecords: 64,
  tieWordEmbeddings: false,
  biasStd: 0.3,
  slidingWindow: null,
  ropeScaling: null,
  configOverrides: {},
  overwrite: false,
};

/** A bigger model (about 25M parameters) for benchmarks. */
export const SMALL_LLAMA_PRESET: Partial<TinyLlamaOptions> = {
  hidden: 512,
  intermediate: 1376,
  layers: 8,
  heads: 8,
  kvHeads: 4,
  initStd: 0.03,
};

/** Defaults filled in, head_dim derived, every option checked (errors name the option). */
export function resolveOptions(opts: Partial<TinyLlamaOptions>): TinyLlamaOptions {
  const o = { ...TINY_LLAMA_DEFAULTS, ...opts } as TinyLlamaOptions;
  o.headDim = opts.headDim ?? o.hidden / o.heads;
  const ints: (keyof TinyLlamaOptions)[] = [
    "hidden",
    "intermediate",
    "layers",
    "heads",
    "kvHeads",
    "headDim",
    "maxPositions",
    "shards",
    "trainRecords",
    "evalRecords",
  ];
  for (const k of ints) {
    const v = o[k] as number;
    if (!Number.isInteger(v) || v < 1) {
      throw invalidArgument(`${k}: must be a positive integer, got ${v}`);
    }
  }
  if (!Number.isInteger(o.merges) || o.merges < 0) throw invalidArgument(`merges: got ${o.merges}`);
  if (o.heads % o.kvHeads !== 0) {
    throw invalidArgument(`kvHeads: ${o.kvHeads} does not divide heads ${o.heads}`);
  }
  if (!["BF16", "F16", "F32"].includes(o.dtype)) throw invalidArgument(`dtype: got ${o.dtype}`);
  if (!["llama", "mistral", "qwen2"].includes(o.modelType)) {
    throw invalidArgument(`modelType: got ${o.modelType}`);
  }
  return o;
}
