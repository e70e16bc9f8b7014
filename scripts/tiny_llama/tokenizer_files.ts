/**
 * The fixture's tokenizer files: tokenizer.json (the learned BPE plus special tokens, as the
 * Hugging Face tokenizers library reads it) and tokenizer_config.json with its chat template.
 */
import type { BpeModel } from "./bpe.ts";

export const SPECIAL_TOKENS = {
  bos: "<|begin_of_text|>",
  eos: "<|end_of_text|>",
  user: "<|user|>",
  assistant: "<|assistant|>",
} as const;

/**
 * Chat template: bos, then `<|user|>` + content for user turns and `<|assistant|>` + content +
 * eos for assistant turns; `<|assistant|>` at the end when add_generation_prompt.
 * Like Llama 3, it starts with bos_token: tokenize its output without adding special tokens.
 */
export const CHAT_TEMPLATE = "{{- bos_token }}" +
  "{%- for message in messages %}" +
  "{%- if message['role'] == 'user' %}{{- '<|user|>' + message['content'] }}" +
  "{%- elif message['role'] == 'assistant' %}" +
  "{{- '<|assistant|>' + message['content'] + eos_token }}" +
  "{%- else %}{{- raise_exception('unsupported role: ' + message['role']) }}" +
  "{%- endif %}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}";

/** tokenizer.json for the Hugging Face tokenizers library. */
export function tokenizerJson(model: BpeModel): Record<string, unknown> {
  const base = model.vocab.size;
  const specials = Object.values(SPECIAL_TOKENS);
  const bosId = base;
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, i) => ({
      id: base + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    // Like Llama 3: plain encode() prepends bos.
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: SPECIAL_TOKENS.bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: SPECIAL_TOKENS.bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: SPECIAL_TOKENS.bos, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: {
        [SPECIAL_TOKENS.bos]: {
          id: SPECIAL_TOKENS.bos,
          ids: [bosId],
          tokens: [SPECIAL_TOKENS.bos],
        },
      },
    },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(model.vocab),
      merges: model.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

export function tokenizerConfigJson(base: number, maxPositions: number): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  Object.values(SPECIAL_TOKENS).forEach((content, i) => {
    decoder[String(base + i)] = {
      content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    };
  });
  return {
    added_tokens_decoder: decoder,
    bos_token: SPECIAL_TOKENS.bos,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: SPECIAL_TOKENS.eos,
    model_input_names: ["input_ids", "attention_mask"],
    model_max_length: maxPositions,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
}
