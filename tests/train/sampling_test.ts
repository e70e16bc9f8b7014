/**
 * Host-side token choice (src/train/sampling.ts) against distributions worked out by hand, draws
 * against those distributions, and seeds; and the streamed text with stop strings
 * (src/train/text_stream.ts).
 */
import assert from "node:assert/strict";
import {
  argmax,
  sampleToken,
  samplingDistribution,
  type SamplingSettings,
} from "../../src/train/sampling.ts";
import { TextStream } from "../../src/train/text_stream.ts";
import { Rng } from "../../src/util/random.ts";

// Probabilities 0.1, 0.4, 0.05, 0.3, 0.15 for ids 0..4 (so by likelihood: 1, 3, 4, 0, 2), as
// logits shifted by a constant, which the softmax ignores.
const P = [0.1, 0.4, 0.05, 0.3, 0.15];
const LOGITS = P.map((p) => Math.log(p) + 3.25);

function close(got: number[], want: number[], tol = 1e-12) {
  assert.equal(got.length, want.length);
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) < tol, `${i}: ${g} vs ${want[i]}`));
}

Deno.test("temperature 1 keeps the softmax; ids come most likely first", () => {
  const d = samplingDistribution(LOGITS, { temperature: 1, topK: 0, topP: 1 });
  assert.deepEqual(d.ids, [1, 3, 4, 0, 2]);
  close(d.probs, [0.4, 0.3, 0.15, 0.1, 0.05]);
});

Deno.test("top-k 3 keeps 0.4, 0.3, 0.15 renormalized by 0.85", () => {
  const d = samplingDistribution(LOGITS, { temperature: 1, topK: 3, topP: 1 });
  assert.deepEqual(d.ids, [1, 3, 4]);
  close(d.probs, [0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85]);
});

Deno.test("top-p 0.65 keeps 0.4 and 0.3 (0.4 alone is below 0.65)", () => {
  const d = samplingDistribution(LOGITS, { temperature: 1, topK: 0, topP: 0.65 });
  assert.deepEqual(d.ids, [1, 3]);
  close(d.probs, [0.4 / 0.7, 0.3 / 0.7]);
  // A nucleus smaller than the top token still keeps that token.
  assert.deepEqual(samplingDistribution(LOGITS, { temperature: 1, topK: 0, topP: 0.01 }).ids, [1]);
});

Deno.test("temperature 2 takes square roots of the probabilities; top-k then top-p apply after", () => {
  // p^(1/2): 0.632456, 0.547723, 0.387298, 0.316228, 0.223607 (sum 2.107312).
  const roots = [0.4, 0.3, 0.15, 0.1, 0.05].map(Math.sqrt);
  const sum = roots.reduce((a, b) => a + b, 0);
  const d = samplingDistribution(LOGITS, { temperature: 2, topK: 0, topP: 1 });
  close(d.probs, roots.map((r) => r / sum));
  // Top-k 4 then top-p 0.7: the four renormalized are 0.33545, 0.29051, 0.20542, 0.16772; the
  // first two sum to 0.626 < 0.7, so three are kept.
  const k4 = roots.slice(0, 4);
  const s4 = k4.reduce((a, b) => a + b, 0);
  const d2 = samplingDistribution(LOGITS, { temperature: 2, topK: 4, topP: 0.7 });
  assert.deepEqual(d2.ids, [1, 3, 4]);
  const s3 = k4.slice(0, 3).reduce((a, b) => a + b, 0) / s4;
  close(d2.probs, k4.slice(0, 3).map((r) => r / s4 / s3));
});

Deno.test("draws follow the distribution and never leave it; a seed repeats them", () => {
  const s: SamplingSettings = { temperature: 1, topK: 3, topP: 1 };
  const want = new Map([[1, 0.4 / 0.85], [3, 0.3 / 0.85], [4, 0.15 / 0.85]]);
  const n = 20000;
  const counts = new Map<number, number>();
  const rng = new Rng(2024);
  const first: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = sampleToken(LOGITS, s, rng);
    if (i < 50) first.push(t);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  assert.deepEqual([...counts.keys()].sort(), [1, 3, 4]);
  for (const [id, p] of want) {
    // Binomial standard deviation sqrt(n p (1-p)); 5 of them is a false alarm below 1e-6.
    const sd = Math.sqrt(n * p * (1 - p));
    assert.ok(
      Math.abs(counts.get(id)! - n * p) < 5 * sd,
      `id ${id}: ${counts.get(id)} vs ${n * p}`,
    );
  }
  const again = new Rng(2024);
  assert.deepEqual(first, first.map(() => sampleToken(LOGITS, s, again)));
});

