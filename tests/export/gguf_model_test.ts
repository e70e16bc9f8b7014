/**
 * The GGUF model and LoRA exports read back without llama.cpp: an F32 merged export holds exactly
 * fround(dequant(W4) + scaling·B·A) (computed here in float64) under llama.cpp's names, with the
 * q/k rows in llama.cpp's RoPE order; the hyperparameter and tokenizer metadata; the F16 fallback
 * of rows that do not fill Q8_0 blocks; the LoRA file's shapes, alpha and permuted B rows; an
 * existing output refused and a cancelled export leaving nothing behind.
 */
import { CancelledError } from "../../src/util/errors.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { exportGguf } from "../../src/export/export_gguf.ts";
import { permuteQkRows } from "../../src/export/gguf_arch.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import { loraKey, moduleShape } from "../reference/llama_f64.ts";
import { type GgufFixture, makeGgufFixture, unpermuteQk } from "./gguf_fixture.ts";
import { readGguf, tensorValues } from "./gguf_read.ts";

const GGUF_LINEAR = {
  q: "attn_q",
  k: "attn_k",
  v: "attn_v",
  o: "attn_output",
  gate: "ffn_gate",
  up: "ffn_up",
  down: "ffn_down",
} as const;

let fixture: GgufFixture | undefined;
async function fx(): Promise<GgufFixture> {
  fixture ??= await makeGgufFixture();
  return fixture;
}

Deno.test("q/k permutation interleaves the two halves of each head (hand example)", () => {
  // 2 heads of headDim 4, one column: rows (h, 0..3) -> (h, 0, 2, 1, 3).
  const w = Float64Array.from([10, 11, 12, 13, 20, 21, 22, 23]);
  assert.deepEqual([...permuteQkRows(w, 2, 4, 1)], [10, 12, 11, 13, 20, 22, 21, 23]);
});

Deno.test("F32 merged GGUF: every tensor and the metadata, read back", async () => {
  const f = await fx();
  const path = join(f.dir, "merged-f32.gguf");
  const seen: string[] = [];
  const r = await exportGguf({
    baseModelDir: f.baseDir,
    adapterDir: f.adapterDir,
    mode: "merged",
    outputPath: path,
    type: "F32",
    overwrite: false,
    onProgress: (name, i, total) => seen.push(`${i}/${total} ${name}`),
  });
  assert.equal(r.merged, 7 * f.cfg.layers);
  assert.equal(seen.length, r.tensors);
  const g = readGguf(await Deno.readFile(path));
  assert.equal(g.version, 3);
  const kv = (k: string) => g.kv.get(k);
  assert.equal(kv("general.architecture"), "llama");
  assert.equal(kv("general.file_type"), 0);
  assert.equal(kv("llama.embedding_length"), 96);
  assert.equal(kv("llama.feed_forward_length"), 160);
  assert.equal(kv("llama.block_count"), 2);
  assert.equal(kv("llama.attention.head_count"), 4);
  assert.equal(kv("llama.attention.head_count_kv"), 2);
  assert.equal(kv("llama.rope.dimension_count"), 24);
  assert.equal(kv("llama.rope.freq_base"), 10000);
  assert.equal(kv("llama.attention.layer_norm_rms_epsilon"), Math.fround(1e-5));
  assert.equal(g.kvTypes.get("llama.rope.freq_base"), 6, "FLOAT32");
  // Tokenizer: the tokenizer.json vocabulary in id order, merges, special ids, template.
  const tj = JSON.parse(await Deno.readTextFile(join(f.baseDir, "tokenizer.json")));
  const tc = JSON.parse(await Deno.readTextFile(join(f.baseDir, "tokenizer_config.json")));
  const tokens = kv("tokenizer.ggml.tokens") as string[];
  assert.equal(tokens.length, f.cfg.vocab);
  for (const [text, id] of Object.entries(tj.model.vocab)) assert.equal(tokens[id as number], text);
  for (const a of tj.added_tokens) assert.equal(tokens[a.id], a.content);
  const types = kv("tokenizer.ggml.token_type") as number[];
  assert.equal(types[tj.added_tokens[0].id], 3, "special tokens are CONTROL");
  assert.equal(types[100], 1);
  assert.deepEqual(kv("tokenizer.ggml.merges"), tj.model.merges);
  assert.equal(kv("tokenizer.ggml.model"), "gpt2");
  assert.equal(kv("tokenizer.ggml.pre"), "gpt-2");
  assert.equal(tokens[kv("tokenizer.ggml.bos_token_id") as number], tc.bos_token);
  assert.equal(tokens[kv("tokenizer.ggml.eos_token_id") as number], tc.eos_token);
  assert.equal(kv("tokenizer.ggml.add_bos_token"), true);
  assert.equal(kv("tokenizer.chat_template"), tc.chat_template);
  // Tensors: dims innermost first, data 32-aligned, values exact.
  for (const t of g.tensors.values()) assert.equal((t.start - g.dataStart) % 32, 0, t.name);
  assert.deepEqual(g.tensors.get("token_embd.weight")!.ne, [96, f.cfg.vocab]);
  assert.deepEqual(g.tensors.get("blk.0.ffn_down.weight")!.ne, [160, 96]);
  assert.deepEqual(
    [...tensorValues(g, "token_embd.weight")],
    [...f.weights.embed].map(Math.fround),
  );
  assert.deepEqual([...tensorValues(g, "output.weight")], [...f.weights.lmHead!]);
  assert.deepEqual([...tensorValues(g, "output_norm.weight")], [...f.weights.norm]);
  assert.deepEqual([...tensorValues(g, "blk.1.ffn_norm.weight")], [
    ...f.weights.layers[1].postNorm,
  ]);
  for (let l = 0; l < f.cfg.layers; l++) {
    for (const m of LINEAR_MODULES) {
      const name = `blk.${l}.${GGUF_LINEAR[m]}.weight`;
      let got = tensorValues(g, name);
      if (m === "q") got = unpermuteQk(got, 4, 24);
      if (m === "k") got = unpermuteQk(got, 2, 24);
      const [rows, cols] = moduleShape(f.rc, m);
      const base = f.weights.layers[l][m];
      const a = f.lora.A.get(loraKey(l, m))!;
      const b = f.lora.B.get(loraKey(l, m))!;
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          let dot = 0;
          for (let k = 0; k < f.lora.r; k++) dot += b[i * f.lora.r + k] * a[k * cols + j];
          const want = Math.fround(base[i * cols + j] + f.lora.scaling * dot);
          if (got[i * cols + j] !== want) {
            assert.fail(`${name}[${i},${j}] ${got[i * cols + j]} != ${want}`);
          }
        }
      }
    }
  }
});

