/**
 * Checks a written fixture the way a user's tools will read it: its tokenizer loads in
 * @huggingface/tokenizers, round-trips every training record (chat ones through the template),
 * and agrees with config.json on the vocabulary size.
 */
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";

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
