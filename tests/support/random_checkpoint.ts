/**
 * A Hugging Face Llama-family folder with random weights at any size, written tensor by tensor
 * (sharded safetensors + model.safetensors.index.json), for tests at real shapes: a 1-layer model
 * with Llama-3-8B's dimensions is 2.5 GB in bf16, made in a temporary folder in seconds and never
 * committed. Values are uniform (speed matters more than the distribution here), seeded, and
 * never all zero; 16-bit dtypes get the rounded bits directly.
 */
import { join } from "node:path";
import { SafetensorsWriter } from "../../src/io/safetensors.ts";
import { type Dtype, f32ArrayToBf16, f32ArrayToF16 } from "../../src/io/dtype.ts";
import { Rng } from "../../src/util/random.ts";

/** The config.json fields this writer needs; anything else in `extra` is written as given. */
export interface RandomCheckpointConfig {
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  num_hidden_layers: number;
  vocab_size: number;
  tie_word_embeddings?: boolean;
  [field: string]: unknown;
}

export interface RandomCheckpointOptions {
  seed: number;
  dtype: "BF16" | "F16" | "F32";
  /** A new shard starts when the current one would pass this many bytes. Default 1 GiB. */
  maxShardBytes?: number;
  /** Uniform half-width of linear weights; default 0.02·√3 (std 0.02, as Llama's init). */
  linearScale?: number;
  /** Uniform half-width of embedding and lm_head rows; default 0.05 (logits of a few units). */
  tableScale?: number;
}

/** Llama-3-8B's dimensions and RoPE, with `layers` decoder layers. */
export function llama3_8bConfig(layers: number): RandomCheckpointConfig {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    num_hidden_layers: layers,
    vocab_size: 128256,
    max_position_embeddings: 131072,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
    hidden_act: "silu",
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: false,
    bos_token_id: 128000,
    eos_token_id: 128001,
    torch_dtype: "bfloat16",
  };
}

interface PlannedTensor {
  name: string;
  shape: [number, number] | [number];
  kind: "linear" | "table" | "norm";
}

function plan(cfg: RandomCheckpointConfig): PlannedTensor[] {
  const h = cfg.hidden_size;
  const hd = Number(cfg.head_dim ?? h / cfg.num_attention_heads);
  const q = cfg.num_attention_heads * hd;
  const kv = cfg.num_key_value_heads * hd;
  const i = cfg.intermediate_size;
  const out: PlannedTensor[] = [
    { name: "model.embed_tokens.weight", shape: [cfg.vocab_size, h], kind: "table" },
  ];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [h], kind: "norm" },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, h], kind: "linear" },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, h], kind: "linear" },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, h], kind: "linear" },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, q], kind: "linear" },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h], kind: "norm" },
      { name: `${p}.mlp.gate_proj.weight`, shape: [i, h], kind: "linear" },
      { name: `${p}.mlp.up_proj.weight`, shape: [i, h], kind: "linear" },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, i], kind: "linear" },
    );
  }
  out.push({ name: "model.norm.weight", shape: [h], kind: "norm" });
  if (!cfg.tie_word_embeddings) {
    out.push({ name: "lm_head.weight", shape: [cfg.vocab_size, h], kind: "table" });
  }
  return out;
}

const BYTES: Record<RandomCheckpointOptions["dtype"], number> = { BF16: 2, F16: 2, F32: 4 };

/** `n` values uniform in [center - half, center + half) from `rng`, as the file's dtype. */
function randomBytes(
  n: number,
  dtype: RandomCheckpointOptions["dtype"],
  rng: Rng,
  center: number,
  half: number,
): Uint8Array {
  if (dtype === "F32") {
    return new Uint8Array(
      rng.fillUniform(new Float32Array(n), center - half, center + half).buffer,
    );
  }
  // 16-bit tables in chunks, so a 10^9-element tensor never needs its f32 copy whole.
  const out = new Uint16Array(n);
  const chunk = new Float32Array(1 << 20);
  const round = dtype === "BF16" ? f32ArrayToBf16 : f32ArrayToF16;
  for (let at = 0; at < n; at += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, n - at));
    out.set(round(rng.fillUniform(part, center - half, center + half)), at);
  }
  return new Uint8Array(out.buffer);
}

/** Writes config.json, the shards and the index; returns the tensor names in file order. */
export async function writeRandomCheckpoint(
  dir: string,
  cfg: RandomCheckpointConfig,
  opts: RandomCheckpointOptions,
): Promise<string[]> {
  await Deno.mkdir(dir, { recursive: true });
  const tensors = plan(cfg);
  const size = BYTES[opts.dtype];
  const maxShard = opts.maxShardBytes ?? 1024 ** 3;
  const shards: PlannedTensor[][] = [[]];
  let used = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * size;
    if (used > 0 && used + bytes > maxShard) {
      shards.push([]);
      used = 0;
    }
    shards.at(-1)!.push(t);
    used += bytes;
  }
  const rng = new Rng(opts.seed);
  const linear = opts.linearScale ?? 0.02 * Math.sqrt(3);
  const table = opts.tableScale ?? 0.05;
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const [i, shard] of shards.entries()) {
    const file = `model-${String(i + 1).padStart(5, "0")}-of-${
      String(shards.length).padStart(5, "0")
    }.safetensors`;
    const w = await SafetensorsWriter.create(
      join(dir, file),
      shard.map((t) => ({ name: t.name, dtype: opts.dtype as Dtype, shape: t.shape })),
      { format: "pt" },
    );
    for (const t of shard) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const [center, half] = t.kind === "norm"
        ? [1, 0.2]
        : t.kind === "table"
        ? [0, table]
        : [0, linear];
      await w.write(t.name, randomBytes(n, opts.dtype, rng, center, half));
      weightMap[t.name] = file;
      total += n * size;
    }
    await w.finish();
  }
  await Deno.writeTextFile(
    join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
  );
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(cfg, null, 2));
  return tensors.map((t) => t.name);
}