Deno.test("LoRA GGUF: adapter metadata, lora_a/lora_b shapes, alpha = scaling·r, q/k B rows permuted", async () => {
  const f = await fx();
  const path = join(f.dir, "adapter.gguf");
  const r = await exportGguf({
    baseModelDir: f.baseDir,
    adapterDir: f.adapterDir,
    mode: "lora",
    outputPath: path,
    type: "F32",
    overwrite: false,
  });
  const g = readGguf(await Deno.readFile(path));
  assert.equal(g.kv.get("general.type"), "adapter");
  assert.equal(g.kv.get("general.architecture"), "llama");
  assert.equal(g.kv.get("adapter.type"), "lora");
  assert.equal(g.kvTypes.get("adapter.lora.alpha"), 6, "FLOAT32, as llama.cpp reads it");
  // rsLoRA r = 4, alpha = 8: scaling 8/sqrt(4) = 4, so llama.cpp's alpha/r must be 4: alpha 16.
  assert.equal(g.kv.get("adapter.lora.alpha"), 16);
  assert.equal(r.loraAlpha, 16);
  assert.equal(g.tensors.size, 2 * 7 * f.cfg.layers);
  const a = g.tensors.get("blk.1.ffn_down.weight.lora_a")!;
  const b = g.tensors.get("blk.1.ffn_down.weight.lora_b")!;
  assert.deepEqual(a.ne, [160, 4], "ne[0] = the base's ne[0] (in), ne[1] = r");
  assert.deepEqual(b.ne, [4, 96], "ne[0] = r, ne[1] = the base's ne[1] (out)");
  assert.deepEqual(
    [...tensorValues(g, "blk.1.ffn_down.weight.lora_b")],
    [...f.lora.B.get("1.down")!].map(Math.fround),
  );
  assert.deepEqual(
    [...tensorValues(g, "blk.0.attn_q.weight.lora_a")],
    [...f.lora.A.get("0.q")!].map(Math.fround),
  );
  const bq = unpermuteQk(tensorValues(g, "blk.0.attn_k.weight.lora_b"), 2, 24);
  assert.deepEqual([...bq], [...f.lora.B.get("0.k")!].map(Math.fround));
});

Deno.test("Q8_0 export: rows that do not fill 32-value blocks fall back to F16; 1-D stays F32", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The default fixture: hidden 80, intermediate 216, neither a multiple of 32.
    await makeTinyLlama(join(dir, "m"), { hidden: 64, intermediate: 216, heads: 4, kvHeads: 2 });
    const path = join(dir, "m.gguf");
    const r = await exportGguf({
      baseModelDir: join(dir, "m"),
      mode: "merged",
      outputPath: path,
      type: "Q8_0",
      overwrite: false,
    });
    const g = readGguf(await Deno.readFile(path));
    const type = (n: string) => g.tensors.get(n)!.type;
    assert.equal(type("blk.0.ffn_down.weight"), 1, "rows of 216: F16");
    assert.equal(type("blk.0.ffn_up.weight"), 8, "rows of 64: Q8_0");
    assert.equal(type("blk.0.attn_norm.weight"), 0);
    assert.deepEqual(r.fallbacks, ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"]);
    assert.equal(g.kv.get("general.file_type"), 7);
    await assert.rejects(
      () =>
        exportGguf({
          baseModelDir: join(dir, "m"),
          mode: "merged",
          outputPath: path,
          type: "F16",
          overwrite: false,
        }),
      /already exists/,
    );
    await assert.rejects(
      () =>
        exportGguf({
          baseModelDir: join(dir, "m"),
          mode: "lora",
          outputPath: join(dir, "l.gguf"),
          type: "F16",
          overwrite: false,
        }),
      /adapterDir/,
    );
    await assert.rejects(
      () =>
        exportGguf({
          baseModelDir: join(dir, "m"),
          adapterDir: join(dir, "m"),
          mode: "lora",
          outputPath: join(dir, "l.gguf"),
          type: "Q4_0",
          overwrite: false,
        }),
      /type: a LoRA GGUF is F32 or F16/,
    );
    const ctrl = new AbortController();
    await assert.rejects(() =>
      exportGguf({
        baseModelDir: join(dir, "m"),
        mode: "merged",
        outputPath: join(dir, "c.gguf"),
        type: "F16",
        overwrite: false,
        signal: ctrl.signal,
        onProgress: (_n, i) => i === 3 && ctrl.abort(),
      }), CancelledError);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["m", "m.gguf"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cleanup: GGUF fixture", async () => {
  if (fixture) await Deno.remove(fixture.dir, { recursive: true });
});
