/**
 * Deterministic tiny Hugging Face Llama for tests and demos: config.json, BF16/F16/F32 weights
 * (one file or shards + index), as a Llama, a Mistral or a Qwen2 (q/k/v biases) checkpoint,
 * a byte-level BPE tokenizer.json learned from a built-in corpus,
 * tokenizer_config.json with a chat template, generation_config.json, and train/eval JSONL
 * datasets with a learnable pattern (country capitals, small sums).
 *
 *   deno run -A scripts/make_tiny_llama.ts --out data/tiny-llama [--preset small] [--shards 3]
 *     [--model-type qwen2]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { OutputDir } from "../src/io/atomic.ts";
import { HfCheckpoint } from "../src/io/checkpoint.ts";
import { byteLengthOf, fromFloat } from "../src/io/dtype.ts";
import { SafetensorsWriter, type TensorEntry } from "../src/io/safetensors.ts";
import { invalidArgument, QloradError } from "../src/util/errors.ts";
import { Rng } from "../src/util/random.ts";

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

// ---- data -------------------------------------------------------------------------------------

export const CAPITALS: readonly [string, string][] = [
  ["France", "Paris"],
  ["Spain", "Madrid"],
  ["Italy", "Rome"],
  ["Germany", "Berlin"],
  ["Portugal", "Lisbon"],
  ["Greece", "Athens"],
  ["Norway", "Oslo"],
  ["Sweden", "Stockholm"],
  ["Finland", "Helsinki"],
  ["Denmark", "Copenhagen"],
  ["Poland", "Warsaw"],
  ["Austria", "Vienna"],
  ["Hungary", "Budapest"],
  ["Ireland", "Dublin"],
  ["Belgium", "Brussels"],
  ["Netherlands", "Amsterdam"],
  ["Switzerland", "Bern"],
  ["Czechia", "Prague"],
  ["Romania", "Bucharest"],
  ["Ukraine", "Kyiv"],
  ["Iceland", "Reykjavik"],
  ["Russia", "Moscow"],
  ["Turkey", "Ankara"],
  ["Egypt", "Cairo"],
  ["Kenya", "Nairobi"],
  ["Ghana", "Accra"],
  ["Nigeria", "Abuja"],
  ["Morocco", "Rabat"],
  ["Japan", "Tokyo"],
  ["China", "Beijing"],
  ["India", "New Delhi"],
  ["Thailand", "Bangkok"],
  ["Vietnam", "Hanoi"],
  ["Indonesia", "Jakarta"],
  ["Philippines", "Manila"],
  ["South Korea", "Seoul"],
  ["Mongolia", "Ulaanbaatar"],
  ["Nepal", "Kathmandu"],
  ["Iran", "Tehran"],
  ["Iraq", "Baghdad"],
  ["Canada", "Ottawa"],
  ["Mexico", "Mexico City"],
  ["Cuba", "Havana"],
  ["Peru", "Lima"],
  ["Chile", "Santiago"],
  ["Argentina", "Buenos Aires"],
  ["Colombia", "Bogota"],
  ["Australia", "Canberra"],
];

const ENGLISH = `
The quick brown fox jumps over the lazy dog. A small model learns the shape of language from
examples: it reads a sentence, guesses the next word, and adjusts its weights when the guess is
wrong. Over many steps the guesses get better. This is how a language model is trained.

Every country has a capital city, and the capital is where the government meets. People often
ask what the capital of a country is, and a good answer names the city. Numbers are simple too:
when you add two numbers together you get their sum, and the sum of two and three is five.

In the morning the market opens early. Farmers bring apples, bread, cheese and fresh fish to the
square, and the children run between the stalls while their parents talk about the weather. It
rained all night, but now the sky is clear and the sun is warm on the old stone walls.

Questions and answers: What is the capital of the country? The answer is the name of the city.
What is the sum of these numbers? The answer is a number. Please answer in one short sentence.
`;

function capitalSentences(country: string, city: string): string[] {
  return [
    `The capital of ${country} is ${city}.`,
    `${city} is the capital of ${country}.`,
    `What is the capital of ${country}?`,
    `Q: What is the capital of ${country}?\nA: ${city}`,
  ];
}

function sumSentences(a: number, b: number): string[] {
  return [`${a} plus ${b} equals ${a + b}.`, `${a} + ${b} = ${a + b}`, `What is ${a} plus ${b}?`];
}

/** The fixed corpus the tokenizer is learned from. */
export function tokenizerCorpus(): string {
  const parts = [ENGLISH];
  for (const [c, k] of CAPITALS) parts.push(...capitalSentences(c, k));
  for (let a = 0; a < 20; a += 3) for (let b = 1; b < 20; b += 4) parts.push(...sumSentences(a, b));
  return parts.join("\n");
}

