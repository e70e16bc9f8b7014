/**
 * The tokenizer as llama.cpp reads it from GGUF metadata (`tokenizer.ggml.*`, facts from gguf-py
 * constants.py and convert_hf_to_gguf.py's vocabulary code), from a Hugging Face tokenizer.json
 * and tokenizer_config.json.
 *
 * Byte-level BPE (GPT-2 / Llama 3 / Qwen2 style) becomes llama.cpp's `gpt2` tokenizer model: the
 * token strings as tokenizer.json spells them (the byte-to-character alphabet included), the
 * merges as "left right" strings, and the pre-tokenizer named by `tokenizer.ggml.pre` from the
 * pre-tokenizer's split regex (llama.cpp has one hand-written regex set per name; a regex it does
 * not know is refused rather than guessed).
 * SentencePiece-style BPE (`byte_fallback`, "▁" for spaces: Llama 2, Mistral, TinyLlama) becomes
 * llama.cpp's `llama` model, which merges the adjacent pair whose concatenation has the highest
 * score: each token's score is minus the rank of the merge that makes it (0 for tokens no merge
 * makes), so the highest score is the earliest merge, as in the BPE of tokenizer.json;
 * `<0xXX>` tokens are BYTE tokens (the fallback), the model's unk_token UNKNOWN, and
 * `tokenizer.ggml.add_space_prefix` says whether a "▁" is put before the text (a Prepend
 * normalizer or a Metaspace pre-tokenizer that prepends). (convert_hf_to_gguf reads scores from
 * tokenizer.model when there is one; from tokenizer.json alone it writes -1000 for all.)
 * Token types (llama.cpp llama_token_type): 1 normal, 2 unknown, 3 control (special added tokens
 * such as bos/eos), 4 user-defined (non-special added tokens), 5 unused (padding ids up to the
 * model's vocab_size, named `[PAD<id>]` as convert_hf_to_gguf does), 6 byte.
 */
import { join } from "node:path";
import type { GgufMetadata } from "./gguf_writer.ts";
import { invalidArgument, notFound } from "../util/errors.ts";
import { parseJsonText } from "../util/json.ts";
import { CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE } from "../data/tokenizer.ts";

export const TOKEN_TYPE = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

type Json = Record<string, unknown>;

/** GPT-2's pre-tokenizer regex (the ByteLevel pre-tokenizer with use_regex). */
const GPT2_REGEX =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/** Split regexes of known byte-level tokenizers -> llama.cpp's `tokenizer.ggml.pre` name. */
const KNOWN_SPLITS: Record<string, string> = {
  [GPT2_REGEX]: "gpt-2",
  // Llama 3 / 3.x
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+":
    "llama-bpe",
  // Qwen2 / 2.5
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+":
    "qwen2",
};

export interface GgufTokenizerSummary {
  model: "gpt2" | "llama";
  /** tokenizer.ggml.pre (gpt2 only). */
  pre?: string;
  /** Length of tokenizer.ggml.tokens (the model's vocab_size, padding included). */
  tokens: number;
  merges: number;
  bosId?: number;
  eosId?: number;
  addBos: boolean;
  chatTemplate: boolean;
}

async function readJson(path: string, optional: boolean): Promise<Json | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      if (optional) return undefined;
      throw notFound(`${path}: no such file (GGUF export needs the model's tokenizer)`);
    }
    throw e;
  }
  const v = parseJsonText(text, path);
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw invalidArgument(`${path}: must be a JSON object`);
  }
  return v as Json;
}

function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "object" && v !== null && typeof (v as Json).content === "string") {
    return (v as Json).content as string;
  }
  return undefined;
}

/** The pre-tokenizers of tokenizer.json, flattened out of a Sequence. */
function preTokenizers(tj: Json): Json[] {
  const p = tj.pre_tokenizer as Json | null | undefined;
  if (!p) return [];
  if (p.type === "Sequence" && Array.isArray(p.pretokenizers)) return p.pretokenizers as Json[];
  return [p];
}

/** llama.cpp's pre-tokenizer name for a byte-level tokenizer.json. */
function preTokenizerName(tj: Json, path: string): string {
  const pres = preTokenizers(tj);
  const byteLevel = pres.find((p) => p.type === "ByteLevel");
  if (!byteLevel) {
    throw invalidArgument(
      `${path}: "pre_tokenizer" has no ByteLevel step; only byte-level BPE tokenizers export`,
    );
  }
  const splits = pres.filter((p) => p.type === "Split");
  if (splits.length === 0 && byteLevel.use_regex !== false) return "gpt-2";
  if (splits.length === 1 && byteLevel.use_regex === false) {
    const pattern = splits[0].pattern as Json | undefined;
    const regex = typeof pattern?.Regex === "string" ? pattern.Regex : undefined;
    const name = regex === undefined ? undefined : KNOWN_SPLITS[regex];
    if (name) return name;
    throw invalidArgument(
      `${path}: "pre_tokenizer" Split regex ${
        JSON.stringify(regex)
      } is not one llama.cpp has a pre-tokenizer for (GPT-2, Llama 3, Qwen2)`,
    );
  }
  throw invalidArgument(`${path}: "pre_tokenizer" layout is not one llama.cpp knows`);
}

