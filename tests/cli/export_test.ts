/**
 * `qlorad export --gguf` as a user runs it: bad flags exit 2 naming the flag; a merged F16 GGUF
 * and a GGUF LoRA are written from the NF4 fixture and read back by the tests' own GGUF reader
 * (tests/export/gguf_read.ts, written from the spec, not from src/export), their weights compared
 * with the float64 base + scaling * B * A; progress comes as plain lines every 5% off a terminal;
 * `--merge` still writes the Hugging Face folder.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCommand } from "../../src/cli/command.ts";
import { EXPORT, progressReporter } from "../../src/cli/export.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import { mergeAdapter } from "../../src/train/merge.ts";
import { loraKey, moduleShape } from "../reference/llama_f64.ts";
import { makeGgufFixture, weightsFromGguf } from "../export/gguf_fixture.ts";
import { readGguf, tensorValues } from "../export/gguf_read.ts";

/** Runs `qlorad export ARGS` in this process with its output captured. */
async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCommand(EXPORT, args, {
    print: (l) => out.push(l),
    printError: (l) => err.push(l),
  });
  return { code, out, err };
}

const GGUF = ["--gguf", "--base", "b", "--out", "o.gguf"];
const MERGE = ["--merge", "--base", "b", "--adapter", "a", "--out", "o"];

/** [arguments, the flag the message must name]; each is refused before any file is read. */
const BAD_FLAGS: Array<[string[], string]> = [
  [[...GGUF, "--type", "q5_k"], "--type"],
  [[...GGUF, "--type", "bf16"], "--type"],
  [[...GGUF, "--lora-only", "--adapter", "a", "--type", "q8_0"], "--type"],
  [[...GGUF, "--lora-only"], "--adapter"],
  [[...GGUF, "--dtype", "f16"], "--dtype"],
  [[...GGUF, "--merge", "--adapter", "a"], "--merge"],
  [[...GGUF, "--type"], "--type"],
  [[...GGUF, "--bogus"], "--bogus"],
  [["--base", "b", "--out", "o.gguf"], "--gguf"],
  [["--gguf", "--out", "o.gguf"], "--base"],
  [["--gguf", "--base", "b"], "--out"],
  [[...MERGE, "--type", "f16"], "--type"],
  [[...MERGE, "--lora-only"], "--lora-only"],
  [[...MERGE, "--dtype", "q8_0"], "--dtype"],
  [["--merge", "--base", "b", "--out", "o"], "--adapter"],
];

Deno.test("cli export: every bad flag exits 2 naming the flag, with the usage", async () => {
  for (const [args, flag] of BAD_FLAGS) {
    const r = await run(args);
    const what = args.join(" ");
    const err = r.err.join("\n");
    assert.equal(r.code, 2, `${what}: ${err}`);
    assert.ok(err.split("\n")[0].includes(flag), `${what}: should name ${flag}: ${err}`);
    assert.ok(err.includes("usage:\n  qlorad export --gguf"), what);
    assert.deepEqual(r.out, [], what);
  }
});

Deno.test("cli export: progress off a terminal is a plain line every 5% and at the end", () => {
  const lines: string[] = [];
  const p = progressReporter({ print: () => {}, printError: (l) => lines.push(l) }, false);
  // 43 tensors: 5% steps fall at tensors 3, 5, 7, 9, 11, 13, 16, 18, 20, 22, 24, 26, 28, 31,
  // 33, 35, 37, 39, 41, 43 (the first index whose floor(100 i / 43) reaches 5, 10, ..., 100).
  for (let i = 1; i <= 43; i++) p.update(`t${i}`, i, 43);
  p.done();
  const shown = lines.map((l) => Number(/^tensors +(\d+)\/43 t\d+$/.exec(l)![1]));
  assert.deepEqual(
    shown,
    [3, 5, 7, 9, 11, 13, 16, 18, 20, 22, 24, 26, 28, 31, 33, 35, 37, 39, 41, 43],
  );
  assert.match(lines.at(-1)!, /^tensors 43\/43 t43$/);
});

