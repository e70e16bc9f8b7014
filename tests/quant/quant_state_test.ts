import assert from "node:assert/strict";
import { dequantize4bit } from "../../src/quant/blockwise.ts";
import { FP4_CODE, NF4_CODE, signedDynamicMap } from "../../src/quant/codes.ts";
import { dequantizeAbsmax } from "../../src/quant/double_quant.ts";
import {
  bitsPerParameter,
  type BnbTensor,
  dequantizeWeight,
  fromBnbTensors,
  pythonFloatRepr,
  quantizationConfig,
  quantizeWeight,
  quantStateJson,
  toBnbTensors,
} from "../../src/quant/quant_state.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";
import { bf16Weights } from "./helpers.ts";

const PREFIX = "model.layers.0.self_attn.q_proj.";

function lookup(tensors: BnbTensor[]) {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  return (name: string) => byName.get(name);
}

function sample(doubleQuant: boolean, quantType: "nf4" | "fp4" = "nf4") {
  const rng = new Rng(doubleQuant ? 5 : 6);
  const shape: [number, number] = [37, 901]; // 33337 values: odd, 521 blocks of 64, 3 nested blocks
  const w = bf16Weights(rng, shape[0] * shape[1], 0.03);
  return quantizeWeight(w, shape, { quantType, blocksize: 64, doubleQuant, dtype: "bfloat16" });
}

Deno.test("toBnbTensors: keys, dtypes and shapes of REFERENCE §5", () => {
  const plain = toBnbTensors(PREFIX, sample(false));
  assert.deepEqual(
    plain.map((t) => [t.name.slice(PREFIX.length), t.dtype, t.shape]),
    [
      ["weight", "U8", [16669, 1]],
      ["weight.absmax", "F32", [521]],
      ["weight.quant_map", "F32", [16]],
      ["weight.quant_state.bitsandbytes__nf4", "U8", [plain[3].data.length]],
    ],
  );
  const nested = toBnbTensors(PREFIX, sample(true, "fp4"));
  assert.deepEqual(
    nested.map((t) => [t.name.slice(PREFIX.length), t.dtype, t.shape]),
    [
      ["weight", "U8", [16669, 1]],
      ["weight.absmax", "U8", [521]],
      ["weight.quant_map", "F32", [16]],
      ["weight.nested_absmax", "F32", [3]],
      ["weight.nested_quant_map", "F32", [256]],
      ["weight.quant_state.bitsandbytes__fp4", "U8", [nested[5].data.length]],
    ],
  );
  for (const t of [...plain, ...nested]) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    assert.equal(t.data.length, count * (t.dtype === "F32" ? 4 : 1), t.name);
  }
  const map = new Float32Array(nested[4].data.slice().buffer);
  assert.deepEqual(map, signedDynamicMap());
  assert.deepEqual(new Float32Array(nested[2].data.slice().buffer), FP4_CODE);
  assert.deepEqual(new Float32Array(plain[2].data.slice().buffer), NF4_CODE);
});

Deno.test("quant_state JSON: Python json.dumps text, keys in as_dict order", () => {
  const q = sample(false);
  assert.equal(
    quantStateJson(q),
    '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [37, 901]}',
  );
  const dq = { ...sample(true), dq: { ...sample(true).dq!, offset: Math.fround(0.1) } };
  assert.equal(
    quantStateJson(dq),
    '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [37, 901], ' +
      '"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.10000000149011612}',
  );
});

Deno.test("pythonFloatRepr matches Python repr on hand cases", () => {
  const cases: [number, string][] = [
    [0.1, "0.1"],
    [1, "1.0"],
    [-2.5, "-2.5"],
    [100, "100.0"],
    [0.0001, "0.0001"],
    [-0.00012, "-0.00012"],
    [1e-5, "1e-05"],
    [1.5e-7, "1.5e-07"],
    [1234567890123456, "1234567890123456.0"],
    [1e16, "1e+16"],
    [1.2345678901234568e17, "1.2345678901234568e+17"],
    [1e22, "1e+22"],
    [5e-324, "5e-324"],
    [0, "0.0"],
    [-0, "-0.0"],
    [Math.fround(0.1), "0.10000000149011612"],
    [Math.fround(3.0517578125e-5), "3.0517578125e-05"],
  ];
  for (const [x, text] of cases) assert.equal(pythonFloatRepr(x), text, String(x));
});

