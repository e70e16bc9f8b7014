/**
 * Byte-for-byte cross-check against tests/reference/bnb_reference.py, an independent pure-Python
 * model of bitsandbytes' 4-bit quantization and double quant.
 */
import assert from "node:assert/strict";
import {
  FP4_CODE,
  FP4_THRESHOLDS,
  NF4_CODE,
  NF4_THRESHOLDS,
  quantizeDynamic8,
  signedDynamicMap,
} from "../../src/quant/codes.ts";
import {
  type BnbTensor,
  dequantizeWeight,
  fromBnbTensors,
  pythonFloatRepr,
  quantizeWeight,
  toBnbTensors,
} from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";
import { b64, bf16Weights, fromB64, nextF32, runReference } from "./helpers.ts";

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

Deno.test("reference: tables agree (NF4, FP4, dynamic map, kernel NF4 literals)", async () => {
  const r = await runReference({ mode: "maps" });
  assert.deepEqual(fromB64(r.nf4 as string), f32Bytes(NF4_CODE));
  assert.deepEqual(fromB64(r.fp4 as string), f32Bytes(FP4_CODE));
  assert.deepEqual(fromB64(r.dynamic as string), f32Bytes(signedDynamicMap()));
  assert.deepEqual(fromB64(r.nf4_splits as string), f32Bytes(NF4_THRESHOLDS));
});

Deno.test("reference: 8-bit dynamic quantization on entries, midpoints, neighbours, random", async () => {
  const map = signedDynamicMap();
  const xs: number[] = [NaN, 0, -0, -1, 1, -1.5, 1.5];
  for (let k = 0; k < 255; k++) {
    const mid = Math.fround(map[k] + map[k + 1]) * 0.5;
    xs.push(map[k], mid, nextF32(mid, 1), nextF32(mid, -1));
  }
  const rng = new Rng(3);
  for (let i = 0; i < 4000; i++) xs.push(Math.fround(rng.uniform(-1.02, 1.02)));
  for (let i = 0; i < 1000; i++) xs.push(Math.fround(rng.uniform(-1e-3, 1e-3)));
  const values = Float32Array.from(xs);
  const r = await runReference({ mode: "dynamic8", values_b64: b64(values) });
  const ours = Uint8Array.from(values, (x) => quantizeDynamic8(x, map));
  assert.deepEqual(fromB64(r.codes as string), ours);
});

Deno.test("reference: pythonFloatRepr equals json.dumps on float32 and float64 values", async () => {
  const rng = new Rng(17);
  const xs: number[] = [];
  for (let e = -45; e <= 40; e++) {
    for (let j = 0; j < 6; j++) {
      const v = rng.uniform(1, 10) * 10 ** e * (j % 2 ? -1 : 1);
      xs.push(v, Math.fround(v));
    }
  }
  xs.push(1e16, 1e15, 123456789012345678, 0.0001, 0.00001, 2 ** -126, 2 ** -149, 1, 0.5);
  const values = Float64Array.from(xs.filter((x) => Number.isFinite(x) && x !== 0));
  const r = await runReference({ mode: "repr", values_b64: b64(values) });
  assert.deepEqual(Array.from(values, pythonFloatRepr), r.texts);
});

/** Random bf16 weights, plus an all-zero first block and a block holding the exact thresholds. */
function craftedWeights(n: number, blocksize: number, seed: number): Float32Array {
  const w = bf16Weights(new Rng(seed), n, 0.02);
  w.fill(0, 0, blocksize);
  // Block 1 has absmax 1, so its values reach the quantizer unscaled.
  const special = [1, ...NF4_THRESHOLDS, ...FP4_THRESHOLDS, ...FP4_THRESHOLDS.map((t) => -t)];
  w.set(special.slice(0, blocksize), blocksize);
  return w;
}

const SHAPES: Record<number, [number, number]> = {
  32: [77, 129], // 9933 values, 311 blocks, 2 nested blocks
  64: [61, 301], // 18361 values, 287 blocks, 2 nested blocks
  128: [33, 1001], // 33033 values, 259 blocks, 2 nested blocks
  4096: [37, 1111], // 41107 values, 11 blocks
};

for (const quantType of ["nf4", "fp4"] as const) {
  for (const doubleQuant of [false, true]) {
    for (const blocksize of [32, 64, 128, 4096]) {
      const name =
        `reference: ${quantType} dq=${doubleQuant} blocksize ${blocksize} byte-identical`;
      Deno.test(name, async () => {
        const shape = SHAPES[blocksize];
        const w = craftedWeights(shape[0] * shape[1], blocksize, blocksize + (doubleQuant ? 1 : 0));
        const q = quantizeWeight(w, shape, {
          quantType,
          blocksize,
          doubleQuant,
          dtype: "bfloat16",
        });
        const r = await runReference({
          mode: "quantize",
          weights_b64: b64(w),
          shape,
          quant_type: quantType,
          blocksize,
          double_quant: doubleQuant,
          dtype: "bfloat16",
        });
        assert.deepEqual(fromB64(r.packed as string), q.packed, "packed codes");
        if (doubleQuant) {
          assert.deepEqual(fromB64(r.absmax_codes as string), q.dq!.codes, "absmax codes");
          assert.deepEqual(
            fromB64(r.nested_absmax as string),
            f32Bytes(q.dq!.nestedAbsmax),
            "nested",
          );
          assert.equal(r.offset, q.dq!.offset, "offset");
        } else {
          assert.deepEqual(fromB64(r.absmax as string), f32Bytes(q.absmax!), "absmax");
        }
        const tensors = toBnbTensors("m.", q);
        const qsName = `m.weight.quant_state.bitsandbytes__${quantType}`;
        const qs = tensors.find((t) => t.name === qsName)!;
        assert.equal(
          new TextDecoder().decode(fromB64(r.quant_state as string)),
          new TextDecoder().decode(qs.data),
          "quant_state JSON",
        );
        assert.deepEqual(
          fromB64(r.dequantized as string),
          f32Bytes(dequantizeWeight(q)),
          "dequantized",
        );

        // The group as Python wrote it (its JSON bytes) parses back to the same weight.
        const pythonGroup = new Map<string, BnbTensor>(tensors.map((t) => [t.name, t]));
        const pyJson = fromB64(r.quant_state as string);
        pythonGroup.set(qsName, {
          name: qsName,
          dtype: "U8",
          shape: [pyJson.length],
          data: pyJson,
        });
        assert.deepStrictEqual(fromBnbTensors("m.", (n) => pythonGroup.get(n), "python"), q);
      });
    }
  }
}
