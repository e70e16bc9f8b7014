import assert from "node:assert/strict";
import { lrMultiplier } from "../../src/train/schedule.ts";

Deno.test("schedules follow transformers' definitions, step by step", () => {
  // warmup 4 of 20 steps: 0, .25, .5, .75 then the schedule proper.
  for (const kind of ["constant", "linear", "cosine"] as const) {
    assert.deepEqual([0, 1, 2, 3].map((s) => lrMultiplier(kind, s, 4, 20)), [0, 0.25, 0.5, 0.75]);
    assert.equal(lrMultiplier(kind, 4, 4, 20), 1);
  }
  assert.equal(lrMultiplier("constant", 19, 4, 20), 1);
  assert.equal(lrMultiplier("linear", 12, 4, 20), 0.5); // (20-12)/(20-4)
  assert.equal(lrMultiplier("linear", 20, 4, 20), 0);
  assert.ok(Math.abs(lrMultiplier("cosine", 12, 4, 20) - 0.5) < 1e-15); // halfway: cos(pi/2)
  assert.ok(Math.abs(lrMultiplier("cosine", 8, 4, 20) - (0.5 + 0.5 * Math.SQRT1_2)) < 1e-15);
  assert.equal(lrMultiplier("constant", 0, 0, 10), 1);
  assert.throws(() => lrMultiplier("bogus" as "linear", 5, 0, 10), /lr_scheduler/);
});
