/**
 * The fixture's weights: the tensor list in Hugging Face naming, deterministic values per tensor
 * (each its own seeded stream, so a tensor's values do not depend on the others), and the split
 * into safetensors shards.
 */
import { byteLengthOf } from "../../src/io/dtype.ts";
import type { TensorEntry } from "../../src/io/safetensors.ts";
import { invalidArgument } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";
import type { TinyLlamaOptions } from "./options.ts";

type TensorKind = "linear" | "embed" | "norm" | "bias";

/** Tensor list in HF naming (REFERENCE.md §7), weights [out, in]; Qwen2 q/k/v biases [out]. */
export function llamaTensorEntries(
  o: TinyLlamaOptions,
  vocabSize: number,
): (TensorEntry & { kind: TensorKind })[] {
  const { hidden: h, intermediate: f, heads, kvHeads, headDim: d, dtype } = o;
  const out: (TensorEntry & { kind: TensorKind })[] = [];
  const add = (name: string, shape: number[], kind: TensorKind) =>
    out.push({ name, dtype, shape, kind });
  const bias = o.modelType === "qwen2";
  add("model.embed_tokens.weight", [vocabSize, h], "embed");
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}.`;
    for (const [m, rows] of [["q", heads * d], ["k", kvHeads * d], ["v", kvHeads * d]] as const) {
      add(`${p}self_attn.${m}_proj.weight`, [rows, h], "linear");
      if (bias) add(`${p}self_attn.${m}_proj.bias`, [rows], "bias");
    }
    add(p + "self_attn.o_proj.weight", [h, heads * d], "linear");
    add(p + "mlp.gate_proj.weight", [f, h], "linear");
    add(p + "mlp.up_proj.weight", [f, h], "linear");
    add(p + "mlp.down_proj.weight", [h, f], "linear");
    add(p + "input_layernorm.weight", [h], "norm");
    add(p + "post_attention_layernorm.weight", [h], "norm");
  }
  add("model.norm.weight", [h], "norm");
  if (!o.tieWordEmbeddings) add("lm_head.weight", [vocabSize, h], "linear");
  return out;
}

/** FNV-1a of the name mixed with the seed: each tensor gets its own stream. */
export function tensorSeed(seed: number, name: string): number {
  let x = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) x = Math.imul(x ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return x;
}

export function tensorValues(
  o: TinyLlamaOptions,
  e: TensorEntry & { kind: string },
): Float32Array {
  const rng = new Rng(tensorSeed(o.seed, e.name));
  const n = e.shape.reduce((a, b) => a * b, 1);
  if (e.kind === "norm") {
    const v = rng.normals(n, o.normNoise);
    for (let i = 0; i < n; i++) v[i] += 1;
    return v;
  }
  return rng.normals(n, e.kind === "bias" ? o.biasStd : o.initStd);
}

/** Split entries into `shards` contiguous groups of about equal bytes, none empty. */
export function shardGroups<T extends TensorEntry>(entries: T[], shards: number): T[][] {
  if (shards > entries.length) {
    throw invalidArgument(`shards: ${shards} shards for only ${entries.length} tensors`);
  }
  const sizes = entries.map((e) => byteLengthOf(e.dtype, e.shape));
  const total = sizes.reduce((a, b) => a + b, 0);
  const groups: T[][] = [];
  let cur: T[] = [];
  let acc = 0;
  entries.forEach((e, i) => {
    const left = entries.length - i; // tensors still to place, this one included
    const groupsLeft = shards - groups.length; // groups still to fill, cur included
    if (cur.length > 0 && (acc >= (total * (groups.length + 1)) / shards || left < groupsLeft)) {
      groups.push(cur);
      cur = [];
    }
    cur.push(e);
    acc += sizes[i];
  });
  groups.push(cur);
  return groups;
}
