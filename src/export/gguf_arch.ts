/**
 * What the merged-model and LoRA GGUF exports share: llama.cpp's architecture name for a model
 * config, GGUF tensor names for Hugging Face ones (gguf-py tensor_mapping.py / constants.py),
 * and the Q/K row permutation of the `llama` architecture.
 */
import type { LinearModule, LlamaConfig } from "../model/config.ts";
import { invalidArgument } from "../util/errors.ts";

/** llama.cpp's `general.architecture`: Mistral is llama.cpp's `llama`; Qwen2 has its own. */
export function ggufArch(cfg: LlamaConfig): "llama" | "qwen2" {
  return cfg.modelType === "qwen2" ? "qwen2" : "llama";
}

const LINEAR_GGUF: Record<LinearModule, string> = {
  q: "attn_q",
  k: "attn_k",
  v: "attn_v",
  o: "attn_output",
  gate: "ffn_gate",
  up: "ffn_up",
  down: "ffn_down",
};

/** `blk.N.attn_q.weight` etc. for a linear module. */
export function ggufLinearName(layer: number, m: LinearModule): string {
  return `blk.${layer}.${LINEAR_GGUF[m]}.weight`;
}

/** The GGUF name of a Hugging Face tensor, or undefined for tensors llama.cpp does not load. */
export function ggufTensorName(hf: string, file: string): string | undefined {
  if (hf === "model.embed_tokens.weight") return "token_embd.weight";
  if (hf === "model.norm.weight") return "output_norm.weight";
  if (hf === "lm_head.weight") return "output.weight";
  if (/rotary_emb\.inv_freq$/.test(hf)) return undefined; // recomputed by llama.cpp
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(hf);
  if (m) {
    const [, layer, path, kind] = m;
    const part: Record<string, string> = {
      "self_attn.q_proj": "attn_q",
      "self_attn.k_proj": "attn_k",
      "self_attn.v_proj": "attn_v",
      "self_attn.o_proj": "attn_output",
      "mlp.gate_proj": "ffn_gate",
      "mlp.up_proj": "ffn_up",
      "mlp.down_proj": "ffn_down",
      "input_layernorm": "attn_norm",
      "post_attention_layernorm": "ffn_norm",
    };
    if (part[path]) return `blk.${layer}.${part[path]}.${kind}`;
  }
  throw invalidArgument(`${file}: tensor ${JSON.stringify(hf)} has no GGUF name`);
}

/**
 * Rows of q_proj / k_proj [heads·headDim, cols] reordered for llama.cpp's `llama` architecture.
 *
 * Why: Hugging Face Llama checkpoints apply RoPE with rotate_half, which rotates the pair
 * (i, i + headDim/2) of each head by angle pos·θ_i; llama.cpp's `llama` architecture uses its
 * "normal" RoPE, which rotates adjacent pairs (2i, 2i + 1) by the same angle. So
 * convert_hf_to_gguf permutes the output rows of Q and K within each head: new row 2i + j of a
 * head is old row j·headDim/2 + i (j = 0, 1), i.e. the two halves are interleaved. After the
 * permutation the rotated q and k are the HF ones with the same permutation applied to both, and
 * an attention score q·k sums over the head dimension, so it is unchanged: the model computes
 * the same function. V and O are not rotated and stay as they are. (Qwen2 is `qwen2` in
 * llama.cpp, which uses NeoX RoPE = rotate_half, so it gets no permutation.) The same permutation
 * applies to anything indexed by those output rows: a LoRA B of q/k, a q/k bias.
 */
export function permuteQkRows<T extends Float32Array | Float64Array>(
  w: T,
  heads: number,
  headDim: number,
  cols: number,
): T {
  if (w.length !== heads * headDim * cols || headDim % 2 !== 0) {
    throw invalidArgument(
      `q/k permutation: ${w.length} values are not [${heads}·${headDim}, ${cols}]`,
    );
  }
  const out = new (w.constructor as { new (n: number): T })(w.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headDim + j * half + i) * cols;
        const dst = (h * headDim + 2 * i + j) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/** Whether a GGUF tensor's rows must be permuted (q/k weights, biases, LoRA B) and with how many heads. */
export function qkHeads(cfg: LlamaConfig, ggufName: string): number | undefined {
  if (ggufArch(cfg) !== "llama") return undefined;
  if (/\.attn_q\./.test(ggufName)) return cfg.heads;
  if (/\.attn_k\./.test(ggufName)) return cfg.kvHeads;
  return undefined;
}