Deno.test("greedy is the first largest logit and draws nothing", () => {
  const logits = [0.5, 2, -1, 2, 1.5];
  assert.equal(argmax(logits), 1);
  const rng = new Rng(5);
  const before = rng.state;
  assert.equal(sampleToken(logits, { temperature: 0, topK: 0, topP: 1 }, rng), 1);
  assert.equal(rng.state, before);
});

/**
 * The distribution by the definition, with the whole vocabulary sorted: the independent
 * reference for the partial selection sampling.ts does.
 */
function sortedReference(logits: number[], s: SamplingSettings) {
  const ids = logits.map((_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const kept = ids.slice(0, s.topK > 0 ? Math.min(s.topK, ids.length) : ids.length);
  const w = kept.map((id) => Math.exp((logits[id] - logits[kept[0]]) / s.temperature));
  const total = w.reduce((a, b) => a + b, 0);
  let n = kept.length;
  if (s.topP < 1) {
    let cum = 0;
    n = 0;
    while (n < kept.length && cum < s.topP) cum += w[n++] / total;
    n = Math.max(1, n);
  }
  const sum = w.slice(0, n).reduce((a, b) => a + b, 0);
  return { ids: kept.slice(0, n), probs: w.slice(0, n).map((x) => x / sum) };
}

Deno.test("large vocabularies: top-k and nucleus by partial selection match a full sort", () => {
  const rng = new Rng(77);
  // 5,003 ids; logits on a coarse grid so that many tie (ties go to the smaller id), and a
  // nearly flat row whose nucleus at 0.99 holds thousands of ids (past the first batches).
  const coarse = Array.from({ length: 5003 }, () => Math.round(rng.uniform(-8, 8) * 4) / 4);
  const flat = Array.from({ length: 5003 }, () => rng.uniform(-0.05, 0.05));
  const settings: SamplingSettings[] = [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 40, topP: 1 },
    { temperature: 1.3, topK: 0, topP: 0.9 },
    { temperature: 1, topK: 0, topP: 0.05 },
    { temperature: 0.8, topK: 300, topP: 0.95 },
    { temperature: 1, topK: 1, topP: 0.5 },
    { temperature: 1, topK: 5003, topP: 0.999 },
  ];
  for (const logits of [coarse, flat]) {
    for (const s of settings) {
      const got = samplingDistribution(logits, s);
      const want = sortedReference(logits, s);
      const what = `${logits === flat ? "flat" : "coarse"} ${JSON.stringify(s)}`;
      assert.deepEqual(got.ids, want.ids, what);
      close(got.probs, want.probs, 1e-12);
    }
  }
  const wide = samplingDistribution(flat, { temperature: 1, topK: 0, topP: 0.99 });
  assert.ok(wide.ids.length > 2048, `the flat row's nucleus: ${wide.ids.length} ids`);
  assert.deepEqual(wide.ids, sortedReference(flat, { temperature: 1, topK: 0, topP: 0.99 }).ids);
});

// A detokenizer over a fixed piece table: id -> piece; "\uFFFD" marks a half-decoded character.
const PIECES = ["Hel", "lo", " wor", "ld", "!", "\n", "EN", "D", "\uFFFD"];
const decode = (ids: number[]) => ids.map((i) => PIECES[i]).join("");

Deno.test("text stream: a stop string across tokens cuts the text before it, never sent", () => {
  const s = new TextStream(decode, ["\nEND"]);
  const sent: string[] = [];
  let stopped = false;
  for (const id of [0, 1, 4, 5, 6, 7]) {
    const r = s.push(id);
    sent.push(r.text);
    stopped = r.stopped;
    if (stopped) break;
  }
  assert.ok(stopped);
  // "\n" and "EN" could begin "\nEND": held back until the stop string completes.
  assert.deepEqual(sent, ["Hel", "lo", "!", "", "", ""]);
  assert.equal(s.text, "Hello!");
});

Deno.test("text stream: held-back text comes out when it turns out not to stop", () => {
  const s = new TextStream(decode, ["\nEND"]);
  assert.equal(s.push(0).text, "Hel");
  assert.equal(s.push(5).text, "");
  assert.equal(s.push(2).text, "\n wor");
  // A half character waits for the rest of its bytes; flush hands out what is left at the end.
  assert.equal(s.push(8).text, "");
  // Once followed by more text it is final; the "\n" after it may begin the stop string.
  assert.equal(s.push(5).text, "\uFFFD");
  assert.equal(s.flush(), "\n");
  assert.equal(s.text, "Hel\n wor\uFFFD\n");
});
