import assert from "node:assert/strict";
import { loadTokenizer, type TextTokenizer } from "../../src/data/tokenizer.ts";
import {
  chatSpans,
  type Encoded,
  encodeMessages,
  encodePromptCompletion,
  encodeRecord,
  encodeText,
} from "../../src/data/encode.ts";
import { IGNORE_INDEX } from "../../src/data/records.ts";
import { IGNORE_INDEX as GRAPH_IGNORE_INDEX } from "../../src/model/graph.ts";
import { QloradError } from "../../src/util/errors.ts";
import { ASSISTANT, BOS, EOS, modelCopy, tinyTokenizer, USER } from "./setup.ts";

/** Maximal runs of trained tokens, each decoded. */
function trainedRuns(tok: TextTokenizer, e: Encoded): string[] {
  const runs: string[] = [];
  let run: number[] = [];
  e.inputIds.forEach((id, i) => {
    if (e.labels[i] !== IGNORE_INDEX) {
      assert.equal(e.labels[i], id, "a trained label is its own token (not shifted yet)");
      run.push(id);
    } else if (run.length) {
      runs.push(tok.decode(run));
      run = [];
    }
  });
  if (run.length) runs.push(tok.decode(run));
  return runs;
}

function untrained(tok: TextTokenizer, e: Encoded): string {
  return tok.decode(e.inputIds.filter((_, i) => e.labels[i] === IGNORE_INDEX));
}

Deno.test("encode: the ignore label is the graph's", () => {
  assert.equal(IGNORE_INDEX, GRAPH_IGNORE_INDEX);
});

Deno.test("encode: text is bos + text + eos, every token trained", async () => {
  const tok = await tinyTokenizer();
  const text = "Oslo is the capital of Norway. 7 plus 5 equals 12.";
  const e = encodeText(tok, text);
  assert.deepEqual(e.inputIds, [
    tok.bosId,
    ...tok.encode(text, { addSpecialTokens: false }),
    tok.eosId,
  ]);
  assert.deepEqual(e.labels, e.inputIds);
  assert.equal(tok.decode(e.inputIds), BOS + text + EOS);
});

Deno.test("encode: prompt/completion trains the completion and eos only", async () => {
  const tok = await tinyTokenizer();
  const prompt = "Q: What is the capital of Kenya?\nA:";
  const completion = " Nairobi";
  const e = encodePromptCompletion(tok, prompt, completion);
  assert.deepEqual(trainedRuns(tok, e), [completion + EOS]);
  assert.equal(untrained(tok, e), BOS + prompt);
  // The prompt's ids are exactly those of the prompt tokenized alone (as at generation).
  const p = tok.encode(prompt);
  assert.deepEqual(e.inputIds.slice(0, p.length), p);
  assert.ok(e.labels.slice(0, p.length).every((l) => l === IGNORE_INDEX));
  assert.ok(e.labels.slice(p.length).every((l) => l !== IGNORE_INDEX));
});

Deno.test("encode: messages train each assistant content + end of turn, never user turns", async () => {
  const tok = await tinyTokenizer();
  const messages = [
    { role: "user", content: "What is the capital of France?" },
    { role: "assistant", content: "Paris." },
    { role: "user", content: "And of Spain? Answer in one word, 日本語 ok." },
    { role: "assistant", content: " Madrid, über 日本. " },
    { role: "user", content: "Thanks" },
    { role: "assistant", content: "" },
    { role: "user", content: "Paris." }, // the same text as an assistant turn: never trained
  ];
  const e = encodeMessages(tok, messages);
  const rendered = `${BOS}${USER}What is the capital of France?${ASSISTANT}Paris.${EOS}` +
    `${USER}And of Spain? Answer in one word, 日本語 ok.${ASSISTANT} Madrid, über 日本. ${EOS}` +
    `${USER}Thanks${ASSISTANT}${EOS}${USER}Paris.`;
  // The ids are the rendered conversation tokenized whole, without added specials.
  assert.deepEqual(e.inputIds, tok.encode(rendered, { addSpecialTokens: false }));
  assert.deepEqual(trainedRuns(tok, e), [
    "Paris." + EOS,
    " Madrid, über 日本. " + EOS,
    EOS,
  ]);
  assert.equal(
    untrained(tok, e),
    `${BOS}${USER}What is the capital of France?${ASSISTANT}` +
      `${USER}And of Spain? Answer in one word, 日本語 ok.${ASSISTANT}` +
      `${USER}Thanks${ASSISTANT}${USER}Paris.`,
  );
});

