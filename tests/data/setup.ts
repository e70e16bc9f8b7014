/** The tiny Llama fixture (tokenizer, chat template, datasets), made once per test process. */
import { join } from "node:path";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { loadTokenizer, type TextTokenizer } from "../../src/data/tokenizer.ts";

let made: Promise<string> | undefined;
const tempDirs: string[] = [];

async function tempDir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  tempDirs.push(dir);
  return dir;
}

globalThis.addEventListener("unload", () => {
  for (const d of tempDirs) Deno.removeSync(d, { recursive: true });
});

/** Folder of the fixture model; shared, do not modify (copy with `modelCopy`). */
export function tinyModelDir(): Promise<string> {
  made ??= (async () => {
    const root = await tempDir("qlorad-data-");
    const dir = join(root, "tiny");
    await makeTinyLlama(dir);
    return dir;
  })();
  return made;
}

export async function tinyTokenizer(): Promise<TextTokenizer> {
  return loadTokenizer(await tinyModelDir());
}

/** A copy of the fixture's tokenizer files in a fresh folder, to edit. */
export async function modelCopy(
  edit?: (tokenizerConfig: Record<string, unknown>) => void,
): Promise<string> {
  const src = await tinyModelDir();
  const dir = await tempDir("qlorad-tok-");
  for (const f of ["tokenizer.json", "tokenizer_config.json", "config.json"]) {
    await Deno.copyFile(join(src, f), join(dir, f));
  }
  if (edit) {
    const path = join(dir, "tokenizer_config.json");
    const cfg = JSON.parse(await Deno.readTextFile(path));
    edit(cfg);
    await Deno.writeTextFile(path, JSON.stringify(cfg));
  }
  return dir;
}

/** Writes lines to a fresh JSONL file; returns its path. */
export async function jsonlFile(lines: (string | object)[], name = "data.jsonl"): Promise<string> {
  const dir = await tempDir("qlorad-jsonl-");
  const path = join(dir, name);
  const text = lines.map((l) => (typeof l === "string" ? l : JSON.stringify(l)) + "\n").join("");
  await Deno.writeTextFile(path, text);
  return path;
}

/** The fixture's special token strings. */
export const BOS = "<|begin_of_text|>";
export const EOS = "<|end_of_text|>";
export const USER = "<|user|>";
export const ASSISTANT = "<|assistant|>";
