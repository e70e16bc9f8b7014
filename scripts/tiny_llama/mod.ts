/**
 * The tiny Llama fixture library: a deterministic Hugging Face folder (config, BF16/F16/F32
 * weights in one file or shards, a BPE tokenizer learned from a built-in corpus, a chat template,
 * train/eval JSONL) for tests and the demo. `scripts/make_tiny_llama.ts` is its command line.
 * One concern per file; this module only gathers what importers use.
 */
export { bpeEncode, type BpeModel, byteLevelPieces, bytesToUnicode, trainBpe } from "./bpe.ts";
export { CAPITALS, tokenizerCorpus } from "./corpus.ts";
export { type DatasetRecord, makeDatasets } from "./datasets.ts";
export { demoPrompts, makeDemoDatasets } from "./demo_datasets.ts";
export { makeTinyLlama, type TinyLlamaResult } from "./make.ts";
export {
  resolveOptions,
  SMALL_LLAMA_PRESET,
  TINY_LLAMA_DEFAULTS,
  type TinyLlamaOptions,
  type TinyModelType,
} from "./options.ts";
export { selfCheck } from "./self_check.ts";
export { CHAT_TEMPLATE, SPECIAL_TOKENS, tokenizerJson } from "./tokenizer_files.ts";
export { llamaTensorEntries } from "./weights.ts";