/** Whether the post-processor's single-sequence template starts with bos / ends with eos. */
function templateAdds(tj: Json, token: string | undefined, at: "start" | "end"): boolean {
  const pp = tj.post_processor as Json | null | undefined;
  if (!pp || token === undefined) return false;
  const procs = pp.type === "Sequence" && Array.isArray(pp.processors)
    ? pp.processors as Json[]
    : [pp];
  for (const p of procs) {
    if (p.type !== "TemplateProcessing" || !Array.isArray(p.single)) continue;
    const single = p.single as Json[];
    const item = at === "start" ? single[0] : single[single.length - 1];
    const special = item?.SpecialToken as Json | undefined;
    if (special?.id === token) return true;
  }
  return false;
}

/**
 * Adds the `tokenizer.*` metadata of `modelDir`'s tokenizer for a model of `vocabSize` ids.
 * Errors name the file and field that cannot be represented.
 */
export async function addTokenizerMetadata(
  md: GgufMetadata,
  modelDir: string,
  vocabSize: number,
): Promise<GgufTokenizerSummary> {
  const path = join(modelDir, TOKENIZER_FILE);
  const configPath = join(modelDir, TOKENIZER_CONFIG_FILE);
  const tj = (await readJson(path, false))!;
  const tc = (await readJson(configPath, true)) ?? {};
  const model = tj.model as Json | undefined;
  if (!model || model.type !== "BPE") {
    throw invalidArgument(
      `${path}: "model.type" ${JSON.stringify(model?.type)} is not supported (only BPE exports)`,
    );
  }
  const sentencePiece = model.byte_fallback === true;
  const pre = sentencePiece ? undefined : preTokenizerName(tj, path);
  const vocab = model.vocab as Record<string, number> | undefined;
  if (!vocab || typeof vocab !== "object") throw invalidArgument(`${path}: "model.vocab" missing`);
  const tokens: (string | undefined)[] = [];
  const types: number[] = [];
  const place = (id: unknown, text: string, type: number, field: string) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      throw invalidArgument(`${path}: "${field}" id of ${JSON.stringify(text)} is not an id`);
    }
    if (tokens[id] !== undefined && tokens[id] !== text) {
      throw invalidArgument(
        `${path}: "${field}": id ${id} is both ${JSON.stringify(tokens[id])} and ${
          JSON.stringify(text)
        }`,
      );
    }
    tokens[id] = text;
    types[id] = type;
  };
  const unk = typeof model.unk_token === "string" ? model.unk_token : undefined;
  for (const [text, id] of Object.entries(vocab)) {
    let type: number = TOKEN_TYPE.NORMAL;
    if (sentencePiece && /^<0x[0-9A-Fa-f]{2}>$/.test(text)) type = TOKEN_TYPE.BYTE;
    if (sentencePiece && text === unk) type = TOKEN_TYPE.UNKNOWN;
    place(id, text, type, "model.vocab");
  }
  const added = Array.isArray(tj.added_tokens) ? tj.added_tokens as Json[] : [];
  for (const a of added) {
    // The unk token is also an added special token in Llama 2's tokenizer.json: keep UNKNOWN.
    const type = sentencePiece && a.content === unk
      ? TOKEN_TYPE.UNKNOWN
      : a.special === true
      ? TOKEN_TYPE.CONTROL
      : TOKEN_TYPE.USER_DEFINED;
    place(a.id, String(a.content), type, "added_tokens");
  }
  if (tokens.length > vocabSize) {
    throw invalidArgument(
      `${path}: ${tokens.length} token ids but the model's vocab_size is ${vocabSize}`,
    );
  }
  const texts: string[] = [];
  const typeArr = new Int32Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    texts.push(tokens[id] ?? `[PAD${id}]`);
    typeArr[id] = tokens[id] === undefined ? TOKEN_TYPE.UNUSED : types[id];
  }
  const rawMerges = Array.isArray(model.merges) ? model.merges as unknown[] : [];
  const merges = rawMerges.map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && m.every((s) => typeof s === "string")) {
      if (m[0].includes(" ") || m[1].includes(" ")) {
        throw invalidArgument(`${path}: "model.merges"[${i}] has a space, GGUF cannot hold it`);
      }
      return `${m[0]} ${m[1]}`;
    }
    throw invalidArgument(`${path}: "model.merges"[${i}] is not a merge`);
  });
  const idOf = (name: string): number | undefined => {
    const s = tokenString(tc[name]);
    if (s === undefined) return undefined;
    const id = texts.indexOf(s);
    if (id < 0) throw invalidArgument(`${configPath}: "${name}" ${JSON.stringify(s)} is no token`);
    return id;
  };
  const bosId = idOf("bos_token");
  const eosId = idOf("eos_token");
  const unkId = idOf("unk_token");
  const padId = idOf("pad_token");
  const bosText = tokenString(tc.bos_token);
  const eosText = tokenString(tc.eos_token);
  const addBos = typeof tc.add_bos_token === "boolean"
    ? tc.add_bos_token
    : templateAdds(tj, bosText, "start");
  const addEos = typeof tc.add_eos_token === "boolean"
    ? tc.add_eos_token
    : templateAdds(tj, eosText, "end");

  if (sentencePiece) {
    md.string("tokenizer.ggml.model", "llama");
    md.strings("tokenizer.ggml.tokens", texts);
    md.f32s("tokenizer.ggml.scores", mergeScores(texts, merges));
    md.i32s("tokenizer.ggml.token_type", typeArr);
    md.bool("tokenizer.ggml.add_space_prefix", prependsSpace(tj));
  } else {
    md.string("tokenizer.ggml.model", "gpt2");
    md.string("tokenizer.ggml.pre", pre!);
    md.strings("tokenizer.ggml.tokens", texts);
    md.i32s("tokenizer.ggml.token_type", typeArr);
    md.strings("tokenizer.ggml.merges", merges);
  }
  if (bosId !== undefined) md.u32("tokenizer.ggml.bos_token_id", bosId);
  if (eosId !== undefined) md.u32("tokenizer.ggml.eos_token_id", eosId);
  if (unkId !== undefined) md.u32("tokenizer.ggml.unknown_token_id", unkId);
  if (padId !== undefined) md.u32("tokenizer.ggml.padding_token_id", padId);
  md.bool("tokenizer.ggml.add_bos_token", addBos);
  md.bool("tokenizer.ggml.add_eos_token", addEos);
  const template = await chatTemplate(tc, modelDir, configPath);
  if (template !== undefined) md.string("tokenizer.chat_template", template);
  return {
    model: sentencePiece ? "llama" : "gpt2",
    pre,
    tokens: vocabSize,
    merges: merges.length,
    bosId,
    eosId,
    addBos,
    chatTemplate: template !== undefined,
  };
}

