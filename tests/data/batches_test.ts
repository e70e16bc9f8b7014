import assert from "node:assert/strict";
import { BatchPlan, type BatchPlanOptions, packRows, permutation } from "../../src/data/batches.ts";
import type { Example } from "../../src/data/dataset.ts";
import { IGNORE_INDEX } from "../../src/data/records.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";

/** Examples of random odd lengths; token t of example i is i * 1000 + t (so rows can be read). */
function examples(n: number, seed: number, maxLen = 23): Example[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const len = 1 + rng.int(maxLen);
    const tokens = Uint32Array.from({ length: len }, (_, t) => i * 1000 + t);
    const labels = Int32Array.from(
      { length: len },
      (_, t) => rng.next() < 0.3 ? IGNORE_INDEX : i * 1000 + t + 1,
    );
    labels[len - 1] = i * 1000 + len; // at least one target
    const labelTokens = labels.filter((l) => l !== IGNORE_INDEX).length;
    return { tokens, labels, labelTokens, line: i + 1 };
  });
}

const exampleOf = (tokens: ArrayLike<number>, at = 0) => Math.floor(tokens[at] / 1000);

function allSteps(plan: BatchPlan) {
  return [...plan.stepsFrom()];
}

Deno.test("batches: each epoch visits every example once, in micro-batches and steps", () => {
  const ex = examples(37, 1);
  const opts: BatchPlanOptions = {
    microBatchSize: 3,
    gradientAccumulationSteps: 4,
    epochs: 2,
    seed: 7,
  };
  const plan = new BatchPlan(ex, opts);
  assert.equal(plan.stepsPerEpoch, 4); // 37 rows, 12 a step: 12, 12, 12, 1
  assert.equal(plan.totalSteps, 8);
  const steps = allSteps(plan);
  assert.equal(steps.length, 8);
  steps.forEach((s, i) => {
    assert.equal(s.step, i);
    assert.equal(s.epoch, plan.epochOf(i));
    assert.equal(s.epoch, i < 4 ? 0 : 1);
  });
  for (const epoch of [0, 1]) {
    const inEpoch = steps.filter((s) => s.epoch === epoch);
    const seen = inEpoch.flatMap((s) =>
      s.microBatches.flatMap((mb) => mb.tokens.map((t) => exampleOf(t)))
    );
    assert.deepEqual([...seen].sort((a, b) => a - b), ex.map((_, i) => i));
    assert.deepEqual(inEpoch.map((s) => s.microBatches.length), [4, 4, 4, 1]);
    assert.deepEqual(inEpoch[0].microBatches.map((mb) => mb.tokens.length), [3, 3, 3, 3]);
    assert.equal(inEpoch[3].microBatches[0].tokens.length, 1);
  }
  for (const s of steps) {
    let labelTokens = 0, inputTokens = 0;
    for (const mb of s.microBatches) {
      assert.equal(mb.positions, undefined);
      assert.equal(mb.segments, undefined);
      mb.tokens.forEach((t, r) => {
        const e = ex[exampleOf(t)];
        assert.deepEqual(t, e.tokens);
        assert.deepEqual(mb.labels[r], e.labels);
        labelTokens += e.labelTokens;
        inputTokens += e.tokens.length;
      });
    }
    assert.equal(s.labelTokens, labelTokens);
    assert.equal(s.inputTokens, inputTokens);
  }
});

