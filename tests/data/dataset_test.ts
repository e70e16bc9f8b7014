import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDataset, MAX_LINE_BYTES, readLines } from "../../src/data/dataset.ts";
import { encodeRecord } from "../../src/data/encode.ts";
import { IGNORE_INDEX, parseRecordLine } from "../../src/data/records.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { QloradError } from "../../src/util/errors.ts";
import { EOS, jsonlFile, modelCopy, tinyModelDir, tinyTokenizer } from "./setup.ts";

function isError(kind: string, pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof QloradError, String(e));
    assert.equal(e.kind, kind);
    assert.match(e.message, pattern);
    return true;
  };
}

Deno.test("dataset: the fixture's train.jsonl loads as shifted examples", async () => {
  const dir = await tinyModelDir();
  const tok = await tinyTokenizer();
  const path = join(dir, "train.jsonl");
  const ds = await loadDataset(path, tok, { maxSeqLen: 256, labelSource: "train.jsonl" });
  const lines = (await Deno.readTextFile(path)).trim().split("\n");
  assert.equal(ds.stats.records, lines.length);
  assert.equal(ds.examples.length, lines.length);
  assert.deepEqual(ds.warnings, []);
  const f = ds.stats.formats;
  assert.equal(f.text + f.prompt_completion + f.messages + f.pretokenized, lines.length);
  assert.ok(f.text > 0 && f.prompt_completion > 0 && f.messages > 0);
  let tokens = 0, labelTokens = 0;
  ds.examples.forEach((ex, i) => {
    assert.equal(ex.line, i + 1);
    // Independently: encode the line and shift by hand.
    const rec = parseRecordLine(lines[i], { file: "t", line: i + 1, vocabSize: tok.vocabSize })!;
    const enc = encodeRecord(tok, rec, "t");
    assert.deepEqual(Array.from(ex.tokens), enc.inputIds.slice(0, -1));
    assert.deepEqual(Array.from(ex.labels), enc.labels.slice(1));
    // Every record ends with a trained eos: the last position's target.
    assert.equal(ex.labels[ex.labels.length - 1], tok.eosId);
    assert.equal(ex.labelTokens, Array.from(ex.labels).filter((l) => l !== IGNORE_INDEX).length);
    tokens += ex.tokens.length;
    labelTokens += ex.labelTokens;
  });
  assert.equal(ds.stats.tokens, tokens);
  assert.equal(ds.stats.labelTokens, labelTokens);
});

Deno.test("dataset: text labels[t] is the token at t+1", async () => {
  const tok = await tinyTokenizer();
  const path = await jsonlFile([{ text: "Rome is the capital of Italy." }]);
  const [ex] = (await loadDataset(path, tok, { maxSeqLen: 64 })).examples;
  const ids = [
    tok.bosId!,
    ...tok.encode("Rome is the capital of Italy.", { addSpecialTokens: false }),
  ];
  assert.deepEqual(Array.from(ex.tokens), ids);
  assert.deepEqual(Array.from(ex.labels), [...ids.slice(1), tok.eosId!]);
});

Deno.test("dataset: truncation warns naming file:line, first five then a count", async () => {
  const tok = await tinyTokenizer();
  const long = "The quick brown fox jumps over the lazy dog.";
  const n = tok.encode(long, { addSpecialTokens: false }).length + 2; // bos, eos
  const lines: object[] = [{ text: "Hi" }];
  for (let i = 0; i < 7; i++) lines.push({ text: long });
  const path = await jsonlFile(lines);
  const ds = await loadDataset(path, tok, { maxSeqLen: 8, labelSource: "long.jsonl" });
  assert.equal(ds.stats.truncated, 7);
  assert.equal(ds.examples.length, 8);
  assert.equal(ds.warnings.length, 6);
  for (let i = 0; i < 5; i++) {
    assert.equal(
      ds.warnings[i],
      `long.jsonl:${i + 2}: record of ${n} tokens truncated to max_seq_len 8`,
    );
  }
  assert.match(ds.warnings[5], /^long\.jsonl: 7 records truncated .* \(2 more than listed\)$/);
  const ex = ds.examples[1];
  const ids = [tok.bosId!, ...tok.encode(long, { addSpecialTokens: false })].slice(0, 9);
  assert.deepEqual(Array.from(ex.tokens), ids.slice(0, 8));
  assert.deepEqual(Array.from(ex.labels), ids.slice(1, 9));
  assert.equal(ds.stats.longest, 8);
});