Deno.test("fromBnbTensors(toBnbTensors(q)) round-trips, and dequantizeWeight agrees", () => {
  for (const doubleQuant of [false, true]) {
    for (const quantType of ["nf4", "fp4"] as const) {
      const q = sample(doubleQuant, quantType);
      const back = fromBnbTensors(PREFIX, lookup(toBnbTensors(PREFIX, q)), "test.safetensors");
      assert.deepStrictEqual(back, q);
      const absmax = doubleQuant ? dequantizeAbsmax(q.dq!) : q.absmax!;
      assert.deepStrictEqual(
        dequantizeWeight(back),
        dequantize4bit(q.packed, absmax, 37 * 901, quantType, 64),
      );
    }
  }
});

function corrupt(
  doubleQuant: boolean,
  edit: (byName: Map<string, BnbTensor>) => void,
  pattern: RegExp,
) {
  const byName = new Map(toBnbTensors(PREFIX, sample(doubleQuant)).map((t) => [t.name, t]));
  edit(byName);
  assert.throws(
    () => fromBnbTensors(PREFIX, (n) => byName.get(n), "shard-00001.safetensors"),
    (e: unknown) => {
      assert.ok(e instanceof QloradError && e.kind === "invalid_argument", String(e));
      assert.match(e.message, /^shard-00001\.safetensors: /);
      assert.match(e.message, pattern);
      return true;
    },
  );
}

const W = `${PREFIX}weight`;
const QS = `${W}.quant_state.bitsandbytes__nf4`;
const setJson = (m: Map<string, BnbTensor>, text: string) => {
  const data = new TextEncoder().encode(text);
  m.set(QS, { name: QS, dtype: "U8", shape: [data.length], data });
};

Deno.test("corrupt groups are rejected naming the tensor and field", () => {
  const esc = (s: string) => s.replace(/[.]/g, "\\.");
  corrupt(false, (m) => m.delete(`${W}.absmax`), new RegExp(`"${esc(W)}\\.absmax" is missing`));
  corrupt(true, (m) => m.delete(`${W}.absmax`), new RegExp(`"${esc(W)}\\.absmax" is missing`));
  corrupt(
    true,
    (m) => m.delete(`${W}.nested_absmax`),
    new RegExp(`"${esc(W)}\\.nested_absmax" is missing`),
  );
  corrupt(false, (m) => m.delete(QS), /quant_state\.bitsandbytes__nf4" \(or .*__fp4"\) is missing/);
  corrupt(
    false,
    (m) => {
      const t = m.get(W)!;
      m.set(W, { ...t, shape: [t.shape[0] - 1, 1], data: t.data.slice(1) });
    },
    new RegExp(`"${esc(W)}": shape: expected \\[16669,1\\], got \\[16668,1\\]`),
  );
  corrupt(
    false,
    (m) => {
      const t = m.get(`${W}.absmax`)!;
      m.set(`${W}.absmax`, { ...t, dtype: "F16" });
    },
    /weight\.absmax": dtype: expected F32, got F16/,
  );
  corrupt(
    false,
    (m) => setJson(m, '{"quant_type": "nf4", "blocksize": 64,'),
    /bitsandbytes__nf4": json: bad JSON/,
  );
  corrupt(false, (m) => setJson(m, "[1, 2]"), /bitsandbytes__nf4": json: bad JSON/);
  corrupt(
    false,
    (m) =>
      setJson(
        m,
        '{"quant_type": "int4", "blocksize": 64, "dtype": "bfloat16", "shape": [37, 901]}',
      ),
    /bitsandbytes__nf4": quant_type: "int4" is not "nf4" or "fp4"/,
  );
  corrupt(
    false,
    (m) =>
      setJson(m, '{"quant_type": "nf4", "blocksize": 48, "dtype": "bfloat16", "shape": [37, 901]}'),
    /bitsandbytes__nf4": blocksize: .*48 is not allowed/,
  );
  corrupt(
    false,
    (m) =>
      setJson(m, '{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [37, 901]}'),
    /bitsandbytes__nf4": dtype: "int8"/,
  );
  corrupt(
    false,
    (m) => setJson(m, '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [37]}'),
    /bitsandbytes__nf4": shape: expected \[out, in\]/,
  );
  corrupt(
    false,
    (m) =>
      setJson(
        m,
        '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [37, 901], "x": 1}',
      ),
    /bitsandbytes__nf4": x: unknown quant_state field/,
  );
  corrupt(
    true,
    (m) =>
      setJson(
        m,
        '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [37, 901], ' +
          '"nested_blocksize": 256, "nested_dtype": "float32"}',
      ),
    /bitsandbytes__nf4": nested_offset: undefined is not a finite number/,
  );
  corrupt(
    false,
    (m) => {
      const t = m.get(`${W}.quant_map`)!;
      const data = t.data.slice();
      data[4 * 3] ^= 1;
      m.set(`${W}.quant_map`, { ...t, data });
    },
    /weight\.quant_map": \[3\]: .* differs from the nf4 table/,
  );
  corrupt(
    false,
    (m) => {
      const t = m.get(QS)!;
      m.set(`${W}.quant_state.bitsandbytes__fp4`, {
        ...t,
        name: `${W}.quant_state.bitsandbytes__fp4`,
      });
    },
    /both ".*__nf4" and ".*__fp4" are present/,
  );
});

