/**
 * Bounds on a model config's dimensions, checked before anything is sized from them: a config
 * with a billion layers or a hidden size of 1e308 must be an error at once, not an allocation
 * that kills the process or a byte count that overflows. The limits are far above every released
 * Llama-family model (Llama 3.1 405B: hidden 16384, intermediate 53248, 126 layers, 128 heads,
 * vocabulary 128256) and low enough that every size derived from them stays an exact integer.
 * Also the check that a computed byte count is still exact (below 2^53).
 */
import { invalidArgument } from "../util/errors.ts";

/** Inclusive [min, max] of each integer dimension of config.json. */
export const CONFIG_DIMENSION_BOUNDS: Readonly<Record<string, readonly [number, number]>> = {
  hidden_size: [1, 65536],
  intermediate_size: [1, 262144],
  num_hidden_layers: [1, 1024],
  num_attention_heads: [1, 1024],
  num_key_value_heads: [1, 1024],
  head_dim: [2, 4096],
  vocab_size: [1, 4_194_304],
  max_position_embeddings: [1, 16_777_216],
};

/** Dimensions a config must have (the others have defaults). */
const REQUIRED = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"];

/** What a value is, for an error message: its type, and a number's value (never a string's). */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number") {
    return Number.isFinite(v) ? `${v}` : `${v} (beyond the range of a double)`;
  }
  if (typeof v === "string") return `a string of ${v.length} characters`;
  return typeof v === "object" ? "an object" : `${typeof v} ${String(v)}`;
}

/**
 * Throws invalidArgument naming `file` and the key when a dimension is missing (where required),
 * not an integer, or outside CONFIG_DIMENSION_BOUNDS, or when heads and key/value heads disagree.
 */
export function checkConfigBounds(cfg: Record<string, unknown>, file: string): void {
  for (const [key, [lo, hi]] of Object.entries(CONFIG_DIMENSION_BOUNDS)) {
    const v = cfg[key];
    if (v === undefined || v === null) {
      if (REQUIRED.includes(key)) throw invalidArgument(`${file}: "${key}" is missing`);
      continue;
    }
    if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
      throw invalidArgument(
        `${file}: "${key}" must be an integer in ${lo}..${hi}, got ${describeValue(v)}`,
      );
    }
  }
  for (const key of ["rms_norm_eps", "rope_theta"]) {
    const v = cfg[key];
    if (typeof v === "number" && !Number.isFinite(v)) {
      throw invalidArgument(`${file}: "${key}" must be a finite number, got ${describeValue(v)}`);
    }
  }
  const heads = cfg.num_attention_heads as number;
  const kvHeads = (cfg.num_key_value_heads ?? heads) as number;
  if (kvHeads > heads) {
    throw invalidArgument(
      `${file}: "num_key_value_heads" ${kvHeads} exceeds "num_attention_heads" ${heads}`,
    );
  }
  if (cfg.head_dim === undefined && (cfg.hidden_size as number) < heads) {
    throw invalidArgument(
      `${file}: "hidden_size" ${cfg.hidden_size} is smaller than "num_attention_heads" ${heads}`,
    );
  }
}

/**
 * Throws invalidArgument when a byte count is not an exact integer (NaN, infinite, or above
 * 2^53 - 1, where a double can no longer count bytes one by one).
 */
export function checkByteCounts(counts: Record<string, number>, what: string): void {
  let total = 0;
  for (const [name, n] of Object.entries(counts)) {
    total += n;
    if (!Number.isSafeInteger(n) || n < 0 || !Number.isSafeInteger(total)) {
      throw invalidArgument(
        `${what}: ${name} does not fit in 2^53 bytes (the model or the settings are too large)`,
      );
    }
  }
}
