/**
 * The GGUF container and the Q8_0/Q4_0 encoders against the spec, without llama.cpp: header
 * bytes written out by hand, tensor offsets aligned and data placed where the infos say, and
 * one block of each quantized type computed by hand (rounding rules included).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { GgufMetadata, GgufWriter } from "../../src/export/gguf_writer.ts";
import { encodeF16, encodeQ4_0, encodeQ8_0 } from "../../src/export/gguf_quants.ts";
import { Rng } from "../../src/util/random.ts";
import { readGguf, tensorValues } from "./gguf_read.ts";

const le32 = (x: number) => [x & 255, (x >>> 8) & 255, (x >>> 16) & 255, x >>> 24];
const le64 = (x: number) => [...le32(x), 0, 0, 0, 0];
const str = (s: string) => [...le64(s.length), ...new TextEncoder().encode(s)];

Deno.test("gguf writer: header bytes, alignment and data offsets follow the spec", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "t.gguf");
    const md = new GgufMetadata().string("general.architecture", "llama").u32("a.n", 7)
      .i32s("a.arr", [-1, 2]);
    const rng = new Rng(3);
    const w1 = Float32Array.from({ length: 3 * 5 }, () => rng.normal());
    const w2 = Float32Array.from({ length: 2 * 64 }, () => rng.normal());
    const w = await GgufWriter.create(path, md, [
      { name: "x", shape: [3, 5], type: "F32" },
      { name: "y", shape: [2, 64], type: "Q8_0" },
    ]);
    await assert.rejects(() => w.write("y", encodeQ8_0(w2)), /out of order/);
    await w.write("x", new Uint8Array(w1.buffer));
    await w.write("y", encodeQ8_0(w2));
    await w.finish();
    const bytes = await Deno.readFile(path);
    // Header: magic, version 3, 2 tensors, 3 kvs; then the first kv, byte for byte.
    const want = [
      0x47,
      0x47,
      0x55,
      0x46,
      ...le32(3),
      ...le64(2),
      ...le64(3),
      ...str("general.architecture"),
      ...le32(8),
      ...str("llama"),
      ...str("a.n"),
      ...le32(4),
      ...le32(7),
      ...str("a.arr"),
      ...le32(9),
      ...le32(5),
      ...le64(2),
      ...le32(-1 >>> 0),
      ...le32(2),
      // tensor x: name, 2 dims, ne = [5, 3] (innermost first), F32 = 0, offset 0
      ...str("x"),
      ...le32(2),
      ...le64(5),
      ...le64(3),
      ...le32(0),
      ...le64(0),
      // tensor y: ne = [64, 2], Q8_0 = 8, offset 60 rounded up to 64
      ...str("y"),
      ...le32(2),
      ...le64(64),
      ...le64(2),
      ...le32(8),
      ...le64(64),
    ];
    assert.deepEqual([...bytes.subarray(0, want.length)], want);
    const dataStart = Math.ceil(want.length / 32) * 32;
    assert.ok(bytes.subarray(want.length, dataStart).every((b) => b === 0), "header padding");
    assert.deepEqual(bytes.subarray(dataStart, dataStart + 60), new Uint8Array(w1.buffer));
    assert.ok(bytes.subarray(dataStart + 60, dataStart + 64).every((b) => b === 0));
    assert.deepEqual(bytes.subarray(dataStart + 64, dataStart + 64 + 4 * 34), encodeQ8_0(w2));
    assert.equal(bytes.byteLength % 32, 0);
    const g = readGguf(bytes);
    assert.equal(g.dataStart, dataStart);
    assert.deepEqual([...tensorValues(g, "x")], [...w1]);
    assert.equal(g.kv.get("a.n"), 7);
    // No partial file left behind, and a bad shape for the type is refused naming the tensor.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["t.gguf"]);
    await assert.rejects(
      () =>
        GgufWriter.create(join(dir, "bad.gguf"), md, [{ name: "z", shape: [3, 5], type: "Q4_0" }]),
      /"z": Q4_0 needs rows of a multiple of 32/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Q8_0: one block by hand (d = amax/127, halves away from zero)", () => {
  // amax = 127/16 so d = 1/16 exactly (f16 0x2c00) and x*id = 16x is exact.
  const q = [127, -127, 2.5, -2.5, 0.49, -0.5, 3, 0, 1.5, 100.5];
  const x = new Float32Array(32);
  for (let j = 0; j < 32; j++) x[j] = (q[j] ?? (j - 16) * 3 + 0.25) / 16;
  const want = [0x00, 0x2c, 127, -127, 3, -3, 0, -1, 3, 0, 2, 101];
  for (let j = 10; j < 32; j++) want.push((j - 16) * 3);
  const got = encodeQ8_0(x);
  assert.deepEqual([got[0], got[1]], want.slice(0, 2));
  assert.deepEqual([...new Int8Array(got.buffer, 2, 32)], want.slice(2));
  // An all-zero block has d = 0 and codes 0 (ggml's id = 0 guard).
  assert.deepEqual([...encodeQ8_0(new Float32Array(32))], new Array(34).fill(0));
});

Deno.test("Q4_0: one block by hand (d = signed max / -8, codes trunc(x/d + 8.5) <= 15)", () => {
  // Largest magnitude -4 (negative): d = 0.5 (f16 0x3800); code = trunc(2x + 8.5).
  const x = new Float32Array(32);
  const lo = [-4, 3.5, 3.75, 0.25, -0.25, 1, -3.9, 0];
  for (let j = 0; j < 32; j++) x[j] = lo[j] ?? ((j % 7) - 3) * 0.5;
  const code = (v: number) => Math.min(15, Math.trunc(2 * v + 8.5));
  const got = encodeQ4_0(x);
  assert.deepEqual([got[0], got[1]], [0x00, 0x38]);
  // Hand values of the first entries: -4 -> 0, 3.5 -> 15, 3.75 -> 16 clamped to 15,
  // 0.25 -> 9, -0.25 -> 8, 1 -> 10, -3.9 -> 0 (0.7 truncated).
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((j) => got[2 + j] & 15), [0, 15, 15, 9, 8, 10, 0]);
  for (let j = 0; j < 16; j++) {
    assert.equal(got[2 + j], code(x[j]) | (code(x[j + 16]) << 4), `byte ${j}`);
  }
  // Positive largest magnitude: d = -0.5 (f16 0xb800), so +4 -> code 0 and -4 clamps to 15.
  const y = new Float32Array(32);
  y[0] = 4;
  y[16] = -4;
  const g2 = encodeQ4_0(y);
  assert.deepEqual([g2[0], g2[1], g2[2]], [0x00, 0xb8, 0 | (15 << 4)]);
});

Deno.test("F16/Q8_0/Q4_0 round trip within each type's rounding bound", () => {
  const rng = new Rng(11);
  const x = Float32Array.from({ length: 32 * 37 }, () => rng.normal() * 0.07);
  const tensor = (type: number, data: Uint8Array) => {
    const bytes = new Uint8Array(256 + data.byteLength);
    bytes.set(data, 256);
    return tensorValues({
      tensors: new Map([["t", { name: "t", ne: [x.length], type, start: 256 }]]),
      bytes,
    } as unknown as ReturnType<typeof readGguf>, "t");
  };
  const f16 = tensor(1, encodeF16(x));
  for (let i = 0; i < x.length; i++) {
    assert.ok(Math.abs(f16[i] - x[i]) <= Math.abs(x[i]) * 2 ** -11 + 2 ** -25, `f16 ${i}`);
  }
  // Q8_0: half a step d = amax/127. Q4_0: a full step d = amax/8, since a value of the opposite
  // sign to the largest one and near its magnitude clamps to code 15 (7 steps, not 8). Plus the
  // f16 rounding of d (2^-11 relative) times the largest code magnitude (127 or 8).
  for (
    const [type, enc, steps, rounding] of [[8, encodeQ8_0, 127, 0.5], [
      2,
      encodeQ4_0,
      8,
      1,
    ]] as const
  ) {
    const back = tensor(type, enc(x));
    for (let b = 0; b < x.length / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
      const bound = (amax / steps) * (rounding + steps * 2 ** -11) * (1 + 1e-6);
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        assert.ok(Math.abs(back[i] - x[i]) <= bound, `type ${type} [${i}] ${back[i]} vs ${x[i]}`);
      }
    }
  }
});

Deno.test("gguf writer: a failed rename (the final name is a folder) leaves no .partial file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "out.gguf");
    await Deno.mkdir(join(path, "sub"), { recursive: true });
    const x = Float32Array.from({ length: 7 }, (_, i) => i - 2.5);
    const w = await GgufWriter.create(path, new GgufMetadata(), [
      { name: "x", shape: [7], type: "F32" },
    ]);
    await w.write("x", new Uint8Array(x.buffer));
    await assert.rejects(() => w.finish());
    await w.abort();
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["out.gguf"]);
    assert.ok(Deno.statSync(path).isDirectory);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