type Message = { role: "user" | "assistant"; content: string };
export type DatasetRecord =
  | { text: string }
  | { prompt: string; completion: string }
  | { messages: Message[] };

const MAX_OPERAND = 20;
/** Sums held out of training: eval asks only these, so it measures the pattern, not recall. */
function isHeldOutSum(a: number, b: number): boolean {
  return (a * 7 + b * 3) % 5 === 0;
}

function capitalRecord(rng: Rng, i: number): DatasetRecord {
  const [c, k] = CAPITALS[i];
  switch (rng.int(5)) {
    case 0:
      return { text: `The capital of ${c} is ${k}.` };
    case 1: {
      const [c2, k2] = CAPITALS[rng.int(CAPITALS.length)];
      return { text: `${k} is the capital of ${c}. The capital of ${c2} is ${k2}.` };
    }
    case 2:
      return { prompt: `Q: What is the capital of ${c}?\nA:`, completion: ` ${k}` };
    case 3:
      return {
        messages: [
          { role: "user", content: `What is the capital of ${c}?` },
          { role: "assistant", content: `The capital of ${c} is ${k}.` },
        ],
      };
    default: {
      const [c2, k2] = CAPITALS[rng.int(CAPITALS.length)];
      return {
        messages: [
          { role: "user", content: `What is the capital of ${c}?` },
          { role: "assistant", content: `${k}.` },
          { role: "user", content: `And of ${c2}?` },
          { role: "assistant", content: `${k2}.` },
        ],
      };
    }
  }
}

function sumRecord(rng: Rng, heldOut: boolean): DatasetRecord {
  let a: number, b: number;
  do {
    a = rng.int(MAX_OPERAND);
    b = rng.int(MAX_OPERAND);
  } while (isHeldOutSum(a, b) !== heldOut);
  switch (rng.int(3)) {
    case 0:
      return { text: `${a} plus ${b} equals ${a + b}.` };
    case 1:
      return { prompt: `${a} + ${b} =`, completion: ` ${a + b}` };
    default:
      return {
        messages: [
          { role: "user", content: `What is ${a} plus ${b}?` },
          { role: "assistant", content: `${a + b}` },
        ],
      };
  }
}

/** Train and eval records; eval never repeats a train record and asks only held-out sums. */
export function makeDatasets(
  seed: number,
  trainRecords: number,
  evalRecords: number,
): { train: DatasetRecord[]; eval: DatasetRecord[] } {
  const rng = new Rng(seed ^ 0x5eed);
  const train: DatasetRecord[] = [];
  const seen = new Set<string>();
  const add = (r: DatasetRecord) => {
    train.push(r);
    seen.add(JSON.stringify(r));
  };
  // Every capital at least once, then a 2:1 mix of capitals and sums.
  for (let i = 0; i < CAPITALS.length && train.length < trainRecords; i++) {
    add(capitalRecord(rng, i));
  }
  while (train.length < trainRecords) {
    add(rng.int(3) < 2 ? capitalRecord(rng, rng.int(CAPITALS.length)) : sumRecord(rng, false));
  }
  const evalSet: DatasetRecord[] = [];
  for (let tries = 0; evalSet.length < evalRecords; tries++) {
    if (tries > 100 * evalRecords + 1000) {
      throw invalidArgument(`cannot draw ${evalRecords} eval records distinct from training`);
    }
    const r = rng.int(2) === 0
      ? capitalRecord(rng, rng.int(CAPITALS.length))
      : sumRecord(rng, true);
    const key = JSON.stringify(r);
    if (seen.has(key)) continue;
    seen.add(key);
    evalSet.push(r);
  }
  return { train, eval: evalSet };
}

