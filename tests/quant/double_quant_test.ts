import assert from "node:assert/strict";
import { signedDynamicMap } from "../../src/quant/codes.ts";
import { dequantizeAbsmax, doubleQuantize } from "../../src/quant/double_quant.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";

const f = Math.fround;

Deno.test("double quant, hand-computed: equal absmax -> codes 127, exact offset", () => {
  const dq = doubleQuantize(new Float32Array([f(0.3), f(0.3), f(0.3)]));
  assert.equal(dq.offset, f(0.3));
  assert.deepEqual(Array.from(dq.codes), [127, 127, 127]);
  assert.deepEqual(Array.from(dq.nestedAbsmax), [0]);
  assert.deepEqual(Array.from(dequantizeAbsmax(dq)), [f(0.3), f(0.3), f(0.3)]);
});

Deno.test("double quant, hand-computed: [0.5, 1.5] -> offset 1, codes [0, 255]", () => {
  const dq = doubleQuantize(new Float32Array([0.5, 1.5]));
  assert.equal(dq.offset, 1);
  assert.deepEqual(Array.from(dq.nestedAbsmax), [0.5]);
  // -1 is below map[0] = -0.99296874 -> 0; +1 is map[255].
  assert.deepEqual(Array.from(dq.codes), [0, 255]);
  const back = dequantizeAbsmax(dq);
  assert.equal(back[0], f(f(f(-0.99296874) * 0.5) + 1));
  assert.equal(back[1], 1.5);
});

Deno.test("double quant error within half the widest dynamic-map gap times nested absmax", () => {
  const rng = new Rng(7);
  const map = signedDynamicMap();
  let halfGap = 0;
  for (let i = 1; i < 256; i++) halfGap = Math.max(halfGap, (map[i] - map[i - 1]) / 2);
  for (const n of [1, 255, 256, 257, 513, 1001]) {
    const absmax = new Float32Array(n);
    for (let i = 0; i < n; i++) absmax[i] = f(0.01 + 0.2 * rng.next());
    const dq = doubleQuantize(absmax);
    assert.equal(dq.codes.length, n);
    assert.equal(dq.nestedAbsmax.length, Math.ceil(n / 256));
    let sum = 0;
    for (const v of absmax) sum += v;
    assert.equal(dq.offset, f(sum / n));
    const back = dequantizeAbsmax(dq);
    for (let i = 0; i < n; i++) {
      const nested = dq.nestedAbsmax[i >> 8];
      const err = Math.abs(back[i] - absmax[i]);
      assert.ok(err <= halfGap * nested + 1e-7, `n ${n} entry ${i}: err ${err}`);
    }
  }
});

Deno.test("double quant rejects empty and negative absmax; dequant checks sizes", () => {
  const invalid = (e: unknown) => e instanceof QloradError && e.kind === "invalid_argument";
  assert.throws(() => doubleQuantize(new Float32Array(0)), invalid);
  assert.throws(() => doubleQuantize(new Float32Array([1, -1])), /entry 1 is -1/);
  assert.throws(
    () =>
      dequantizeAbsmax({
        codes: new Uint8Array(300),
        nestedAbsmax: new Float32Array(1),
        offset: 0,
      }),
    /nested_absmax: 1 entries, expected 2/,
  );
});