/** Score of each token: minus the rank of the first merge that makes it, 0 if none does. */
function mergeScores(texts: string[], merges: string[]): Float32Array {
  const rank = new Map<string, number>();
  merges.forEach((m, i) => {
    const joined = m.replace(" ", "");
    if (!rank.has(joined)) rank.set(joined, i);
  });
  return Float32Array.from(texts, (t) => -(rank.get(t) ?? 0));
}

/** Whether the tokenizer puts "▁" before the text (Prepend normalizer / prepending Metaspace). */
function prependsSpace(tj: Json): boolean {
  const normalizer = tj.normalizer as Json | null | undefined;
  const norms = normalizer?.type === "Sequence" && Array.isArray(normalizer.normalizers)
    ? normalizer.normalizers as Json[]
    : normalizer
    ? [normalizer]
    : [];
  if (norms.some((n) => n.type === "Prepend" && n.prepend === "\u2581")) return true;
  const meta = preTokenizers(tj).find((p) => p.type === "Metaspace");
  if (!meta) return false;
  if (typeof meta.prepend_scheme === "string") return meta.prepend_scheme !== "never";
  return meta.add_prefix_space !== false;
}

/** tokenizer_config.json's chat_template (a string, or the "default" of a list), or the file. */
async function chatTemplate(
  tc: Json,
  modelDir: string,
  configPath: string,
): Promise<string | undefined> {
  const v = tc.chat_template;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => t?.name === "default") ?? (v.length === 1 ? v[0] : undefined);
    if (named && typeof named.template === "string") return named.template;
    throw invalidArgument(`${configPath}: "chat_template" is a list without a "default" template`);
  }
  if (v !== undefined && v !== null) {
    throw invalidArgument(`${configPath}: "chat_template" must be a string or a list`);
  }
  try {
    return await Deno.readTextFile(join(modelDir, CHAT_TEMPLATE_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}
