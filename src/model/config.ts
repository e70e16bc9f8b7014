/**
 * Llama-family model configuration from a Hugging Face config.json, validated: Llama 1/2/3/3.x
 * (and TinyLlama), Mistral and Qwen2/2.5. Anything else, and any field whose value would change
 * the math in a way the kernels do not implement, is refused naming the file and the field.
 * Fields that only affect inference, logging or parallel layout are ignored.
 */
import { invalidArgument } from "../util/errors.ts";
import type { RopeScaling } from "../kernels/rope.ts";
import { checkConfigBounds } from "./config_bounds.ts";

// The rope kernel defines the scaling it implements; the model config carries it.
export type { RopeScaling };

/** The `model_type`s we implement: one decoder (RMSNorm, RoPE, GQA, SwiGLU) with small variations. */
export const MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;
export type ModelType = typeof MODEL_TYPES[number];

export interface LlamaConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  rmsEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  tieEmbeddings: boolean;
  maxPositions: number;
  bosTokenId?: number;
  eosTokenIds: number[];
  torchDtype: string;
  /** config.json `model_type`; absent means llama. */
  modelType?: ModelType;
  /** q/k/v projections carry a bias (Qwen2); o, gate, up, down never do. */
  qkvBias?: boolean;
  /**
   * Sliding-window attention in effect for some layer: a token sees only the last
   * `slidingWindow` positions. We implement full causal attention, which is the same math for
   * sequences of at most this many tokens, so jobs are held to that (checkSequenceLength).
   */
  slidingWindow?: number;
}

type Json = Record<string, unknown>;

/**
 * transformers' defaults where config.json may leave a field out (LlamaConfig, MistralConfig,
 * Qwen2Config). `kvHeads` undefined: num_key_value_heads defaults to num_attention_heads.
 */
const DEFAULTS: Record<
  ModelType,
  { kvHeads?: number; maxPositions: number; window: number | null }
> = {
  llama: { maxPositions: 2048, window: null },
  mistral: { kvHeads: 8, maxPositions: 4096 * 32, window: 4096 },
  qwen2: { kvHeads: 32, maxPositions: 32768, window: 4096 },
};

