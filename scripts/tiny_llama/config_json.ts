/**
 * The fixture's config.json, as transformers writes it for a Llama, a Mistral or a Qwen2 model.
 */
import type { TinyLlamaOptions, TinyModelType } from "./options.ts";

const TORCH_DTYPE = { BF16: "bfloat16", F16: "float16", F32: "float32" } as const;

/** config.json as transformers writes it for the model type (keys sorted). */
export function configJson(
  o: TinyLlamaOptions,
  vocabSize: number,
  bosId: number,
  eosId: number,
): Record<string, unknown> {
  const common: Record<string, unknown> = {
    attention_dropout: 0.0,
    bos_token_id: bosId,
    eos_token_id: eosId,
    hidden_act: "silu",
    hidden_size: o.hidden,
    initializer_range: o.initStd,
    intermediate_size: o.intermediate,
    max_position_embeddings: o.maxPositions,
    model_type: o.modelType,
    num_attention_heads: o.heads,
    num_hidden_layers: o.layers,
    num_key_value_heads: o.kvHeads,
    rms_norm_eps: o.rmsNormEps,
    rope_scaling: o.ropeScaling,
    rope_theta: o.ropeTheta,
    tie_word_embeddings: o.tieWordEmbeddings,
    torch_dtype: TORCH_DTYPE[o.dtype],
    transformers_version: "4.46.0",
    use_cache: true,
    vocab_size: vocabSize,
  };
  const byType: Record<TinyModelType, Record<string, unknown>> = {
    llama: {
      architectures: ["LlamaForCausalLM"],
      attention_bias: false,
      head_dim: o.headDim,
      mlp_bias: false,
      pretraining_tp: 1,
    },
    mistral: {
      architectures: ["MistralForCausalLM"],
      head_dim: o.headDim,
      sliding_window: o.slidingWindow,
    },
    qwen2: {
      architectures: ["Qwen2ForCausalLM"],
      // Qwen2 reads head_dim only when present; write it only when it is not hidden / heads.
      ...(o.headDim * o.heads !== o.hidden ? { head_dim: o.headDim } : {}),
      max_window_layers: o.slidingWindow === null ? o.layers : 0,
      sliding_window: o.slidingWindow,
      use_sliding_window: o.slidingWindow !== null,
    },
  };
  const all = { ...common, ...byType[o.modelType], ...o.configOverrides };
  return Object.fromEntries(Object.entries(all).sort(([a], [b]) => (a < b ? -1 : 1)));
}
