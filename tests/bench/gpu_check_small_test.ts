/**
 * `deno task gpu-check --small` end to end on this machine's adapter: every stage at tiny shapes,
 * each in its own child process. The JSON must hold every field the issue names, with finite,
 * positive figures (the dense f16 GEMM may instead say why there is none), generation's prefill
 * and decode speeds with the KV cache's precision and a peak that holds the cache, three passing
 * test runs, every stage ok, and the Markdown beside it. No figure is compared with a speed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const ROOT = new URL("../..", import.meta.url).pathname;

function positive(v: unknown, what: string): void {
  assert.ok(typeof v === "number" && Number.isFinite(v) && v > 0, `${what}: ${v}`);
}

Deno.test({
  name: "gpu-check --small writes every field with sane values",
  sanitizeResources: false,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "gpu-check-" });
    try {
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--v8-flags=--expose-gc",
          "scripts/gpu_check.ts",
          "--small",
          "--out",
          out,
        ],
        cwd: ROOT,
        // The CPU adapters' variants, forced: timing the kernel ladder compiles every variant of
        // every kernel, minutes on llvmpipe with a cold shader cache (the ladder has its own tests).
        env: {
          QLORAD_KERNEL_VARIANTS:
            "matmul=blocked,matmul_4bit=regblock,matmul_4bit_t=regblock,attention=row,cross_entropy=blocked",
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(r.stderr);
      const log = await Deno.readTextFile(join(out, "gpu-check.log")).catch(() => "(no log)");
      assert.equal(r.code, 0, `gpu-check failed:\n${text}\n${log.slice(-4000)}`);
      const j = JSON.parse(await Deno.readTextFile(join(out, "gpu-check.json")));

      assert.ok(!Number.isNaN(Date.parse(j.date)), `date ${j.date}`);
      assert.ok("commit" in j);
      assert.equal(j.mode, "small");
      assert.ok(typeof j.adapter === "string" && j.adapter.length > 0);
      for (const key of ["4096x4096", "14336x4096"]) {
        positive(j.nf4_gemm_tflops[key], `nf4_gemm_tflops ${key}`);
        positive(j.dense_f32_gemm_tflops[key], `dense_f32_gemm_tflops ${key}`);
        assert.ok(key in j.dense_f16_gemm_tflops, `dense_f16_gemm_tflops ${key}`);
        const f16 = j.dense_f16_gemm_tflops[key];
        if (f16 === null) assert.ok(j.dense_f16_gemm_unavailable.length > 0, "f16: no reason");
        else positive(f16, `dense_f16_gemm_tflops ${key}`);
      }
      // The 4-bit result was checked against the dense one: off by NF4 rounding, not garbage.
      for (const row of j.details.gemm) {
        assert.ok(row.nf4VsF32RelRms > 0 && row.nf4VsF32RelRms < 0.5, row.nf4VsF32RelRms);
      }
      positive(j.nf4_gemv_gbps, "nf4_gemv_gbps");
      positive(j.copy_gbps, "copy_gbps");
      positive(j.train_7b.tokens_per_second, "train_7b.tokens_per_second");
      positive(j.train_7b.peak_gib, "train_7b.peak_gib");
      assert.deepEqual(
        [j.train_7b.batch, j.train_7b.seq, j.train_7b.r],
        [j.shapes.train_7b.batch, j.shapes.train_7b.seq, 16],
      );
      // LoRA on all seven linears: A (r x in) and B (out x r) each, counted by hand from the shape.
      const s7 = j.shapes.train_7b;
      const q = s7.heads * s7.headDim, kv = s7.kvHeads * s7.headDim;
      const inPlusOut = (s7.hidden + q) * 2 + (s7.hidden + kv) * 2 +
        (s7.hidden + s7.intermediate) * 3;
      assert.equal(j.details.train_7b.loraParameters, s7.layers * s7.r * inPlusOut);
      // The peak includes the base weights and the LoRA state: more than the LoRA floats alone.
      assert.ok(j.train_7b.peak_gib * 2 ** 30 > j.details.train_7b.loraParameters * 4);
      positive(j.paged_adamw_7b.paged_to_resident, "paged_adamw_7b.paged_to_resident");
      positive(j.train_50m_tokens_per_second, "train_50m_tokens_per_second");
      // Every length trained to the end; the peak grows with the length (more activations), and
      // exceeds the base weights plus the LoRA weights, gradients and two AdamW moments.
      const lengths = j.train_8b_1l.lengths;
      assert.deepEqual(
        lengths.map((l: { seq: number }) => l.seq),
        j.shapes.train_8b_1l.lengths,
      );
      const d8 = j.details.train_8b_1l;
      for (const [i, l] of lengths.entries()) {
        positive(l.tokens_per_second, `train_8b_1l ${l.seq} tokens_per_second`);
        positive(l.peak_gib, `train_8b_1l ${l.seq} peak_gib`);
        assert.equal(l.in_flight, false);
        const c = d8.rows[i].peakByCategoryBytes;
        assert.ok(c.base_weights > 0 && c.activations > 0, JSON.stringify(c));
        assert.ok(l.peak_gib * 2 ** 30 >= c.base_weights + 4 * 4 * d8.loraParameters);
        if (i > 0) assert.ok(l.peak_gib > lengths[i - 1].peak_gib, `peaks ${l.peak_gib}`);
      }
      // Generation: every planned model measured; the KV cache's precision is the adapter's
      // (f16 where it has shader-f16); decode ms/token and tokens/s agree; the cache's bytes are
      // 2 (k, v) x layers x tokens x kvHeads x headDim x 2 or 4 bytes, and the peak holds the
      // base weights and the cache at least.
      const gens = j.generate;
      assert.deepEqual(
        gens.map((g: { model: string }) => g.model),
        j.shapes.generate.map((c: { name: string }) => c.name),
      );
      for (const [i, g] of gens.entries()) {
        const shape = j.shapes.generate[i];
        assert.deepEqual([g.prompt_tokens, g.new_tokens], [shape.prompt_tokens, shape.new_tokens]);
        assert.equal(g.kv_precision, j.gpu.capabilities.f16 ? "f16" : "f32");
        for (
          const k of ["prefill_tokens_per_second", "decode_ms_per_token", "uncached_ms_per_token"]
        ) {
          positive(g[k], `generate ${g.model} ${k}`);
        }
        positive(g.parameters, `generate ${g.model} parameters`);
        assert.ok(g.rounds >= 1, `generate rounds ${g.rounds}`);
        assert.ok(Math.abs(g.decode_tokens_per_second * g.decode_ms_per_token - 1000) < 1e-6);
        const d = j.details.generate.rows[i];
        const kvBytes = 2 * shape.layers * (shape.prompt_tokens + shape.new_tokens) *
          shape.kv_heads * shape.head_dim * (g.kv_precision === "f16" ? 2 : 4);
        assert.equal(d.kvCacheBytes, kvBytes);
        assert.ok(d.peakByCategoryBytes.base_weights > 0, JSON.stringify(d.peakByCategoryBytes));
        assert.ok(g.peak_gib * 2 ** 30 >= d.peakByCategoryBytes.base_weights + kvBytes);
      }
      assert.deepEqual(
        { runs: j.tests.runs, passed: j.tests.passed, failed: j.tests.failed },
        { runs: 3, passed: 3, failed: 0 },
      );
      assert.deepEqual(
        j.stages.map((s: { name: string; status: string }) => `${s.name} ${s.status}`),
        [
          "adapter",
          "tests-1",
          "gemm",
          "gemv",
          "train_50m",
          "train_7b",
          "train_8b_1l",
          "generate",
          "tests-2",
          "tests-3",
        ].map((n) => `${n} ok`),
      );
      assert.deepEqual(j.errors, []);
      assert.deepEqual(j.pending, []);
      positive(j.gpu.limits.maxBufferSize, "limits.maxBufferSize");
      assert.equal(typeof j.gpu.capabilities.f16, "boolean");
      assert.ok(Array.isArray(j.gpu.capabilities.subgroupMatrixConfigs));
      assert.ok(
        j.ladder.some((d: { kernel: string; variant: string }) =>
          d.kernel === "matmul_4bit" && d.variant === "regblock"
        ),
      );
      assert.equal(j.details.gemm[0].nf4.variant, "regblock");

      const md = await Deno.readTextFile(join(out, "gpu-check.md"));
      assert.match(md, /^# qlorad GPU check \(small\)/);
      assert.match(md, /\| NF4 GEMM M=\d+, W 4096x4096 +\| [\d.]+ TFLOP\/s/);
      assert.match(
        md,
        /\| Generation, tiny, prompt 24, KV f(16|32) +\| prefill [\d.]+ tok\/s; decode /,
      );
      assert.match(md, /\| Llama-3-8B shape, 1 layer, 1 x 64, r 16, ckpt +\| [\d.]+ tok\/s at /);
      // Nothing overran, and the stages' scratch files are gone.
      const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
      assert.deepEqual(names, ["gpu-check.json", "gpu-check.log", "gpu-check.md"]);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