Deno.test("cli export: merged F16 and LoRA GGUF files hold base + adapter; --merge", async () => {
  const fx = await makeGgufFixture();
  try {
    const merged = join(fx.dir, "merged.gguf");
    const r = await run([
      "--gguf",
      "--base",
      fx.baseDir,
      "--adapter",
      fx.adapterDir,
      "--out",
      merged,
    ]);
    assert.equal(r.code, 0, r.err.join("\n"));
    const layers = fx.cfg.layers;
    assert.match(
      r.out.join("\n"),
      new RegExp(`merged into ${layers * LINEAR_MODULES.length} linear layers: \\d+ tensors, F16`),
    );
    assert.ok(r.err.length > 0 && /^tensors (\d+)\/\1 /.test(r.err.at(-1)!), r.err.join("\n"));

    const g = readGguf(await Deno.readFile(merged));
    assert.equal(g.kv.get("general.file_type"), 1, "the default type is F16 (llama_ftype 1)");
    assert.equal(g.kv.get("general.name"), "q", "the base folder's name");
    const w = weightsFromGguf(g, fx.rc);
    // F16 keeps 11 significant bits: |x16 - x| <= 2^-11 |x| for normal values, and at most
    // 2^-25 below 2^-14 (subnormals); 1e-12 covers the float64 sum's order.
    for (let l = 0; l < layers; l++) {
      for (const m of LINEAR_MODULES) {
        const want = mergedReference(fx, l, m);
        const got = w.layers[l][m]!;
        assert.equal(got.length, want.length);
        for (let i = 0; i < want.length; i++) {
          const tol = 2 ** -11 * Math.abs(want[i]) + 2 ** -25 + 1e-12;
          if (Math.abs(got[i] - want[i]) > tol) {
            assert.fail(`layer ${l} ${m}[${i}]: ${got[i]} vs ${want[i]}`);
          }
        }
      }
    }

    const lora = join(fx.dir, "adapter.gguf");
    const rl = await run([
      "--gguf",
      "--lora-only",
      "--base",
      fx.baseDir,
      "--adapter",
      fx.adapterDir,
      "--out",
      lora,
      "--type",
      "f32",
    ]);
    assert.equal(rl.code, 0, rl.err.join("\n"));
    const gl = readGguf(await Deno.readFile(lora));
    assert.equal(gl.kv.get("general.type"), "adapter");
    assert.equal(gl.kv.get("adapter.type"), "lora");
    // v_proj is not permuted (only q/k rows are, for llama.cpp's rope): F32 holds A and B exactly.
    const key = loraKey(1, "v");
    assert.deepEqual(tensorValues(gl, "blk.1.attn_v.weight.lora_a"), fx.lora.A.get(key));
    assert.deepEqual(tensorValues(gl, "blk.1.attn_v.weight.lora_b"), fx.lora.B.get(key));

    // An existing output is refused (exit 1, naming it) unless --overwrite.
    const again = await run(["--gguf", "--base", fx.baseDir, "--out", merged]);
    assert.equal(again.code, 1);
    assert.match(again.err.join("\n"), /merged\.gguf: already exists/);
    const over = await run(["--gguf", "--base", fx.baseDir, "--out", merged, "--overwrite"]);
    assert.equal(over.code, 0, over.err.join("\n"));
    assert.match(over.out.join("\n"), /wrote the base model/);

    // --merge writes the folder mergeAdapter writes, in its default dtype (bf16).
    const hf = join(fx.dir, "hf");
    const rm = await run([
      "--merge",
      "--base",
      fx.baseDir,
      "--adapter",
      fx.adapterDir,
      "--out",
      hf,
    ]);
    assert.equal(rm.code, 0, rm.err.join("\n"));
    await mergeAdapter({
      baseModelDir: fx.baseDir,
      adapterDir: fx.adapterDir,
      outputDir: join(fx.dir, "hf-direct"),
      dtype: "BF16",
      overwrite: false,
    });
    assert.deepEqual(
      await Deno.readFile(join(hf, "model.safetensors")),
      await Deno.readFile(join(fx.dir, "hf-direct", "model.safetensors")),
    );
  } finally {
    await Deno.remove(fx.dir, { recursive: true });
  }
});

/** W + scaling * B A in float64, [out, in] row-major (Hugging Face order). */
function mergedReference(
  fx: Awaited<ReturnType<typeof makeGgufFixture>>,
  layer: number,
  m: (typeof LINEAR_MODULES)[number],
): Float64Array {
  const [out, inp] = moduleShape(fx.rc, m);
  const w = Float64Array.from(fx.weights.layers[layer][m]!);
  const a = fx.lora.A.get(loraKey(layer, m))!;
  const b = fx.lora.B.get(loraKey(layer, m))!;
  const r = fx.lora.r;
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const s = fx.lora.scaling * b[o * r + k];
      for (let c = 0; c < inp; c++) w[o * inp + c] += s * a[k * inp + c];
    }
  }
  return w;
}

Deno.test("cli export: an output that is, holds or lies in an input is refused, even with --overwrite", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-export-paths-" });
  try {
    const base = join(dir, "base");
    const adapter = join(dir, "runs", "adapter");
    await Deno.mkdir(base);
    await Deno.mkdir(adapter, { recursive: true });
    await Deno.writeTextFile(join(base, "config.json"), "{}");
    await Deno.writeTextFile(join(adapter, "adapter_config.json"), "{}");
    await Deno.symlink(base, join(dir, "link-to-base"));
    const merge = (out: string) => [
      "--merge",
      "--base",
      base,
      "--adapter",
      adapter,
      "--out",
      out,
      "--overwrite",
    ];
    const cases: Array<[string[], string]> = [
      [merge(base), "--base"],
      [merge(join(base, "merged")), "--base"],
      [merge(dir), "--base"],
      [merge(join(dir, "runs")), "--adapter"],
      [merge(join(dir, "link-to-base")), "--base"],
      [["--gguf", "--base", base, "--out", join(base, "model.gguf"), "--overwrite"], "--base"],
    ];
    for (const [args, input] of cases) {
      const r = await run(args);
      const err = r.err.join("\n");
      assert.equal(r.code, 2, `${args.join(" ")}: ${err}`);
      const first = err.split("\n")[0];
      assert.ok(first.startsWith("qlorad export: --out "), err);
      assert.ok(first.includes(`must not be ${input} (an input)`), err);
    }
    // Nothing was touched.
    assert.deepEqual(
      [...Deno.readDirSync(base)].map((e) => e.name),
      ["config.json"],
    );
    assert.equal(await Deno.readTextFile(join(adapter, "adapter_config.json")), "{}");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
