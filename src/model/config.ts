/** Llama-family model configuration from a Hugging Face config.json, validated. */
import { invalidArgument } from "../util/errors.ts";
import type { RopeScaling } from "../kernels/rope.ts";
import { checkConfigBounds } from "./config_bounds.ts";

// The rope kernel defines the scaling it implements; the model config carries it.
export type { RopeScaling };

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
}

type Json = Record<string, unknown>;

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

function parseRopeScaling(raw: unknown, file: string): RopeScaling | undefined {
  if (raw === null || raw === undefined) return undefined;
  if (typeof raw !== "object") throw invalidArgument(`${file}: "rope_scaling" must be an object`);
  const r = raw as Json;
  const type = r.rope_type ?? r.type;
  if (type === "default") return undefined;
  const factor = num(r, "factor", `${file} rope_scaling`, NaN);
  if (type === "linear") return { type, factor };
  if (type === "llama3") {
    return {
      type,
      factor,
      lowFreqFactor: num(r, "low_freq_factor", `${file} rope_scaling`, NaN),
      highFreqFactor: num(r, "high_freq_factor", `${file} rope_scaling`, NaN),
      originalMaxPositionEmbeddings: int(
        r,
        "original_max_position_embeddings",
        `${file} rope_scaling`,
      ),
    };
  }
  throw invalidArgument(
    `${file}: rope_scaling type ${JSON.stringify(type)} is not supported (linear, llama3)`,
  );
}

export function llamaConfigFromHf(raw: unknown, file = "config.json"): LlamaConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw invalidArgument(`${file}: expected a JSON object`);
  }
  const cfg = raw as Json;
  checkConfigBounds(cfg, file);
  const modelType = cfg.model_type;
  if (modelType !== undefined && !["llama", "mistral"].includes(String(modelType))) {
    throw invalidArgument(
      `${file}: model_type ${JSON.stringify(modelType)} is not a Llama-family model`,
    );
  }
  const hidden = int(cfg, "hidden_size", file);
  const heads = int(cfg, "num_attention_heads", file);
  const kvHeads = int(cfg, "num_key_value_heads", file, heads);
  if (heads % kvHeads !== 0) {
    throw invalidArgument(
      `${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`,
    );
  }
  const headDim = int(cfg, "head_dim", file, Math.floor(hidden / heads));
  if (headDim % 2 !== 0) throw invalidArgument(`${file}: head_dim ${headDim} must be even (RoPE)`);
  const eos = cfg.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.map(Number) : eos === undefined ? [] : [Number(eos)];
  return {
    hidden,
    intermediate: int(cfg, "intermediate_size", file),
    layers: int(cfg, "num_hidden_layers", file),
    heads,
    kvHeads,
    headDim,
    vocab: int(cfg, "vocab_size", file),
    rmsEps: num(cfg, "rms_norm_eps", file, 1e-6),
    ropeTheta: num(cfg, "rope_theta", file, 10000),
    ropeScaling: parseRopeScaling(cfg.rope_scaling, file),
    tieEmbeddings: cfg.tie_word_embeddings === true,
    maxPositions: int(cfg, "max_position_embeddings", file, 2048),
    bosTokenId: typeof cfg.bos_token_id === "number" ? cfg.bos_token_id : undefined,
    eosTokenIds,
    torchDtype: typeof cfg.torch_dtype === "string" ? cfg.torch_dtype : "float32",
  };
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