Deno.test("quantizeWeight validates its arguments", () => {
  const w = new Float32Array(6);
  const opts = { quantType: "nf4" as const, blocksize: 64, doubleQuant: false, dtype: "bfloat16" };
  assert.throws(() => quantizeWeight(w, [2, 4], opts), /6 values do not match shape \[2, 4\]/);
  assert.throws(() => quantizeWeight(w, [2, 3], { ...opts, dtype: "int8" }), /dtype: "int8"/);
  assert.throws(() => quantizeWeight(w, [2, 3], { ...opts, blocksize: 65 }), /blocksize: 65/);
  assert.throws(() => quantizeWeight(w, [0, 6] as [number, number], opts), /shape/);
});

Deno.test("bits per parameter: NF4+DQ bs64 = 4.127, without DQ = 4.5 (4096x1024)", () => {
  const rng = new Rng(99);
  const shape: [number, number] = [4096, 1024];
  const w = bf16Weights(rng, shape[0] * shape[1], 0.02);
  const opts = { quantType: "nf4" as const, blocksize: 64, dtype: "bfloat16" };
  const withDq = bitsPerParameter(quantizeWeight(w, shape, { ...opts, doubleQuant: true }));
  const without = bitsPerParameter(quantizeWeight(w, shape, { ...opts, doubleQuant: false }));
  assert.ok(Math.abs(withDq - 4.127) < 0.01, `with DQ: ${withDq}`);
  assert.equal(without, 4.5);
  assert.ok(Math.abs(without - withDq - 0.373) < 0.001, "saves 0.373 bits/param");
});

Deno.test("quantizationConfig: transformers BitsAndBytesConfig.to_dict keys, sorted", () => {
  const c = quantizationConfig({ quantType: "nf4", doubleQuant: true, computeDtype: "bfloat16" });
  assert.deepEqual(Object.keys(c), [...Object.keys(c)].sort());
  assert.equal(c.quant_method, "bitsandbytes");
  assert.equal(c.load_in_4bit, true);
  assert.equal(c.load_in_8bit, false);
  assert.equal(c.bnb_4bit_quant_type, "nf4");
  assert.equal(c.bnb_4bit_use_double_quant, true);
  assert.equal(c.bnb_4bit_compute_dtype, "bfloat16");
  assert.equal(c.bnb_4bit_quant_storage, "uint8");
  assert.ok(!("llm_int8_threshold" in c), "left to its 6.0 default (an int 6 is rejected)");
  assert.throws(
    () => quantizationConfig({ quantType: "nf4", doubleQuant: false, computeDtype: "int8" }),
    /computeDtype/,
  );
});