Deno.test("dataset: a record with nothing trained after truncation is skipped with a warning", async () => {
  const tok = await tinyTokenizer();
  const path = await jsonlFile([
    { prompt: "The quick brown fox jumps over the lazy dog.", completion: " Yes" },
    { text: "Hi there" },
    { messages: [{ role: "user", content: "no answer" }] },
  ]);
  const ds = await loadDataset(path, tok, { maxSeqLen: 6, labelSource: "p.jsonl" });
  assert.equal(ds.examples.length, 1);
  assert.equal(ds.examples[0].line, 2);
  assert.equal(ds.stats.skipped, 2);
  assert.deepEqual(ds.warnings.filter((w) => /skipped/.test(w)), [
    "p.jsonl:1: no tokens to train on; skipped",
    "p.jsonl:3: no tokens to train on; skipped",
  ]);
});

Deno.test("dataset: bad lines fail naming file and line (blank lines counted, CRLF)", async () => {
  const tok = await tinyTokenizer();
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "mixed.jsonl");
    await Deno.writeTextFile(
      path,
      '{"text": "a"}\r\n\r\n{"prompt": "q", "completion": "x"}\r\n{"prompt": "q", "completion": 4}\r\n',
    );
    await assert.rejects(
      () => loadDataset(path, tok, { maxSeqLen: 32, labelSource: "mixed.jsonl" }),
      isError("invalid_argument", /^mixed\.jsonl:4: "completion" must be a non-empty string/),
    );
    // Without a label, the path names the file.
    await Deno.writeTextFile(path, '{"text": "a"}\n{"input_ids": [1, 99999]}');
    await assert.rejects(
      () => loadDataset(path, tok, { maxSeqLen: 32 }),
      isError(
        "invalid_argument",
        new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:2: "input_ids"\\[1\\] = 99999`),
      ),
    );
    await Deno.writeFile(
      path,
      new Uint8Array([...new TextEncoder().encode('{"text": "a"}\n{"text": "'), 0xff, 0x22, 0x7d]),
    );
    await assert.rejects(
      () => loadDataset(path, tok, { maxSeqLen: 32, labelSource: "bytes.jsonl" }),
      isError("invalid_argument", /^bytes\.jsonl:2: not valid UTF-8/),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dataset: a bad line late in the file fails before anything is returned", async () => {
  const tok = await tinyTokenizer();
  const lines: (object | string)[] = [];
  for (let i = 0; i < 300; i++) lines.push({ text: `${i} plus 1 equals ${i + 1}.` });
  lines.push('{"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]}');
  const path = await jsonlFile(lines);
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 32, labelSource: "late.jsonl" }),
    isError("invalid_argument", /^late\.jsonl:301: "messages"\[1\]\.role/),
  );
});

Deno.test("dataset: an empty file (or only blank lines) is invalid, naming it", async () => {
  const tok = await tinyTokenizer();
  for (const lines of [[], ["", "  "]]) {
    const path = await jsonlFile(lines);
    await assert.rejects(
      () => loadDataset(path, tok, { maxSeqLen: 32, labelSource: "empty.jsonl" }),
      isError("invalid_argument", /^empty\.jsonl: the dataset has no records/),
    );
  }
});

Deno.test("dataset: a missing file is not_found", async () => {
  const tok = await tinyTokenizer();
  await assert.rejects(
    () => loadDataset("/nonexistent/d.jsonl", tok, { maxSeqLen: 8, labelSource: "d.jsonl" }),
    isError("not_found", /^d\.jsonl: no such file/),
  );
});

Deno.test("dataset: a messages record without a chat template names the dataset line", async () => {
  const tok = await loadTokenizer(await modelCopy((cfg) => delete cfg.chat_template));
  const path = await jsonlFile([
    { text: "fine" },
    { messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] },
  ]);
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 8, labelSource: "chat.jsonl" }),
    isError("invalid_argument", /^chat\.jsonl:2: .*chat template.*tokenizer_config\.json/),
  );
});

Deno.test("dataset: a chat template error names the dataset line", async () => {
  const tok = await tinyTokenizer();
  const path = await jsonlFile([
    { messages: [{ role: "system", content: "be brief" }, { role: "user", content: "a" }] },
  ]);
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 8, labelSource: "sys.jsonl" }),
    isError("invalid_argument", /^sys\.jsonl:1: chat template: .*unsupported role: system/),
  );
});

Deno.test("dataset: pre-tokenized ids are checked against the vocabulary", async () => {
  const tok = await tinyTokenizer();
  const v = tok.vocabSize;
  const path = await jsonlFile([{ input_ids: [1, 2, 3], labels: [-100, 2, 3] }, {
    input_ids: [1, v],
  }]);
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 8, labelSource: "ids.jsonl" }),
    isError("invalid_argument", new RegExp(`^ids\\.jsonl:2: "input_ids"\\[1\\] = ${v} is outside`)),
  );
  const ok = await jsonlFile([{ input_ids: [1, 2, 3], labels: [-100, 2, 3] }]);
  const [ex] = (await loadDataset(ok, tok, { maxSeqLen: 8 })).examples;
  assert.deepEqual(Array.from(ex.tokens), [1, 2]);
  assert.deepEqual(Array.from(ex.labels), [2, 3]);
});

Deno.test("dataset: readLines streams lines with numbers across chunk edges", async () => {
  const lines = Array.from({ length: 5000 }, (_, i) => `line ${i} ${"é".repeat(i % 37)}`);
  const path = await jsonlFile(lines);
  let n = 0;
  for await (const { line, text } of readLines(path)) {
    assert.equal(text, lines[n]);
    assert.equal(line, ++n);
  }
  assert.equal(n, lines.length);
});

Deno.test("dataset: assistant turns of a conversation decode to contents + eos", async () => {
  const tok = await tinyTokenizer();
  const path = await jsonlFile([{
    messages: [
      { role: "user", content: "What is the capital of Peru?" },
      { role: "assistant", content: "Lima." },
      { role: "user", content: "And of Chile?" },
      { role: "assistant", content: "Santiago." },
    ],
  }]);
  const [ex] = (await loadDataset(path, tok, { maxSeqLen: 128 })).examples;
  const trained = Array.from(ex.labels).filter((l) => l !== IGNORE_INDEX);
  assert.equal(tok.decode(trained), `Lima.${EOS}Santiago.${EOS}`);
});

Deno.test("dataset: a line over the limit is refused naming it; one at the limit reads", async () => {
  const limit = 1000; // small, so the test crosses many 64 KiB chunks only in the big case below
  const path = await jsonlFile(["a", "b".repeat(limit), "c".repeat(limit + 1), "d"]);
  const seen: number[] = [];
  await assert.rejects(
    async () => {
      for await (const { line } of readLines(path, { label: "x.jsonl", maxLineBytes: limit })) {
        seen.push(line);
      }
    },
    isError("invalid_argument", /^x\.jsonl:3: line longer than 1000 bytes/),
  );
  assert.deepEqual(seen, [1, 2]);
  // The default limit, crossing chunk edges: the line at the limit reads whole, the next is
  // refused, naming it, and loadDataset fails before tokenizing anything.
  const atLimit = `{"text": "${"y".repeat(MAX_LINE_BYTES - 12)}"}`;
  assert.equal(new TextEncoder().encode(atLimit).length, MAX_LINE_BYTES);
  const big = await jsonlFile([atLimit, `${atLimit}  `], "big.jsonl");
  const lines: number[] = [];
  await assert.rejects(
    async () => {
      for await (const { line, text } of readLines(big, "big.jsonl")) {
        lines.push(line);
        assert.equal(text, atLimit);
      }
    },
    isError("invalid_argument", /^big\.jsonl:2: line longer than 4194304 bytes/),
  );
  assert.deepEqual(lines, [1]);
});

Deno.test("dataset: reading stops at the next line once the signal aborts", async () => {
  const path = await jsonlFile(Array.from({ length: 600 }, (_, i) => ({ text: `r ${i}` })));
  const ctl = new AbortController();
  const seen: number[] = [];
  await assert.rejects(
    async () => {
      for await (const { line } of readLines(path, { signal: ctl.signal })) {
        seen.push(line);
        if (line === 3) ctl.abort();
      }
    },
    isError("cancelled", /cancelled/),
  );
  assert.deepEqual(seen, [1, 2, 3], "no line after the abort");
  const tok = await tinyTokenizer();
  const aborted = new AbortController();
  aborted.abort();
  await assert.rejects(
    () => loadDataset(path, tok, { maxSeqLen: 8, signal: aborted.signal }),
    isError("cancelled", /cancelled/),
  );
});