function int(cfg: Json, key: string, file: string, fallback?: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw invalidArgument(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function num(cfg: Json, key: string, file: string, fallback: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw invalidArgument(`${file}: "${key}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function unsupported(file: string, field: string, value: unknown, why: string): never {
  throw invalidArgument(`${file}: "${field}" ${JSON.stringify(value)} is not supported: ${why}`);
}

/**
 * RoPE settings: `rope_scaling` (transformers 4.x; `rope_type` or the older `type`) or
 * `rope_parameters` (transformers 5, which also carries rope_theta). Implemented: default,
 * linear, llama3. Others (dynamic, yarn, longrope, ...) change the frequencies or scale the
 * attention and are refused.
 */
function parseRope(
  cfg: Json,
  file: string,
): { theta: number; scaling?: RopeScaling } {
  const field = cfg.rope_parameters !== undefined && cfg.rope_parameters !== null
    ? "rope_parameters"
    : "rope_scaling";
  const raw = cfg[field];
  const theta = num(
    cfg,
    "rope_theta",
    file,
    typeof raw === "object" && raw !== null && typeof (raw as Json).rope_theta === "number"
      ? (raw as Json).rope_theta as number
      : 10000,
  );
  if (raw === null || raw === undefined) return { theta };
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw invalidArgument(`${file}: "${field}" must be an object`);
  }
  const r = raw as Json;
  if (Object.values(r).some((v) => typeof v === "object" && v !== null && !Array.isArray(v))) {
    unsupported(file, field, raw, "per-layer-type RoPE parameters are not implemented");
  }
  const prf = r.partial_rotary_factor;
  if (prf !== undefined && prf !== null && prf !== 1) {
    unsupported(file, `${field}.partial_rotary_factor`, prf, "RoPE rotates the whole head");
  }
  const type = r.rope_type ?? r.type ?? "default";
  const where = `${file} ${field}`;
  if (type === "default") return { theta };
  if (type === "linear") return { theta, scaling: { type, factor: num(r, "factor", where, NaN) } };
  if (type === "llama3") {
    return {
      theta,
      scaling: {
        type,
        factor: num(r, "factor", where, NaN),
        lowFreqFactor: num(r, "low_freq_factor", where, NaN),
        highFreqFactor: num(r, "high_freq_factor", where, NaN),
        originalMaxPositionEmbeddings: int(r, "original_max_position_embeddings", where),
      },
    };
  }
  return unsupported(file, `${field}.rope_type`, type, "implemented: default, linear, llama3");
}

/**
 * The sliding window that transformers would apply to some layer, or undefined for full causal
 * attention everywhere. Mistral: `sliding_window` on every layer (null turns it off; absent means
 * MistralConfig's 4096). Qwen2: only with `use_sliding_window`, on the layers `layer_types` marks
 * "sliding_attention" (or, without layer_types, those from `max_window_layers` on). Llama has no
 * sliding window (LlamaConfig ignores the field).
 */
function parseSlidingWindow(
  cfg: Json,
  type: ModelType,
  layers: number,
  file: string,
): number | undefined {
  if (type === "llama") return undefined;
  const raw = "sliding_window" in cfg ? cfg.sliding_window : DEFAULTS[type].window;
  if (raw === null || raw === undefined) return undefined;
  if (typeof raw !== "number" || !Number.isInteger(raw) || raw <= 0) {
    throw invalidArgument(
      `${file}: "sliding_window" must be a positive integer or null, got ${JSON.stringify(raw)}`,
    );
  }
  if (type === "mistral") return raw;
  if (cfg.use_sliding_window !== true) return undefined;
  const layerTypes = cfg.layer_types;
  if (layerTypes !== undefined && layerTypes !== null) {
    if (
      !Array.isArray(layerTypes) || layerTypes.length !== layers ||
      !layerTypes.every((t) => t === "full_attention" || t === "sliding_attention")
    ) {
      throw invalidArgument(
        `${file}: "layer_types" must list "full_attention" or "sliding_attention" for each of the ${layers} layers`,
      );
    }
    return layerTypes.includes("sliding_attention") ? raw : undefined;
  }
  const full = cfg.max_window_layers ?? 28;
  if (typeof full !== "number" || !Number.isInteger(full) || full < 0) {
    throw invalidArgument(
      `${file}: "max_window_layers" must be a non-negative integer, got ${JSON.stringify(full)}`,
    );
  }
  return layers > full ? raw : undefined;
}

export function llamaConfigFromHf(raw: unknown, file = "config.json"): LlamaConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw invalidArgument(`${file}: expected a JSON object`);
  }
  const cfg = raw as Json;
  checkConfigBounds(cfg, file);
  const modelType = (cfg.model_type ?? "llama") as ModelType;
  if (!MODEL_TYPES.includes(modelType)) {
    unsupported(file, "model_type", cfg.model_type, `implemented: ${MODEL_TYPES.join(", ")}`);
  }
  refuseUnimplemented(cfg, modelType, file);
  const hidden = int(cfg, "hidden_size", file);
  const heads = int(cfg, "num_attention_heads", file);
  const kvHeads = int(cfg, "num_key_value_heads", file, DEFAULTS[modelType].kvHeads ?? heads);
  if (heads % kvHeads !== 0) {
    throw invalidArgument(
      `${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`,
    );
  }
  const headDim = int(cfg, "head_dim", file, Math.floor(hidden / heads));
  if (headDim % 2 !== 0) throw invalidArgument(`${file}: head_dim ${headDim} must be even (RoPE)`);
  const layers = int(cfg, "num_hidden_layers", file);
  const rope = parseRope(cfg, file);
  const eos = cfg.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.map(Number) : eos == null ? [] : [Number(eos)];
  const dtype = cfg.torch_dtype ?? cfg.dtype;
  const out: LlamaConfig = {
    hidden,
    intermediate: int(cfg, "intermediate_size", file),
    layers,
    heads,
    kvHeads,
    headDim,
    vocab: int(cfg, "vocab_size", file),
    rmsEps: num(cfg, "rms_norm_eps", file, 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    tieEmbeddings: cfg.tie_word_embeddings === true,
    maxPositions: int(cfg, "max_position_embeddings", file, DEFAULTS[modelType].maxPositions),
    bosTokenId: typeof cfg.bos_token_id === "number" ? cfg.bos_token_id : undefined,
    eosTokenIds,
    torchDtype: typeof dtype === "string" ? dtype : "float32",
    modelType,
    qkvBias: modelType === "qwen2",
  };
  const window = parseSlidingWindow(cfg, modelType, layers, file);
  if (window !== undefined) out.slidingWindow = window;
  return out;
}

/**
 * Fields of these architectures' configs whose non-default values change the forward or the
 * training math beyond what we implement. (`pretraining_tp` > 1 is accepted: transformers only
 * splits the same matmuls into slices and concatenates or sums them, the same function.)
 */
function refuseUnimplemented(cfg: Json, type: ModelType, file: string): void {
  const act = cfg.hidden_act;
  if (act !== undefined && act !== "silu" && act !== "swish") {
    unsupported(file, "hidden_act", act, "the MLP implements SiLU (SwiGLU) only");
  }
  // LlamaConfig's biases; Mistral and Qwen2 hard-code theirs and do not read these fields.
  if (type === "llama") {
    if (cfg.attention_bias === true) {
      unsupported(file, "attention_bias", true, "Llama attention projections without bias only");
    }
    if (cfg.mlp_bias === true) {
      unsupported(file, "mlp_bias", true, "MLP projections without bias only");
    }
  }
  const drop = cfg.attention_dropout;
  if (drop !== undefined && drop !== null && drop !== 0) {
    unsupported(
      file,
      "attention_dropout",
      drop,
      "dropout on attention probabilities is not implemented",
    );
  }
  const prf = cfg.partial_rotary_factor;
  if (prf !== undefined && prf !== null && prf !== 1) {
    unsupported(file, "partial_rotary_factor", prf, "RoPE rotates the whole head");
  }
  const q = cfg.quantization_config;
  if (q !== undefined && q !== null) {
    const qc = q as Json;
    if (typeof q !== "object" || qc.quant_method !== "bitsandbytes") {
      unsupported(
        file,
        "quantization_config.quant_method",
        qc.quant_method,
        "only bitsandbytes 4-bit checkpoints (or full-precision ones) load",
      );
    }
    if (qc.load_in_4bit !== true) {
      unsupported(
        file,
        "quantization_config.load_in_4bit",
        qc.load_in_4bit,
        "bitsandbytes 8-bit is not implemented",
      );
    }
  }
}

/**
 * A job's longest sequence against the model: at most `max_position_embeddings`, and with a
 * sliding window at most the window (then every token's window holds all earlier tokens of its
 * row, so full causal attention is exactly what transformers computes). `field` names the job's
 * setting, `file` the model's config.json.
 */
export function checkSequenceLength(
  cfg: LlamaConfig,
  maxSeqLen: number,
  field: string,
  file: string,
): void {
  if (maxSeqLen > cfg.maxPositions) {
    throw invalidArgument(
      `${field} ${maxSeqLen} exceeds the model's max_position_embeddings ${cfg.maxPositions} (${file})`,
    );
  }
  if (cfg.slidingWindow !== undefined && maxSeqLen > cfg.slidingWindow) {
    throw invalidArgument(
      `${field} ${maxSeqLen} exceeds the model's "sliding_window" ${cfg.slidingWindow} (${file}): ` +
        `sliding-window attention is not implemented, and up to ${cfg.slidingWindow} tokens ` +
        `full causal attention computes the same; use ${field} <= ${cfg.slidingWindow}`,
    );
  }
}

/** The seven linear modules of a Llama layer, with their HF key paths and shapes. */
export const LINEAR_MODULES = ["q", "k", "v", "o", "gate", "up", "down"] as const;
export type LinearModule = typeof LINEAR_MODULES[number];

export function linearPath(layer: number, m: LinearModule): string {
  const attn = m === "q" || m === "k" || m === "v" || m === "o";
  return `model.layers.${layer}.${attn ? "self_attn" : "mlp"}.${m}_proj`;
}

/** [out, in] of a linear module. */
export function linearShape(cfg: LlamaConfig, m: LinearModule): [number, number] {
  const q = cfg.heads * cfg.headDim;
  const kv = cfg.kvHeads * cfg.headDim;
  switch (m) {
    case "q":
      return [q, cfg.hidden];
    case "k":
    case "v":
      return [kv, cfg.hidden];
    case "o":
      return [cfg.hidden, q];
    case "gate":
    case "up":
      return [cfg.intermediate, cfg.hidden];
    case "down":
      return [cfg.hidden, cfg.intermediate];
  }
}

/** PEFT target module names ("q_proj") to ours ("q"); throws on unknown names. */
export function parseTargetModules(names: string[], field = "target_modules"): LinearModule[] {
  if (names.length === 0) return [...LINEAR_MODULES];
  if (names.length === 1 && names[0] === "all-linear") return [...LINEAR_MODULES];
  const out: LinearModule[] = [];
  for (const n of names) {
    const m = n.replace(/_proj$/, "") as LinearModule;
    if (!LINEAR_MODULES.includes(m)) {
      throw invalidArgument(
        `${field}: unknown module ${JSON.stringify(n)} (allowed: ${
          LINEAR_MODULES.map((x) => `${x}_proj`).join(", ")
        })`,
      );
    }
    if (!out.includes(m)) out.push(m);
  }
  return LINEAR_MODULES.filter((m) => out.includes(m));
}
