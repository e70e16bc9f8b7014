import assert from "node:assert/strict";
import { join } from "node:path";
import { DTYPES, dtypeSize, numel, toFloat32 } from "../../src/io/dtype.ts";
import {
  encodeHeader,
  SafetensorsFile,
  SafetensorsWriter,
  type TensorData,
  writeSafetensors,
} from "../../src/io/safetensors.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";

const enc = new TextEncoder();

/** A safetensors file assembled by hand: u64 LE length, header text, data bytes. */
function handBuilt(
  header: string,
  data: number[] | Uint8Array,
  claimedLength?: number,
): Uint8Array {
  const h = enc.encode(header);
  const n = claimedLength ?? h.byteLength;
  const out = new Uint8Array(8 + h.byteLength + data.length);
  for (let i = 0; i < 8; i++) out[i] = Math.floor(n / 2 ** (8 * i)) & 0xff;
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "qlorad-st-" });
}

Deno.test("reader: a header built byte by byte", async () => {
  const dir = await tempDir();
  try {
    // "b" listed first in JSON but stored second in the buffer: order comes from offsets.
    const header = '{"__metadata__":{"format":"pt","note":"hand"},' +
      '"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},' +
      '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"c":{"dtype":"I8","shape":[2,1],"data_offsets":[14,16]},' +
      '"empty":{"dtype":"F16","shape":[0,4],"data_offsets":[16,16]}}   ';
    const data = [
      0x00,
      0x00,
      0x80,
      0x3f, // a[0] = 1.0f
      0x00,
      0x00,
      0x20,
      0xc1, // a[1] = -10.0f
      0x80,
      0x3f, // b[0] = bf16 1.0
      0x49,
      0x40, // b[1] = bf16 3.140625
      0x00,
      0xbf, // b[2] = bf16 -0.5
      0xff,
      0x05, // c = [-1, 5]
    ];
    const path = join(dir, "hand.safetensors");
    await Deno.writeFile(path, handBuilt(header, data));
    const f = await SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.names(), ["b", "a", "c", "empty"]);
      assert.deepEqual(f.metadata, { format: "pt", note: "hand" });
      const dataStart = 8 + enc.encode(header).byteLength;
      assert.deepEqual(f.info("a"), {
        name: "a",
        dtype: "F32",
        shape: [2],
        byteOffset: dataStart,
        byteLength: 8,
      });
      assert.deepEqual(f.info("b").byteOffset, dataStart + 8);
      assert.deepEqual([...await f.readFloat32("a")], [1, -10]);
      assert.deepEqual([...await f.readFloat32("b")], [1, 3.140625, -0.5]);
      assert.deepEqual([...await f.readBytes("c")], [0xff, 0x05]);
      assert.deepEqual([...await f.readFloat64("c")], [-1, 5]);
      assert.equal((await f.readBytes("empty")).byteLength, 0);
      await assert.rejects(f.readFloat32("c"), /tensor "c" is I8, not a float dtype/);
      assert.throws(() => f.info("zz"), (e) => e instanceof QloradError && e.kind === "not_found");
    } finally {
      f.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: exact bytes for a small file (metadata first, space padding to 8)", async () => {
  const dir = await tempDir();
  try {
    const path = join(dir, "w.safetensors");
    await writeSafetensors(path, [
      { name: "x", dtype: "F32", shape: [1], data: new Uint8Array([0, 0, 0x80, 0x3f]) },
      { name: "y", dtype: "U8", shape: [2], data: new Uint8Array([7, 9]) },
    ], { format: "pt" });
    const json = '{"__metadata__":{"format":"pt"},' +
      '"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' +
      '"y":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}';
    const padded = json + " ".repeat((8 - (json.length % 8)) % 8);
    const want = handBuilt(padded, [0, 0, 0x80, 0x3f, 7, 9]);
    assert.deepEqual(await Deno.readFile(path), want);
    assert.equal(padded.length % 8, 0);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["w.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("round trip: random odd shapes in every dtype, concurrent reads", async () => {
  const dir = await tempDir();
  const rng = new Rng(21);
  try {
    const shapes = [[3, 5], [7], [], [1, 0, 3], [2, 3, 5], [11, 1]];
    const tensors: TensorData[] = [];
    for (const dtype of DTYPES) {
      for (const shape of shapes.slice(0, 2 + rng.int(4))) {
        const data = new Uint8Array(numel(shape) * dtypeSize(dtype));
        for (let i = 0; i < data.length; i++) data[i] = 1 + rng.int(255);
        tensors.push({ name: `t.${dtype}.${shape.join("x")}`, dtype, shape, data });
      }
    }
    const path = join(dir, "all.safetensors");
    await writeSafetensors(path, tensors, { seed: "21" });
    const f = await SafetensorsFile.open(path);
    try {
      assert.deepEqual(f.names(), tensors.map((t) => t.name));
      assert.deepEqual(f.metadata, { seed: "21" });
      // Reads issued together share one handle: each must still get its own bytes.
      const got = await Promise.all(tensors.map((t) => f.readBytes(t.name)));
      tensors.forEach((t, i) => {
        assert.deepEqual(got[i], t.data, t.name);
        const info = f.info(t.name);
        assert.equal(info.dtype, t.dtype);
        assert.deepEqual(info.shape, t.shape);
      });
      for (const t of tensors.filter((t) => ["F32", "F16", "BF16", "F64"].includes(t.dtype))) {
        assert.deepEqual(await f.readFloat32(t.name), toFloat32(t.data, t.dtype));
      }
    } finally {
      f.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reader rejects corrupt files, naming the file and the fault", async (t) => {
  const dir = await tempDir();
  const good = '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}';
  const twelve = new Array(12).fill(1);
  const cases: [string, Uint8Array, RegExp][] = [
    ["short file", new Uint8Array([1, 0, 0]), /3 bytes, too short for the 8-byte header length/],
    [
      "truncated data",
      handBuilt(good, twelve.slice(0, 11)),
      /tensors end at data offset 12 \(tensor "a"\) but the file holds 11 data bytes/,
    ],
    ["extra data", handBuilt(good, [...twelve, 0]), /but the file holds 13 data bytes/],
    [
      "header length past end",
      handBuilt(good, twelve, 5000),
      /header length 5000 runs past the end of the file/,
    ],
    [
      "header over 100 MB",
      handBuilt(good, twelve, 100_000_001),
      /header length 100000001 exceeds the 100000000-byte limit/,
    ],
    ["bad JSON", handBuilt('{"a":{"dtype":"F32",', twelve), /header is not valid JSON/],
    ["not an object", handBuilt("[1,2,3]", twelve), /header is not a JSON object/],
    ["bad UTF-8", handBuilt("{}", []).map((b, i) => (i === 9 ? 0xff : b)), /not valid UTF-8/],
    [
      "unknown dtype",
      handBuilt('{"a":{"dtype":"Q9","shape":[3],"data_offsets":[0,12]}}', twelve),
      /tensor "a": unknown dtype "Q9"/,
    ],
    [
      "size mismatch",
      handBuilt('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,10]}}', twelve.slice(0, 10)),
      /tensor "a": data_offsets \[0, 10\] hold 10 bytes but F32 \[3\] needs 12/,
    ],
    [
      "overlap",
      handBuilt(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
          '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        new Array(8).fill(1),
      ),
      /tensor "b": data_offsets \[4, 8\] overlap tensor "a" at \[0, 8\]/,
    ],
    [
      "gap",
      handBuilt(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' +
          '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}',
        twelve,
      ),
      /tensor "b": data_offsets \[8, 12\] leave a gap of 4 bytes after tensor "a", which ends at 4/,
    ],
    [
      "first tensor not at 0",
      handBuilt('{"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}', [1, 2, 3]),
      /tensor "a": data_offsets \[1, 3\]: the first tensor must start at 0/,
    ],
    [
      "negative shape",
      handBuilt('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}', []),
      /tensor "a": shape must be an array of non-negative integers, got \[-1\]/,
    ],
    [
      "offsets reversed",
      handBuilt('{"a":{"dtype":"U8","shape":[0],"data_offsets":[2,0]}}', []),
      /tensor "a": data_offsets must be \[begin, end\]/,
    ],
    [
      // JSON.parse would keep the second "a" and silently drop the first.
      "tensor listed twice",
      handBuilt(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' +
          '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        new Array(8).fill(1),
      ),
      /header lists "a" twice/,
    ],
    [
      "metadata not strings",
      handBuilt('{"__metadata__":{"n":1}}', []),
      /"__metadata__" key "n": value must be a string/,
    ],
  ];
  try {
    for (const [label, bytes, pattern] of cases) {
      await t.step(label, async () => {
        const path = join(dir, `${label.replaceAll(" ", "_")}.safetensors`);
        await Deno.writeFile(path, bytes);
        await assert.rejects(SafetensorsFile.open(path), (e: unknown) => {
          assert.ok(e instanceof QloradError, String(e));
          assert.equal(e.kind, "invalid_argument");
          assert.ok(e.message.startsWith(`${path}: `), e.message);
          assert.match(e.message, pattern);
          return true;
        });
      });
    }
    await t.step("missing file", async () => {
      const path = join(dir, "nope.safetensors");
      await assert.rejects(SafetensorsFile.open(path), (e: unknown) => {
        assert.ok(e instanceof QloradError && e.kind === "not_found");
        assert.ok(e.message.includes(path));
        return true;
      });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writer: order, sizes and completeness are checked; abort leaves nothing", async () => {
  const dir = await tempDir();
  try {
    const path = join(dir, "out.safetensors");
    const entries = [
      { name: "a", dtype: "F16" as const, shape: [3] },
      { name: "b", dtype: "I32" as const, shape: [2, 2] },
    ];
    const w = await SafetensorsWriter.create(path, entries, { format: "pt" });
    assert.ok(w.tempPath.startsWith(`${path}.partial-`));
    await assert.rejects(
      w.write("b", new Uint8Array(16)),
      /"b" written out of order; expected "a"/,
    );
    await assert.rejects(w.write("a", new Uint8Array(5)), /got 5 bytes but F16 \[3\] needs 6/);
    await w.write("a", new Uint8Array(6).fill(3));
    await assert.rejects(w.finish(), /1 tensor\(s\) not written: "b"/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [w.tempPath.split("/").pop()]);
    await w.abort();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
    await assert.rejects(w.write("b", new Uint8Array(16)), /aborted/);

    await assert.rejects(
      SafetensorsWriter.create(path, [...entries, { name: "a", dtype: "U8", shape: [1] }]),
      /tensor "a": listed twice/,
    );
    // A failing writeSafetensors (bad length) leaves no file either.
    await assert.rejects(
      writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [2], data: new Uint8Array(7) }]),
      /needs 8/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);

    // The header the writer computes parses back to the same entries.
    const { prefix, dataLength } = encodeHeader(entries);
    assert.equal(dataLength, 6 + 16);
    assert.equal(prefix.byteLength % 8, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