Deno.test("encode: the span of each assistant turn comes from prefix renderings", async () => {
  const tok = await tinyTokenizer();
  const messages = [
    { role: "user", content: "a" },
    { role: "assistant", content: "b" },
    { role: "user", content: "c" },
    { role: "assistant", content: "b" },
  ];
  const { text, spans } = chatSpans(tok, messages);
  const first = `${BOS}${USER}a${ASSISTANT}`;
  const second = `${first}b${EOS}${USER}c${ASSISTANT}`;
  assert.deepEqual(spans, [
    [first.length, first.length + 1 + EOS.length],
    [second.length, second.length + 1 + EOS.length],
  ]);
  assert.equal(text.length, second.length + 1 + EOS.length);
});

Deno.test("encode: a turn edge inside a token trains the straddling token", async () => {
  // A plain-text template: "Assistant: Paris." tokenizes " Paris" as one token across the
  // header/content edge; that token holds trained text, so it is trained.
  const dir = await modelCopy((cfg) => {
    cfg.chat_template = "{%- for m in messages %}{%- if m.role == 'user' %}" +
      "{{ 'User: ' + m.content + '\\n' }}{%- else %}{{ 'Assistant: ' + m.content + '\\n' }}" +
      "{%- endif %}{%- endfor %}";
  });
  const tok = await loadTokenizer(dir);
  const messages = [
    { role: "user", content: "What is the capital of France?" },
    { role: "assistant", content: "Paris." },
    { role: "user", content: "And of 日本?" },
    { role: "assistant", content: "東京 is" },
  ];
  const e = encodeMessages(tok, messages);
  const rendered = "User: What is the capital of France?\nAssistant: Paris.\n" +
    "User: And of 日本?\nAssistant: 東京 is\n";
  assert.deepEqual(e.inputIds, tok.encode(rendered, { addSpecialTokens: false }));
  // " P" straddles; the space before 東京 is a token of its own and stays untrained.
  assert.deepEqual(trainedRuns(tok, e), [" Paris.\n", "東京 is\n"]);
});

Deno.test("encode: a template that trims content trains the printed content", async () => {
  const dir = await modelCopy((cfg) => {
    cfg.chat_template = String(cfg.chat_template).replaceAll(
      "message['content']",
      "(message['content'] | trim)",
    );
  });
  const tok = await loadTokenizer(dir);
  const e = encodeMessages(tok, [
    { role: "user", content: "  hi " },
    { role: "assistant", content: "  Rome.  " },
  ]);
  assert.deepEqual(trainedRuns(tok, e), ["Rome." + EOS]);
  assert.equal(untrained(tok, e), `${BOS}${USER}hi${ASSISTANT}`);
});

Deno.test("encode: a template that rewrites earlier turns is refused, naming file:line", async () => {
  const dir = await modelCopy((cfg) => {
    cfg.chat_template = "{%- for m in messages %}{{ m.content }}" +
      "{%- if loop.last %}{{ '.' }}{%- else %}{{ ',' }}{%- endif %}{%- endfor %}";
  });
  const tok = await loadTokenizer(dir);
  assert.throws(
    () =>
      encodeRecord(tok, {
        format: "messages",
        messages: [
          { role: "user", content: "a" },
          { role: "assistant", content: "b" },
          { role: "user", content: "c" },
        ],
      }, "chat.jsonl:4"),
    (e: unknown) =>
      e instanceof QloradError && e.kind === "invalid_argument" &&
      e.message.startsWith("chat.jsonl:4: ") && /messages\[1\]/.test(e.message),
  );
});

Deno.test("encode: pre-tokenized records keep their ids and labels", async () => {
  const tok = await tinyTokenizer();
  assert.deepEqual(
    encodeRecord(tok, { format: "pretokenized", inputIds: [5, 9, 2] }, "x:1"),
    { inputIds: [5, 9, 2], labels: [5, 9, 2] },
  );
  assert.deepEqual(
    encodeRecord(
      tok,
      { format: "pretokenized", inputIds: [5, 9, 2], labels: [-100, 9, 7] },
      "x:1",
    ),
    { inputIds: [5, 9, 2], labels: [-100, 9, 7] },
  );
});
