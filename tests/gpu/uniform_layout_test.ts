/**
 * Kernel uniforms by name (src/gpu/uniform_layout.ts): offsets follow WGSL's uniform layout
 * (hand-computed here, and read back from a real shader on the GPU), values land in the named
 * slots whatever order the object lists them in, and a host layout that disagrees with its
 * shader's struct (a field renamed, moved, dropped, added or retyped) fails when the pipeline is
 * built, naming the field and the shader. The positional arrays this replaced could not fail any
 * of the mismatch tests: they had no names to compare.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import {
  parseWgslStruct,
  uniformLayout,
  UniformLayoutError,
} from "../../src/gpu/uniform_layout.ts";

/** The 32-bit words of a packed struct as a DataView, for reading fields by byte offset. */
function view(words: Uint32Array): DataView {
  return new DataView(words.buffer, words.byteOffset, words.byteLength);
}

/** Runs `fn` and asserts it throws UniformLayoutError whose message contains every `parts`. */
function throwsNaming(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof UniformLayoutError, `not a UniformLayoutError: ${e}`);
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  });
}

Deno.test("scalars pack at 4-byte offsets, by name, whatever order the object lists them", () => {
  const layout = uniformLayout("Params", {
    count: "u32",
    bias: "i32",
    scale: "f32",
    flag: "u32",
    _pad: "u32",
    tail: "u32",
  });
  // 6 words = 24 bytes, rounded to 32 for the uniform buffer.
  assert.equal(layout.words, 8);
  // Listed out of declaration order: the names decide the slots.
  const d = view(
    layout.pack({ tail: 4000000000, flag: true, scale: -0.15625, bias: -7, count: 3 }),
  );
  assert.equal(d.getUint32(0, true), 3);
  assert.equal(d.getInt32(4, true), -7);
  assert.equal(d.getFloat32(8, true), -0.15625); // exact in f32
  assert.equal(d.getUint32(12, true), 1);
  assert.equal(d.getUint32(16, true), 0);
  assert.equal(d.getUint32(20, true), 4000000000);
  assert.equal(d.getUint32(24, true), 0);
  assert.equal(d.getUint32(28, true), 0);
});

Deno.test("vectors align as WGSL says: vec2 to 8 bytes, vec3 and vec4 to 16", () => {
  const layout = uniformLayout("Params", {
    a: "u32", // 0
    b: "vec2f", // 8 (aligned up from 4)
    c: "u32", // 16
    d: "vec3i", // 32 (aligned up from 20), 12 bytes
    e: "f32", // 44 (fills vec3's tail)
    f: "vec4u", // 48
  });
  assert.equal(layout.words, 16); // 64 bytes
  assert.deepEqual(layout.fields.map((x) => x.offset * 4), [0, 8, 16, 32, 44, 48]);
  const d = view(layout.pack({
    a: 1,
    b: [0.5, -2],
    c: 2,
    d: [-1, 2, -3],
    e: 0.25,
    f: [5, 6, 7, 8],
  }));
  assert.equal(d.getUint32(0, true), 1);
  assert.equal(d.getUint32(4, true), 0); // the gap before b
  assert.equal(d.getFloat32(8, true), 0.5);
  assert.equal(d.getFloat32(12, true), -2);
  assert.equal(d.getUint32(16, true), 2);
  assert.deepEqual([d.getInt32(32, true), d.getInt32(36, true), d.getInt32(40, true)], [-1, 2, -3]);
  assert.equal(d.getFloat32(44, true), 0.25);
  assert.deepEqual([48, 52, 56, 60].map((o) => d.getUint32(o, true)), [5, 6, 7, 8]);
});

Deno.test("pack refuses values a field's type cannot hold, naming the field", () => {
  const layout = uniformLayout("Params", { n: "u32", k: "i32", x: "f32", v: "vec2u" });
  const ok = { n: 1, k: 1, x: 1, v: [1, 2] };
  throwsNaming(() => layout.pack({ ...ok, n: -1 }), "Params", "n", "-1");
  throwsNaming(() => layout.pack({ ...ok, n: 1.5 }), "n", "1.5");
  throwsNaming(() => layout.pack({ ...ok, n: 2 ** 32 }), "n");
  throwsNaming(() => layout.pack({ ...ok, k: 2 ** 31 }), "k");
  throwsNaming(() => layout.pack({ ...ok, v: [1] }), "v", "2 numbers");
  const missing = { n: 1, k: 1, v: [1, 2] } as unknown as typeof ok;
  throwsNaming(() => layout.pack(missing), "x", "undefined");
});

