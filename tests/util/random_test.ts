/** The bulk uniform fill follows the same sequence as the per-value generator. */
import assert from "node:assert/strict";
import { Rng } from "../../src/util/random.ts";

Deno.test("Rng.fillUniform gives uniform()'s sequence (rounded to f32) and leaves the state after it", () => {
  const bulk = new Rng(4321);
  const one = new Rng(4321);
  const out = bulk.fillUniform(new Float32Array(1001).fill(NaN), -0.3, 0.7);
  for (let i = 0; i < out.length; i++) {
    assert.equal(out[i], Math.fround(one.uniform(-0.3, 0.7)), `element ${i}`);
  }
  assert.equal(bulk.next(), one.next());
  assert.ok(Math.min(...out) >= -0.3 && Math.max(...out) < 0.7 && new Set(out).size > 990);
});