Deno.test("batches: shuffling is fixed by seed and epoch, and differs between epochs", () => {
  const ex = examples(41, 2);
  const opts = { microBatchSize: 2, gradientAccumulationSteps: 2, epochs: 3, seed: 11 };
  const order = (plan: BatchPlan, epoch: number) =>
    allSteps(plan).filter((s) => s.epoch === epoch)
      .flatMap((s) => s.microBatches.flatMap((mb) => mb.tokens.map((t) => exampleOf(t))));
  const a = new BatchPlan(ex, opts);
  const b = new BatchPlan(ex, opts);
  assert.deepEqual(allSteps(a), allSteps(b));
  const e0 = order(a, 0), e1 = order(a, 1), e2 = order(a, 2);
  assert.notDeepEqual(e0, e1);
  assert.notDeepEqual(e1, e2);
  assert.notDeepEqual(e0, ex.map((_, i) => i));
  assert.notDeepEqual(order(new BatchPlan(ex, { ...opts, seed: 12 }), 0), e0);
  // Without shuffling rows keep the dataset order.
  assert.deepEqual(order(new BatchPlan(ex, { ...opts, shuffle: false }), 1), ex.map((_, i) => i));
  // The permutation is a Fisher–Yates over the seeded Rng: check it against a hand-run one.
  const rng = new Rng(99);
  const p = [0, 1, 2, 3, 4];
  for (let i = 4; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  assert.deepEqual(Array.from(permutation(5, 99)), p);
});

Deno.test("batches: a cursor resumes the remaining steps exactly", () => {
  const ex = examples(29, 3);
  for (const packing of [false, true]) {
    const opts = {
      microBatchSize: 2,
      gradientAccumulationSteps: 3,
      epochs: 3,
      seed: 5,
      packing,
      maxSeqLen: 31,
    };
    const steps = allSteps(new BatchPlan(ex, opts));
    for (let k = 0; k < steps.length; k++) {
      const fresh = new BatchPlan(ex, opts); // as after a restart
      assert.deepEqual(fresh.cursorAt(k + 1), steps[k].next);
      assert.deepEqual([...fresh.stepsFrom(steps[k].next)], steps.slice(k + 1), `after step ${k}`);
    }
    const plan = new BatchPlan(ex, opts);
    assert.deepEqual([...plan.stepsFrom(plan.cursorAt(0))], steps);
    assert.throws(() => plan.stepsFrom({ epoch: 0, index: 1 }).next(), QloradError);
    assert.throws(() => plan.stepsFrom({ epoch: -1, index: 0 }).next(), QloradError);
  }
});

Deno.test("batches: maxSteps runs round the data across epochs", () => {
  const ex = examples(10, 4);
  const plan = new BatchPlan(ex, {
    microBatchSize: 2,
    gradientAccumulationSteps: 2,
    maxSteps: 8,
    epochs: 1, // ignored: max_steps wins
    seed: 3,
  });
  assert.equal(plan.stepsPerEpoch, 3);
  assert.equal(plan.totalSteps, 8);
  const steps = allSteps(plan);
  assert.deepEqual(steps.map((s) => s.epoch), [0, 0, 0, 1, 1, 1, 2, 2]);
  assert.deepEqual(steps.map((s) => plan.epochOf(s.step)), [0, 0, 0, 1, 1, 1, 2, 2]);
  assert.deepEqual(steps[7].next, { epoch: 2, index: 8 });
});

Deno.test("batches: best-fit decreasing packing by hand", () => {
  // 5 -> new row A (free 3); 4 -> new row B (free 4); 3 -> tightest fit A (free 0);
  // 3 -> B (free 1); 1 -> B (free 0).
  assert.deepEqual(packRows([5, 4, 3, 3, 1], 8), [[0, 2], [1, 3, 4]]);
  assert.deepEqual(packRows([2, 7, 2, 8], 8), [[3], [1], [0, 2]]);
  assert.throws(() => packRows([9], 8), /exceeds max_seq_len 8/);
});

Deno.test("batches: packed rows restart positions per example and give each a segment", () => {
  const ex = examples(53, 5, 19);
  const maxSeqLen = 32;
  const plan = new BatchPlan(ex, {
    microBatchSize: 3,
    gradientAccumulationSteps: 2,
    epochs: 1,
    seed: 9,
    packing: true,
    maxSeqLen,
  });
  assert.ok(plan.rows.length < ex.length);
  const seen: number[] = [];
  for (const s of allSteps(plan)) {
    let labelTokens = 0;
    for (const mb of s.microBatches) {
      assert.equal(mb.positions!.length, mb.tokens.length);
      mb.tokens.forEach((row, r) => {
        const labels = mb.labels[r], positions = mb.positions![r], segments = mb.segments![r];
        assert.ok(row.length <= maxSeqLen);
        assert.equal(labels.length, row.length);
        let at = 0;
        for (let seg = 0; at < row.length; seg++) {
          const e = ex[exampleOf(row, at)];
          seen.push(exampleOf(row, at));
          for (let t = 0; t < e.tokens.length; t++) {
            assert.equal(row[at + t], e.tokens[t]);
            assert.equal(labels[at + t], e.labels[t]); // no target crosses into the next example
            assert.equal(positions[at + t], t);
            assert.equal(segments[at + t], seg);
          }
          labelTokens += e.labelTokens;
          at += e.tokens.length;
        }
      });
    }
    assert.equal(s.labelTokens, labelTokens);
  }
  assert.deepEqual(seen.sort((a, b) => a - b), ex.map((_, i) => i));
});

Deno.test("batches: bad options are invalid arguments", () => {
  const ex = examples(4, 6);
  const base = { microBatchSize: 1, gradientAccumulationSteps: 1, seed: 1 };
  assert.throws(() => new BatchPlan([], base), QloradError);
  assert.throws(() => new BatchPlan(ex, { ...base, microBatchSize: 0 }), /micro_batch_size/);
  assert.throws(
    () => new BatchPlan(ex, { ...base, gradientAccumulationSteps: 1.5 }),
    /gradient_accumulation_steps/,
  );
  assert.throws(() => new BatchPlan(ex, { ...base, epochs: 0 }), /epochs/);
  assert.throws(() => new BatchPlan(ex, { ...base, packing: true, maxSeqLen: 2 }), /exceeds/);
});