Deno.test("pack reuses one scratch array (no allocation per dispatch)", () => {
  const layout = uniformLayout("Params", { n: "u32", _pad0: "u32", _pad1: "u32", _pad2: "u32" });
  const a = layout.pack({ n: 1 });
  const b = layout.pack({ n: 2 });
  assert.equal(a, b);
  assert.equal(b[0], 2);
});

const SHADER = `
// A comment with struct Params { fake: u32 } must not be read.
struct Params {
  n: u32,
  alpha: f32, /* inline comment */
  offset: vec2<i32>,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
`;

const GOOD = {
  n: "u32",
  alpha: "f32",
  offset: "vec2i",
  groups_x: "u32",
  _pad0: "u32",
  _pad1: "u32",
  _pad2: "u32",
} as const;

Deno.test("parseWgslStruct reads the struct's fields, comments and vec spellings aside", () => {
  assert.deepEqual(parseWgslStruct(SHADER, "Params"), [
    { name: "n", type: "u32" },
    { name: "alpha", type: "f32" },
    { name: "offset", type: "vec2i" },
    { name: "groups_x", type: "u32" },
    { name: "_pad0", type: "u32" },
    { name: "_pad1", type: "u32" },
    { name: "_pad2", type: "u32" },
  ]);
  assert.equal(parseWgslStruct(SHADER, "Other"), undefined);
});

Deno.test("a matching layout passes the check", () => {
  uniformLayout("Params", GOOD).check("test.wgsl", SHADER);
});

/** GOOD with its entries rewritten by `edit`, keeping order. */
function variant(edit: (entries: Array<[string, string]>) => Array<[string, string]>) {
  return uniformLayout(
    "Params",
    Object.fromEntries(edit(Object.entries(GOOD))) as Record<string, "u32">,
  );
}

Deno.test("a misspelled field fails naming it and the struct's field there", () => {
  const l = variant((e) => e.map(([k, t]) => [k === "groups_x" ? "grups_x" : k, t]));
  throwsNaming(() => l.check("test.wgsl", SHADER), "test.wgsl", "Params", "grups_x", "groups_x");
});

Deno.test("two fields swapped fail naming the field and both positions", () => {
  const l = variant((e) => [e[1], e[0], ...e.slice(2)]);
  throwsNaming(() => l.check("test.wgsl", SHADER), "test.wgsl", "alpha", "order");
});

Deno.test("a field missing from the host layout fails naming it", () => {
  const l = variant((e) => e.filter(([k]) => k !== "alpha"));
  throwsNaming(() => l.check("test.wgsl", SHADER), "test.wgsl", "alpha", "missing");
});

Deno.test("a padding field missing at the end fails naming it", () => {
  const l = variant((e) => e.slice(0, -1));
  throwsNaming(() => l.check("test.wgsl", SHADER), "_pad2", "missing");
});

Deno.test("an extra host field fails naming it", () => {
  const l = variant((e) => [...e.slice(0, 2), ["beta", "f32"], ...e.slice(2)]);
  throwsNaming(() => l.check("test.wgsl", SHADER), "test.wgsl", "beta", "not in the struct");
  const tail = variant((e) => [...e, ["_pad3", "u32"]]);
  throwsNaming(() => tail.check("test.wgsl", SHADER), "_pad3", "not in the struct");
});

Deno.test("a field of the wrong type fails naming it and both types", () => {
  const l = variant((e) => e.map(([k, t]) => [k, k === "alpha" ? "u32" : t]));
  throwsNaming(() => l.check("test.wgsl", SHADER), "test.wgsl", "alpha", "f32", "u32");
  const v = variant((e) => e.map(([k, t]) => [k, k === "offset" ? "vec2u" : t]));
  throwsNaming(() => v.check("test.wgsl", SHADER), "offset", "vec2i", "vec2u");
});

