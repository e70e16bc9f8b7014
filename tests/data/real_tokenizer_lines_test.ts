/**
 * Dataset lines that a real tokenizer or its chat template cannot take fail through the loader
 * the Train job uses (loadDataset), naming the file, the line and the field: a role outside
 * system/user/assistant (the Llama 3 template itself would print any role), a message without content, content that is not a string (the list-of-parts
 * form of other APIs), text that is not valid Unicode (a lone surrogate escape, which
 * transformers refuses and a JS tokenizer would silently turn into U+FFFD), and a messages record
 * for a tokenizer with no chat template. Each bad line comes after a good one, so the line number
 * is the loader's count and not the first line by chance.
 */
import assert from "node:assert/strict";
import { loadDataset } from "../../src/data/dataset.ts";
import { QloradError } from "../../src/util/errors.ts";
import { llama3Tokenizer, sentencePieceTokenizer } from "./real_tokenizers.ts";
import { jsonlFile } from "./setup.ts";

const GOOD = {
  messages: [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello." }],
};

function failsWith(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof QloradError, String(e));
    assert.equal(e.kind, "invalid_argument");
    assert.match(e.message, pattern);
    return true;
  };
}

/** Loads [GOOD, bad] as chat.jsonl; the error must name chat.jsonl:2. */
async function rejectsSecondLine(bad: string | object, pattern: RegExp): Promise<void> {
  const tok = await llama3Tokenizer();
  const path = await jsonlFile([GOOD, bad]);
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 64, labelSource: "chat.jsonl" }),
    failsWith(pattern),
  );
}

Deno.test("real tokenizer lines: the good line alone loads", async () => {
  const tok = await llama3Tokenizer();
  const { examples } = await loadDataset(await jsonlFile([GOOD]), tok, { maxSeqLen: 64 });
  assert.equal(examples.length, 1);
});

Deno.test("real tokenizer lines: a role qlorad does not train on (tool) names line and field", async () => {
  await rejectsSecondLine(
    { messages: [{ role: "user", content: "x" }, { role: "tool", content: "{}" }] },
    /^chat\.jsonl:2: "messages"\[1\]\.role must be one of system, user, assistant, got string "tool"/,
  );
});

Deno.test("real tokenizer lines: a message without content names line and field", async () => {
  await rejectsSecondLine(
    { messages: [{ role: "user", content: "x" }, { role: "assistant" }] },
    /^chat\.jsonl:2: "messages"\[1\]\.content must be a string, got nothing \(the key is missing\)/,
  );
  await rejectsSecondLine(
    { messages: [{ content: "x" }] },
    /^chat\.jsonl:2: "messages"\[0\]\.role must be one of system, user, assistant, got nothing \(the/,
  );
});

Deno.test("real tokenizer lines: content that is not a string names line and field", async () => {
  await rejectsSecondLine(
    { messages: [{ role: "user", content: [{ type: "text", text: "x" }] }] },
    /^chat\.jsonl:2: "messages"\[0\]\.content must be a string, got an array/,
  );
  await rejectsSecondLine(
    { messages: [{ role: "user", content: 42 }] },
    /^chat\.jsonl:2: "messages"\[0\]\.content must be a string, got number 42/,
  );
});

Deno.test("real tokenizer lines: text with a lone surrogate names line and field", async () => {
  // Valid JSON and valid UTF-8 bytes, but "\ud83d" without its low half is no Unicode text.
  await rejectsSecondLine(
    '{"messages": [{"role": "user", "content": "ok"}, ' +
      '{"role": "assistant", "content": "half an emoji \\ud83d"}]}',
    /^chat\.jsonl:2: "messages"\[1\]\.content is not valid Unicode: an unpaired surrogate at character 15 /,
  );
  await rejectsSecondLine(
    '{"text": "\\udc00 first"}',
    /^chat\.jsonl:2: "text" is not valid Unicode/,
  );
  await rejectsSecondLine(
    '{"prompt": "p", "completion": "c\\ud800"}',
    /^chat\.jsonl:2: "completion" is not valid Unicode/,
  );
  // A proper pair is fine.
  const tok = await llama3Tokenizer();
  const path = await jsonlFile(['{"text": "an emoji \\ud83d\\ude00"}']);
  const { examples } = await loadDataset(path, tok, { maxSeqLen: 64 });
  assert.equal(examples.length, 1);
});

Deno.test("real tokenizer lines: messages for a tokenizer without a chat template name the line", async () => {
  const tok = await sentencePieceTokenizer();
  assert.equal(tok.hasChatTemplate, false);
  const path = await jsonlFile([{ text: "fine" }, GOOD]);
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 64, labelSource: "chat.jsonl" }),
    failsWith(
      /^chat\.jsonl:2: a "messages" record needs a chat template: .*tokenizer_config\.json/,
    ),
  );
});
