import assert from "node:assert/strict";
import { dequantize4bit, quantize4bit } from "../../src/quant/blockwise.ts";
import { FP4_CODE, NF4_CODE, type QuantType } from "../../src/quant/codes.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";
import { bf16Weights } from "./helpers.ts";

function isInvalid(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof QloradError, `expected QloradError, got ${e}`);
    assert.equal(e.kind, "invalid_argument");
    assert.match(e.message, pattern);
    return true;
  };
}

/** Half the widest gap between adjacent sorted code values. */
function halfWidestGap(table: Float32Array): number {
  const v = Array.from(table).sort((a, b) => a - b);
  let g = 0;
  for (let i = 1; i < v.length; i++) g = Math.max(g, v[i] - v[i - 1]);
  return g / 2;
}

Deno.test("blocksize must be a power of two in 32..4096", () => {
  const w = new Float32Array([1, 2, 3]);
  for (const bs of [16, 48, 100, 8192, 0, -64]) {
    assert.throws(
      () => quantize4bit(w, "nf4", bs),
      isInvalid(/32, 64, 128, 256, 512, 1024, 2048, 4096/),
    );
  }
  assert.throws(
    () => quantize4bit(w, "int4" as QuantType, 64),
    isInvalid(/"int4" is not a 4-bit type/),
  );
  assert.throws(
    () => quantize4bit(new Float32Array([1, NaN]), "nf4", 64),
    isInvalid(/element 1 is NaN/),
  );
  assert.throws(
    () => quantize4bit(new Float32Array([Infinity]), "fp4", 64),
    isInvalid(/element 0/),
  );
});

Deno.test("hand-computed packing: high nibble first, odd n padded with the code of 0.0", () => {
  // absmax 1: 0.5 -> NF4 12, -1 -> 0, 0.25 -> 10 (below mid 0.292), 0 -> 7.
  let q = quantize4bit(new Float32Array([0.5, -1, 0.25, 0]), "nf4", 32);
  assert.deepEqual(Array.from(q.packed), [0xc0, 0xa7]);
  assert.deepEqual(Array.from(q.absmax), [1]);
  // FP4: 0.5 -> 0b101, -1 -> 0b1011, 0.25 -> 0b111, 0 -> 0.
  q = quantize4bit(new Float32Array([0.5, -1, 0.25, 0]), "fp4", 32);
  assert.deepEqual(Array.from(q.packed), [0x5b, 0x70]);
  // n = 3, absmax 2, scale 0.5: 1 -> 15, -0.5 -> 2 (below mid -0.46), 0.25 -> 10, pad 0.0 -> 7.
  q = quantize4bit(new Float32Array([2, -1, 0.5]), "nf4", 64);
  assert.deepEqual(Array.from(q.packed), [0xf2, 0xa7]);
  assert.deepEqual(Array.from(q.absmax), [2]);
  q = quantize4bit(new Float32Array([2, -1, 0.5]), "fp4", 64);
  // 1 -> 0b011, -0.5 -> 0b1101, 0.25 -> 0b111, pad -> 0.
  assert.deepEqual(Array.from(q.packed), [0x3d, 0x70]);
});

Deno.test("partial last block has its own absmax; all-zero blocks give code 7 / 0 and decode to 0", () => {
  const rng = new Rng(11);
  const n = 32 * 3 + 7; // blocks: zeros, random, random, partial zeros (7 values)
  const w = new Float32Array(n);
  w.set(bf16Weights(rng, 64, 0.05), 32);
  for (const quantType of ["nf4", "fp4"] as const) {
    const { packed, absmax } = quantize4bit(w, quantType, 32);
    assert.equal(absmax.length, 4);
    assert.equal(absmax[0], 0);
    assert.equal(absmax[3], 0);
    let m1 = 0;
    for (let i = 32; i < 64; i++) m1 = Math.max(m1, Math.abs(w[i]));
    assert.equal(absmax[1], m1);
    const zeroByte = quantType === "nf4" ? 0x77 : 0x00;
    for (let j = 0; j < 16; j++) assert.equal(packed[j], zeroByte, `zero block byte ${j}`);
    for (let j = 48; j < packed.length; j++) assert.equal(packed[j], zeroByte, `tail byte ${j}`);
    const back = dequantize4bit(packed, absmax, n, quantType, 32);
    for (let i = 0; i < 32; i++) assert.ok(Object.is(back[i], 0), `zero block value ${i}`);
    for (let i = 96; i < n; i++) assert.ok(Object.is(back[i], 0), `tail value ${i}`);
  }
});

Deno.test("dequantization error within half the widest code gap times absmax", () => {
  const rng = new Rng(2024);
  for (const quantType of ["nf4", "fp4"] as const) {
    const bound = halfWidestGap(quantType === "nf4" ? NF4_CODE : FP4_CODE);
    for (const blocksize of [32, 64, 128, 4096]) {
      const n = blocksize * 5 + 17; // odd, with a partial block
      const w = bf16Weights(rng, n, 0.02);
      const { packed, absmax } = quantize4bit(w, quantType, blocksize);
      assert.equal(packed.length, (n + 1) / 2);
      assert.equal(absmax.length, 6);
      const back = dequantize4bit(packed, absmax, n, quantType, blocksize);
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const m = absmax[Math.floor(i / blocksize)];
        const err = Math.abs(back[i] - w[i]);
        assert.ok(
          err <= (bound + 1e-6) * m,
          `${quantType} bs${blocksize} element ${i}: err ${err}`,
        );
        worst = Math.max(worst, err / m);
      }
      // The bound is reachable but not loose by an order of magnitude.
      assert.ok(worst > bound / 10, `${quantType} bs${blocksize}: worst ${worst}`);
    }
  }
});

Deno.test("dequantize4bit checks sizes", () => {
  const packed = new Uint8Array(3);
  const absmax = new Float32Array(1);
  assert.throws(
    () => dequantize4bit(packed, absmax, 7, "nf4", 64),
    isInvalid(/packed: 3 bytes, expected 4/),
  );
  assert.throws(
    () => dequantize4bit(new Uint8Array(4), new Float32Array(2), 7, "nf4", 64),
    isInvalid(/absmax: 2 entries, expected 1/),
  );
  assert.throws(() => dequantize4bit(packed, absmax, 6, "nf4", 96), isInvalid(/blocksize/));
});