// ---- byte-level BPE ---------------------------------------------------------------------------

/** GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's alphabet). */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return table;
}

const BYTE_CHARS = bytesToUnicode();
/** The ByteLevel pre-tokenizer split (GPT-2 pattern). */
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Split text like the ByteLevel pre-tokenizer and map each piece's UTF-8 bytes to characters. */
export function byteLevelPieces(text: string): string[] {
  const enc = new TextEncoder();
  return (text.match(PRETOKENIZE) ?? []).map((p) =>
    Array.from(enc.encode(p), (b) => BYTE_CHARS[b]).join("")
  );
}

export interface BpeModel {
  /** Token -> id; ids 0..255 are the byte characters in byte order. */
  vocab: Map<string, number>;
  merges: [string, string][];
}

/** Learn `numMerges` merges: most frequent adjacent pair first, ties to the smaller pair. */
export function trainBpe(corpus: string, numMerges: number): BpeModel {
  const counts = new Map<string, number>();
  for (const p of byteLevelPieces(corpus)) counts.set(p, (counts.get(p) ?? 0) + 1);
  const words = [...counts].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, n]) => ({
    syms: [...w],
    n,
  }));
  const vocab = new Map<string, number>(BYTE_CHARS.map((c, i) => [c, i]));
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = syms[i] + "\u0000" + syms[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined;
    let bestN = 1; // a pair seen once is not worth a token
    for (const [k, n] of pairs) {
      if (n > bestN || (n === bestN && best !== undefined && k < best)) {
        best = k;
        bestN = n;
      }
    }
    if (best === undefined) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
    for (const w of words) w.syms = mergePair(w.syms, a, b);
  }
  return { vocab, merges };
}

function mergePair(syms: string[], a: string, b: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < syms.length; i++) {
    if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
      out.push(a + b);
      i++;
    } else out.push(syms[i]);
  }
  return out;
}

/** Reference BPE encoder (no special tokens): lowest-rank adjacent pair merged first. */
export function bpeEncode(model: BpeModel, text: string): number[] {
  const rank = new Map(model.merges.map(([a, b], i) => [a + "\u0000" + b, i]));
  const ids: number[] = [];
  for (const piece of byteLevelPieces(text)) {
    let syms = [...piece];
    for (;;) {
      let bestRank = Infinity;
      let bestPair: [string, string] | undefined;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = rank.get(syms[i] + "\u0000" + syms[i + 1]);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          bestPair = [syms[i], syms[i + 1]];
        }
      }
      if (!bestPair) break;
      syms = mergePair(syms, bestPair[0], bestPair[1]);
    }
    for (const s of syms) ids.push(model.vocab.get(s)!);
  }
  return ids;
}

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

