/** The training ETA (src/train/eta.ts) on synthetic step times: no clock is read. */
import assert from "node:assert/strict";
import { StepTimeEstimator } from "../../src/train/eta.ts";

// Float sums of a handful of terms: 1e-12 relative is far above their rounding.
const close = (a: number, b: number) =>
  assert.ok(Math.abs(a - b) <= 1e-12 * Math.abs(b), `${a} != ${b}`);

Deno.test("the first step (pipeline compiles) is left out once a second step is known", () => {
  const eta = new StepTimeEstimator();
  assert.equal(eta.remainingSeconds(300), 0); // nothing known yet
  eta.add(40); // step 1: compiles
  close(eta.remainingSeconds(299), 40 * 299); // the only measure there is
  eta.add(0.5);
  close(eta.remainingSeconds(298), 0.5 * 298);
  for (let i = 0; i < 18; i++) eta.add(0.5);
  // Step 20 of 300: 280 steps of 0.5 s left, not 0 s and not (40 + 19 * 0.5) / 20 * 280.
  close(eta.remainingSeconds(280), 140);
  assert.equal(eta.remainingSeconds(-3), 0);
});

Deno.test("few steps in, the estimate is their plain mean (bias-corrected average)", () => {
  const eta = new StepTimeEstimator(0.9);
  eta.add(10);
  for (const s of [1, 2, 3]) eta.add(s);
  // Hand-computed: ema = 0.1 * (0.81 * 1 + 0.9 * 2 + 3) = 0.561; bias 1 - 0.9^3 = 0.271.
  close(eta.stepSeconds, 0.561 / 0.271);
  // Which is the mean weighted 0.81 : 0.9 : 1, between the plain mean 2 and the last step 3.
  assert.ok(eta.stepSeconds > 2 && eta.stepSeconds < 3);
});

Deno.test("a machine that slows down: the estimate follows the recent steps", () => {
  const eta = new StepTimeEstimator(0.9);
  eta.add(30);
  for (let i = 0; i < 50; i++) eta.add(1);
  for (let i = 0; i < 40; i++) eta.add(2);
  // After 40 steps at 2 s, the 1 s steps weigh 0.9^40 (1.5%) of the corrected average.
  const expected = (2 * (1 - 0.9 ** 40) + 1 * (0.9 ** 40 - 0.9 ** 90)) / (1 - 0.9 ** 90);
  close(eta.stepSeconds, expected);
  assert.ok(eta.stepSeconds > 1.98);
  assert.throws(() => new StepTimeEstimator(1), /decay/);
});
