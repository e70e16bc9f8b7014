import assert from "node:assert/strict";
import {
  FP4_CODE,
  FP4_DEQUANT,
  FP4_THRESHOLDS,
  NF4_CODE,
  NF4_THRESHOLDS,
  quantizeDynamic8,
  quantizeFp4,
  quantizeNf4,
  signedDynamicMap,
} from "../../src/quant/codes.ts";
import { nextF32 } from "./helpers.ts";
import { NF4_TABLE } from "../reference/dequant_f64.ts";

const f = Math.fround;

Deno.test("NF4 table is REFERENCE §1 in float32", () => {
  assert.deepEqual(Array.from(NF4_CODE), Array.from(NF4_TABLE));
});

Deno.test("NF4 thresholds equal the float32 literals of kernels.cu dQuantizeNF4", () => {
  const literals = [
    -0.8480964004993439,
    -0.6106329262256622,
    -0.4599952697753906,
    -0.33967943489551544,
    -0.23460740596055984,
    -0.13791173323988914,
    -0.045525018125772476,
    0.03979014977812767,
    0.1202552504837513,
    0.2035212516784668,
    0.2920137718319893,
    0.3893125355243683,
    0.5016634166240692,
    0.6427869200706482,
    0.8614784181118011,
  ];
  assert.deepEqual(Array.from(NF4_THRESHOLDS), literals.map(f));
});

Deno.test("quantizeNf4: codes map to themselves, midpoints to the lower code", () => {
  for (let c = 0; c < 16; c++) assert.equal(quantizeNf4(NF4_CODE[c]), c, `code ${c}`);
  for (let k = 0; k < 15; k++) {
    const mid = NF4_THRESHOLDS[k];
    assert.equal(quantizeNf4(mid), k, `exact midpoint ${k}`);
    assert.equal(quantizeNf4(nextF32(mid, 1)), k + 1, `just above midpoint ${k}`);
    assert.equal(quantizeNf4(nextF32(mid, -1)), k, `just below midpoint ${k}`);
  }
  // Hand-computed: 0.5 lies below mid(12, 13) = 0.50166 -> 12; -0.3 above mid(3, 4) = -0.3397 -> 4.
  assert.equal(quantizeNf4(0.5), 12);
  assert.equal(quantizeNf4(f(-0.3)), 4);
  assert.equal(quantizeNf4(f(0.04)), 8); // just above mid(7, 8) = 0.0397901
  assert.equal(quantizeNf4(0), 7);
  assert.equal(quantizeNf4(-0), 7);
  assert.equal(quantizeNf4(-2), 0);
  assert.equal(quantizeNf4(2), 15);
  assert.equal(quantizeNf4(NaN), 0); // the CUDA tree's else-branches
});

Deno.test("FP4 table is [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12 with a sign bit; code 8 stored as +0", () => {
  const raw = [0, 0.0625, 8, 12, 4, 6, 2, 3];
  for (let c = 0; c < 16; c++) {
    const v = raw[c & 7] / 12;
    assert.equal(FP4_CODE[c], f(c & 8 && v !== 0 ? -v : v), `code ${c}`);
  }
  assert.ok(Object.is(FP4_CODE[8], 0), "stored quant_map has +0 at code 8");
  assert.ok(Object.is(FP4_DEQUANT[8], -0), "CUDA dequantizes code 8 to -0");
  // kernels.cu fp4_dequantization_lut literals.
  const lut = [0, 0.005208333333, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25];
  assert.deepEqual(Array.from(FP4_CODE.slice(0, 8)), lut.map(f));
});

Deno.test("quantizeFp4 follows the dQuantizeFP4 literals, not the true midpoints", () => {
  for (let c = 0; c < 16; c++) {
    if (c === 8) continue; // -0.0 carries no sign bit
    assert.equal(quantizeFp4(FP4_CODE[c]), c, `code ${c}`);
  }
  const sortedBits = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];
  for (let k = 0; k < 7; k++) {
    const t = FP4_THRESHOLDS[k];
    assert.equal(quantizeFp4(t), sortedBits[k], `on threshold ${k}`);
    assert.equal(quantizeFp4(nextF32(t, 1)), sortedBits[k + 1], `above threshold ${k}`);
    assert.equal(quantizeFp4(-t), sortedBits[k] | 8, `on -threshold ${k}`);
  }
  // 7/12 as float32 (0.58333337) is above the kernel's 0.583333 literal: 2/3, not 1/2.
  assert.equal(quantizeFp4(f(7 / 12)), 0b010);
  assert.equal(quantizeFp4(f(0.5833331)), 0b010);
  assert.equal(quantizeFp4(f(0.5833329)), 0b101);
  assert.equal(quantizeFp4(-1), 0b1011);
  assert.equal(quantizeFp4(-0), 0);
  assert.equal(quantizeFp4(f(-0.001)), 8);
  assert.equal(quantizeFp4(f(0.003)), 1);
  assert.equal(quantizeFp4(NaN), 0);
});

Deno.test("signed dynamic map: REFERENCE checks and torch-printed (FMA linspace) entries", () => {
  const map = signedDynamicMap();
  assert.equal(map.length, 256);
  for (let i = 1; i < 256; i++) assert.ok(map[i] > map[i - 1], `strictly ascending at ${i}`);
  assert.equal(map[0], f(-0.99296874));
  assert.equal(map[127], 0);
  assert.equal(map[254], f(0.99296874));
  assert.equal(map[255], 1);
  // Values torch prints for create_dynamic_map() (e.g. hard-coded in mistral.rs'
  // mistralrs-quant bitsandbytes port); each of these differs by an ulp if linspace were
  // rounded twice (start + round(step * i)) instead of fused.
  const torchPrinted: [number, number][] = [
    [18, -0.7398437261581421],
    [34, -0.5148437023162842],
    [102, -0.006343749817460775],
    [116, -0.000493750034365803],
    [128, 5.500000384017767e-07],
    [137, 0.0003812500217463821],
    [220, 0.5148437023162842],
    [236, 0.7398437261581421],
    [64, -0.09859374910593033],
    [253, 0.9789062738418579],
  ];
  for (const [i, v] of torchPrinted) assert.equal(map[i], v, `entry ${i}`);
});

Deno.test("quantizeDynamic8: nearest entry, exact midpoints to the even index", () => {
  const map = signedDynamicMap();
  for (let i = 0; i < 256; i++) assert.equal(quantizeDynamic8(map[i], map), i, `entry ${i}`);
  for (let k = 0; k < 255; k++) {
    const mid = f(map[k] + map[k + 1]) * 0.5;
    assert.equal(quantizeDynamic8(mid, map), k % 2 === 0 ? k : k + 1, `midpoint ${k}`);
    if (mid !== 0) {
      assert.equal(quantizeDynamic8(nextF32(mid, 1), map), k + 1, `above midpoint ${k}`);
      assert.equal(quantizeDynamic8(nextF32(mid, -1), map), k, `below midpoint ${k}`);
    }
  }
  assert.equal(quantizeDynamic8(-1, map), 0);
  assert.equal(quantizeDynamic8(-5, map), 0);
  assert.equal(quantizeDynamic8(f(1.0000001), map), 255);
  assert.equal(quantizeDynamic8(0, map), 127);
  assert.equal(quantizeDynamic8(NaN, map), 0);
  // Hand-computed: 0.5 lies between entries 218 (0.48671871) and 219 (0.50078124); nearer 219.
  assert.equal(map[218], f(0.48671871423721313));
  assert.equal(map[219], f(0.500781238079071));
  assert.equal(quantizeDynamic8(0.5, map), 219);
});