function tokenizerConfigJson(base: number, maxPositions: number): Record<string, unknown> {
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

// ---- weights ----------------------------------------------------------------------------------

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
function tensorSeed(seed: number, name: string): number {
  let x = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) x = Math.imul(x ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return x;
}

function tensorValues(
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
function shardGroups<T extends TensorEntry>(entries: T[], shards: number): T[][] {
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

// ---- the folder -------------------------------------------------------------------------------

export interface TinyLlamaResult {
  dir: string;
  config: Record<string, unknown>;
  vocabSize: number;
  /** Files written, sorted. */
  files: string[];
  options: TinyLlamaOptions;
}

function resolveOptions(opts: Partial<TinyLlamaOptions>): TinyLlamaOptions {
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

const TORCH_DTYPE = { BF16: "bfloat16", F16: "float16", F32: "float32" } as const;

/** config.json as transformers writes it for the model type (keys sorted). */
function configJson(
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

async function isEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return false;
    return true;
  } catch {
    return false;
  }
}

function jsonText(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

/** Write the tiny Llama folder at `dir` (atomically: built aside, renamed into place). */
export async function makeTinyLlama(
  dir: string,
  opts: Partial<TinyLlamaOptions> = {},
): Promise<TinyLlamaResult> {
  const o = resolveOptions(opts);
  const bpe = trainBpe(tokenizerCorpus(), o.merges);
  const base = bpe.vocab.size;
  const vocabSize = base + Object.keys(SPECIAL_TOKENS).length;
  const bosId = base;
  const eosId = base + 1;
  const config = configJson(o, vocabSize, bosId, eosId);
  const data = makeDatasets(o.seed, o.trainRecords, o.evalRecords);

  const overwrite = o.overwrite || await isEmptyDir(dir);
  const out = await OutputDir.create(dir, { overwrite });
  try {
    const write = (name: string, text: string) => Deno.writeTextFile(out.file(name), text);
    await write("config.json", jsonText(config));
    await write("tokenizer.json", jsonText(tokenizerJson(bpe)));
    await write("tokenizer_config.json", jsonText(tokenizerConfigJson(base, o.maxPositions)));
    await write(
      "special_tokens_map.json",
      jsonText({ bos_token: SPECIAL_TOKENS.bos, eos_token: SPECIAL_TOKENS.eos }),
    );
    await write(
      "generation_config.json",
      jsonText({
        bos_token_id: bosId,
        do_sample: false,
        eos_token_id: eosId,
        max_length: o.maxPositions,
        transformers_version: "4.46.0",
      }),
    );
    const jsonl = (rs: DatasetRecord[]) => rs.map((r) => JSON.stringify(r) + "\n").join("");
    await write("train.jsonl", jsonl(data.train));
    await write("eval.jsonl", jsonl(data.eval));

    const entries = llamaTensorEntries(o, vocabSize);
    const groups = shardGroups(entries, o.shards);
    const pad = (k: number) => String(k).padStart(5, "0");
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    for (let s = 0; s < groups.length; s++) {
      const file = o.shards === 1
        ? "model.safetensors"
        : `model-${pad(s + 1)}-of-${pad(o.shards)}.safetensors`;
      const group = groups[s];
      const w = await SafetensorsWriter.create(
        out.file(file),
        group.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
        { format: "pt" },
      );
      try {
        for (const e of group) {
          await w.write(e.name, fromFloat(tensorValues(o, e), e.dtype));
          weightMap[e.name] = file;
          totalSize += byteLengthOf(e.dtype, e.shape);
        }
        await w.finish();
      } catch (err) {
        await w.abort();
        throw err;
      }
    }
    if (o.shards > 1) {
      const sorted = Object.fromEntries(
        Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)),
      );
      await write(
        "model.safetensors.index.json",
        jsonText({ metadata: { total_size: totalSize }, weight_map: sorted }),
      );
    }
    const files = [...Deno.readDirSync(out.path)].map((e) => e.name).sort();
    await out.commit();
    return { dir, config, vocabSize, files, options: o };
  } catch (err) {
    await out.abort();
    throw err;
  }
}

/** Load the folder's tokenizer with @huggingface/tokenizers and check it on its own data. */
export async function selfCheck(dir: string): Promise<string[]> {
  const problems: string[] = [];
  const tj = JSON.parse(await Deno.readTextFile(join(dir, "tokenizer.json")));
  const tc = JSON.parse(await Deno.readTextFile(join(dir, "tokenizer_config.json")));
  const tok = new Tokenizer(tj, tc);
  const lines = (await Deno.readTextFile(join(dir, "train.jsonl"))).trim().split("\n");
  const tmpl = new Template(tc.chat_template);
  for (const line of lines) {
    const r = JSON.parse(line);
    const text = r.text ?? (r.prompt !== undefined ? r.prompt + r.completion : tmpl.render({
      messages: r.messages,
      bos_token: tc.bos_token,
      eos_token: tc.eos_token,
      add_generation_prompt: false,
    }));
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    const back = tok.decode(ids);
    if (back !== text) {
      problems.push(`round trip changed ${JSON.stringify(text)} to ${JSON.stringify(back)}`);
    }
  }
  const ck = await HfCheckpoint.open(dir);
  try {
    if (ck.config.vocab_size !== tok.get_vocab(true).size) problems.push("vocab_size mismatch");
  } finally {
    ck.close();
  }
  return problems;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string" },
      preset: { type: "string" },
      hidden: { type: "string" },
      intermediate: { type: "string" },
      layers: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      "head-dim": { type: "string" },
      merges: { type: "string" },
      shards: { type: "string" },
      seed: { type: "string" },
      dtype: { type: "string" },
      "init-std": { type: "string" },
      "train-records": { type: "string" },
      "eval-records": { type: "string" },
      tie: { type: "boolean" },
      "model-type": { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.out) {
    console.log(
      "usage: deno run -A scripts/make_tiny_llama.ts --out DIR [--preset tiny|small] [--hidden N]\n" +
        "  [--intermediate N] [--layers N] [--heads N] [--kv-heads N] [--head-dim N] [--merges N]\n" +
        "  [--shards N] [--seed N] [--dtype BF16|F16|F32] [--init-std X] [--train-records N]\n" +
        "  [--eval-records N] [--tie] [--model-type llama|mistral|qwen2] [--force]",
    );
    Deno.exit(values.help ? 0 : 2);
  }
  const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  const opts: Partial<TinyLlamaOptions> = {
    ...(values.preset === "small" ? SMALL_LLAMA_PRESET : {}),
  };
  const set = <K extends keyof TinyLlamaOptions>(k: K, v: TinyLlamaOptions[K] | undefined) => {
    if (v !== undefined) opts[k] = v;
  };
  if (values.preset !== undefined && !["tiny", "small"].includes(values.preset)) {
    console.error(`unknown preset ${values.preset}`);
    Deno.exit(2);
  }
  set("hidden", num(values.hidden));
  set("intermediate", num(values.intermediate));
  set("layers", num(values.layers));
  set("heads", num(values.heads));
  set("kvHeads", num(values["kv-heads"]));
  set("headDim", num(values["head-dim"]));
  set("merges", num(values.merges));
  set("shards", num(values.shards));
  set("seed", num(values.seed));
  set("initStd", num(values["init-std"]));
  set("trainRecords", num(values["train-records"]));
  set("evalRecords", num(values["eval-records"]));
  set("dtype", values.dtype as TinyLlamaOptions["dtype"] | undefined);
  set("tieWordEmbeddings", values.tie);
  set("modelType", values["model-type"] as TinyModelType | undefined);
  set("overwrite", values.force);
  try {
    const r = await makeTinyLlama(values.out, opts);
    const problems = await selfCheck(values.out);
    const params = llamaTensorEntries(r.options, r.vocabSize)
      .reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0);
    console.log(
      `wrote ${r.dir}: ${params} parameters, vocab ${r.vocabSize}, ${r.files.join(" ")}`,
    );
    for (const p of problems) console.error(`self-check: ${p}`);
    if (problems.length) Deno.exit(1);
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    if (e instanceof QloradError && e.kind === "failed_precondition") {
      console.error("pass --force to replace it");
    }
    Deno.exit(1);
  }
}
