import assert from "node:assert/strict";
import { parseRecordLine, RECORD_LIMITS } from "../../src/data/records.ts";
import { QloradError } from "../../src/util/errors.ts";

const src = { file: "train.jsonl", line: 17, vocabSize: 100 };

function rejects(line: string, pattern: RegExp): void {
  assert.throws(
    () => parseRecordLine(line, src),
    (e: unknown) => {
      assert.ok(e instanceof QloradError, String(e));
      assert.equal(e.kind, "invalid_argument");
      assert.ok(e.message.startsWith("train.jsonl:17: "), e.message);
      assert.match(e.message, pattern);
      return true;
    },
    line,
  );
}

Deno.test("records: each format parses to its typed record", () => {
  assert.deepEqual(parseRecordLine('{"text": "hi", "id": 3}', src), { format: "text", text: "hi" });
  assert.deepEqual(parseRecordLine('{"prompt": "", "completion": " x"}', src), {
    format: "prompt_completion",
    prompt: "",
    completion: " x",
  });
  assert.deepEqual(
    parseRecordLine(
      '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u", ' +
        '"name": "n"}, {"role": "assistant", "content": ""}]}',
      src,
    ),
    {
      format: "messages",
      messages: [
        { role: "system", content: "s" },
        { role: "user", content: "u" },
        { role: "assistant", content: "" },
      ],
    },
  );
  assert.deepEqual(parseRecordLine('{"input_ids": [0, 99]}', src), {
    format: "pretokenized",
    inputIds: [0, 99],
  });
  assert.deepEqual(parseRecordLine('{"input_ids": [0, 99], "labels": [-100, 99]}', src), {
    format: "pretokenized",
    inputIds: [0, 99],
    labels: [-100, 99],
  });
  assert.equal(parseRecordLine("   \t", src), null);
  assert.equal(parseRecordLine("", src), null);
});

Deno.test("records: every bad record names file:line and the field", () => {
  rejects('{"text": "a"', /invalid JSON at end of line/);
  rejects('{"text": "a",, "b": 1}', /invalid JSON at column 14/);
  rejects('{"text": tru}', /invalid JSON at column 13/); // where "e" should be
  rejects("[1, 2]", /must be a JSON object, got an array/);
  rejects('"text"', /must be a JSON object/);
  rejects('{"question": "a", "answer": "b"}', /unknown record format.*"question", "answer"/);
  rejects("{}", /unknown record format \(keys: none\)/);
  rejects('{"text": "a", "messages": []}', /ambiguous record.*"text".*"messages"/);
  rejects('{"text": 3}', /"text" must be a non-empty string, got number 3/);
  rejects('{"text": ""}', /"text" must be a non-empty string/);
  rejects('{"prompt": "a"}', /"completion" is missing/);
  rejects('{"completion": "a"}', /"prompt" is missing/);
  rejects('{"prompt": "a", "completion": 5}', /"completion" must be a non-empty string/);
  rejects('{"prompt": null, "completion": "b"}', /"prompt" must be a string, got null/);
  rejects('{"messages": []}', /"messages" is empty/);
  rejects('{"messages": {"role": "user"}}', /"messages" must be an array, got an object/);
  rejects('{"messages": ["hi"]}', /"messages"\[0\] must be an object/);
  rejects(
    '{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}',
    /"messages"\[1\]\.role must be one of system, user, assistant, got string "robot"/,
  );
  rejects('{"messages": [{"content": "a"}]}', /"messages"\[0\]\.role must be one of/);
  rejects(
    '{"messages": [{"role": "assistant", "content": null}]}',
    /"messages"\[0\]\.content must be a string, got null/,
  );
  rejects('{"input_ids": []}', /"input_ids" is empty/);
  rejects('{"input_ids": "1 2"}', /"input_ids" must be an array of integers/);
  rejects('{"input_ids": [1, 2.5]}', /"input_ids"\[1\] must be an integer, got number 2.5/);
  rejects('{"input_ids": [1, 100]}', /"input_ids"\[1\] = 100 is outside the vocabulary \[0, 100\)/);
  rejects('{"input_ids": [-100]}', /"input_ids"\[0\] = -100 is outside the vocabulary/);
  rejects('{"input_ids": [1, 2], "labels": [1]}', /"labels" has 1 entries but "input_ids" has 2/);
  rejects('{"input_ids": [1, 2], "labels": [1, -5]}', /"labels"\[1\] = -5 is outside/);
  rejects('{"labels": [1]}', /"labels" given without "input_ids"/);
});

Deno.test("records: numbers beyond a double, deep nesting and oversized records are refused", () => {
  // 1e400 parses to Infinity: the message says so instead of "null".
  rejects('{"input_ids": [1, 1e400]}', /"input_ids"\[1\] must be an integer, got number Infinity/);
  rejects('{"text": 1e400}', /"text" must be a non-empty string, got number Infinity \(beyond/);
  // Nesting: refused before parsing, valid or not, naming the column where it passes the limit.
  const deep = (n: number) => `{"text": "a", "meta": ${"[".repeat(n)}${"]".repeat(n)}}`;
  rejects(deep(RECORD_LIMITS.maxDepth), /JSON nested deeper than 64 levels at column 86/);
  assert.equal(parseRecordLine(deep(RECORD_LIMITS.maxDepth - 1), src)?.format, "text");
  rejects(`{"text":${"[".repeat(5000)}`, /JSON nested deeper than 64 levels/);
  // Sizes: one character over each limit.
  const over = RECORD_LIMITS.maxChars + 1;
  rejects(JSON.stringify({ text: "x".repeat(over) }), new RegExp(`text is ${over} characters`));
  rejects(
    JSON.stringify({ prompt: "p".repeat(over - 5), completion: "abcde" }),
    new RegExp(`text is ${over} characters`),
  );
  assert.equal(
    parseRecordLine(JSON.stringify({ text: "x".repeat(over - 1) }), src)?.format,
    "text",
  );
  const msgs = Array.from({ length: RECORD_LIMITS.maxMessages + 1 }, () => ({
    role: "user",
    content: "a",
  }));
  rejects(JSON.stringify({ messages: msgs }), /"messages" has 4097 entries, more than 4096/);
  rejects(
    JSON.stringify({ input_ids: new Array(RECORD_LIMITS.maxTokenIds + 1).fill(1) }),
    /"input_ids" has 1048577 entries/,
  );
  // A long string value is described, not quoted.
  rejects(
    '{"messages": [{"role": "a secret sentence here", "content": "b"}]}',
    /got a string of 22 characters/,
  );
});
