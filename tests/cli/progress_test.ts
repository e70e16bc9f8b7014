/** Progress (src/cli/progress.ts) with the terminal flag injected: a bar, or a line per 10%. */
import assert from "node:assert/strict";
import { formatDuration, Progress } from "../../src/cli/progress.ts";
import { quantizeProgress } from "../../src/cli/quantize.ts";

function run(tty: boolean, total: number, values: number[], everyPercent?: number): string {
  let out = "";
  const p = new Progress({ label: "train", total, tty, write: (t) => out += t, everyPercent });
  for (const v of values) p.update(v, `loss ${v}`);
  p.done();
  return out;
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

Deno.test("off a terminal: a plain line at each 10% of the total and at the end, no escapes", () => {
  const out = run(false, 37, range(1, 37));
  // 10% of 37 is 3.7: the first step at or past each tenth is 4, 8, 12, 15, 19, 23, 26, 30, 34,
  // then 37 (the end). Hand-computed: ceil(37 * k / 10) for k = 1..10.
  const steps = [...out.matchAll(/^train +(\d+)\/37 loss \1$/gm)].map((m) => Number(m[1]));
  assert.deepEqual(steps, [4, 8, 12, 15, 19, 23, 26, 30, 34, 37]);
  assert.equal(out.split("\n").length, steps.length + 1);
  assert.ok(!out.includes("\r") && !out.includes("\x1b"), "no carriage return or escape");
});

Deno.test("off a terminal: coarse updates that jump past several tenths print once each", () => {
  // A job reporting only at 1, 50, 51 and 100 of 100: a line when a new tenth is reached.
  const out = run(false, 100, [1, 50, 51, 100]);
  assert.deepEqual([...out.matchAll(/^train +(\d+)\/100/gm)].map((m) => Number(m[1])), [50, 100]);
  // A total under 10 prints every update, and a 25% step prints four lines.
  assert.equal(run(false, 3, [1, 2, 3]).split("\n").length - 1, 3);
  assert.equal(run(false, 8, range(1, 8), 25).split("\n").length - 1, 4);
});

Deno.test("on a terminal: one bar rewritten in place, one newline at the end", () => {
  const out = run(true, 4, [1, 2, 3, 4]);
  const frames = out.split("\r\x1b[2K").slice(1);
  assert.equal(frames.length, 4);
  // 30 cells, 2 of 4 done: 15 filled.
  assert.equal(frames[1], `train |${"█".repeat(15)}${"░".repeat(15)}| 2/4 loss 2`);
  assert.equal(frames[3], `train |${"█".repeat(30)}| 4/4 loss 4\n`);
  assert.equal(out.split("\n").length, 2);
  assert.throws(() => new Progress({ label: "x", total: 0, tty: true, write() {} }), /total/);
});

Deno.test("quantize progress counts the checkpoint's tensors and their split, as the summary", () => {
  let out = "";
  const line = quantizeProgress(false, (t) => out += t);
  // 5 tensors: embeddings kept, 3 linears quantized, a norm kept.
  const kinds = [false, true, true, true, false];
  kinds.forEach((quantized, i) =>
    line.update({
      tensor: `t${i}`,
      index: i + 1,
      total: 5,
      bytesIn: 8,
      bytesOut: 4,
      quantized,
    })
  );
  line.done();
  assert.equal(out.trim().split("\n").at(-1), "tensors 5/5 (3 quantized, 2 kept) t4");
  assert.match(out, /^tensors 2\/5 \(1 quantized, 1 kept\) t1$/m);
});

Deno.test("formatDuration: seconds, minutes, hours, as an ETA reads", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(44.4), "44s");
  assert.equal(formatDuration(59.6), "1m00s");
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(2 * 3600 + 7 * 60 + 59), "2h07m");
  assert.equal(formatDuration(-3), "0s");
});