Deno.test("a struct not padded to 16 bytes, absent, or not a uniform fails", () => {
  // n, alpha, offset (vec2, 8-aligned), groups_x, _pad0: 24 bytes (a multiple of 8, not 16).
  const short = SHADER.replace("  _pad1: u32,\n  _pad2: u32,\n", "");
  const l = variant((e) => e.slice(0, -2));
  throwsNaming(() => l.check("short.wgsl", short), "short.wgsl", "24 bytes", "_pad");
  const good = uniformLayout("Params", GOOD);
  throwsNaming(() => good.check("none.wgsl", "fn main() {}"), "none.wgsl", "no struct Params");
  throwsNaming(
    () => good.check("storage.wgsl", SHADER.replace("var<uniform>", "var<storage, read>")),
    "storage.wgsl",
    "not a uniform",
  );
});

gpuTest("a mismatched layout fails at pipeline build, naming the field and shader", async (ctx) => {
  const wrong = uniformLayout("Params", {
    count: "u32",
    groups_x: "u32", // fill.wgsl has value here
    value: "u32",
    _pad: "u32",
  });
  await assert.rejects(
    async () => await ctx.pipeline("fill.wgsl", {}, "main", wrong),
    (e) => {
      assert.ok(e instanceof UniformLayoutError);
      assert.match(
        e.message,
        /^fill\.wgsl: struct Params: field groups_x is field 2 in the shader/,
      );
      return true;
    },
  );
  const right = uniformLayout("Params", {
    count: "u32",
    value: "u32",
    groups_x: "u32",
    _pad: "u32",
  });
  await ctx.pipeline("fill.wgsl", {}, "main", right);
  assert.ok(right.hasChecked(`fill.wgsl|main|{}`));
});

gpuTest("the GPU reads each packed field where the layout put it", async (ctx) => {
  // Copies every field of the uniform into a storage buffer as raw bits: the GPU's own view of
  // the offsets, compared with the values the host packed by name.
  const code = `
struct Params {
  a: u32,
  b: vec2f,
  c: i32,
  d: vec3u,
  e: f32,
  f: vec4i,
}
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;
@compute @workgroup_size(1)
fn main() {
  out[0] = p.a;
  out[1] = bitcast<u32>(p.b.x); out[2] = bitcast<u32>(p.b.y);
  out[3] = bitcast<u32>(p.c);
  out[4] = p.d.x; out[5] = p.d.y; out[6] = p.d.z;
  out[7] = bitcast<u32>(p.e);
  out[8] = bitcast<u32>(p.f.x); out[9] = bitcast<u32>(p.f.y);
  out[10] = bitcast<u32>(p.f.z); out[11] = bitcast<u32>(p.f.w);
}`;
  const layout = uniformLayout("Params", {
    a: "u32",
    b: "vec2f",
    c: "i32",
    d: "vec3u",
    e: "f32",
    f: "vec4i",
  });
  const pipeline = await ctx.pipelineFromCode("layout probe", code, "main", layout);
  const out = ctx.createBuffer({ label: "out", category: "scratch", size: 12 * 4 });
  ctx.write(out, new Uint32Array(12).fill(0xdeadbeef));
  const values = {
    f: [-9, 8, -7, 6],
    e: 1.75,
    d: [11, 12, 13],
    c: -5,
    b: [0.5, -3.25],
    a: 4294967295,
  };
  const batch = ctx.batch("layout probe");
  batch.dispatch(pipeline, [out, ctx.uniform(layout.pack(values))], [1]);
  batch.submit();
  const got = new DataView((await ctx.readU32(out)).buffer);
  out.destroy();
  const u = (i: number) => got.getUint32(i * 4, true);
  const i32 = (i: number) => got.getInt32(i * 4, true);
  const f32 = (i: number) => got.getFloat32(i * 4, true);
  assert.equal(u(0), 4294967295);
  assert.deepEqual([f32(1), f32(2)], [0.5, -3.25]);
  assert.equal(i32(3), -5);
  assert.deepEqual([u(4), u(5), u(6)], [11, 12, 13]);
  assert.equal(f32(7), 1.75);
  assert.deepEqual([i32(8), i32(9), i32(10), i32(11)], [-9, 8, -7, 6]);
});

closeGpuAfterTests();
