/**
 * llama.cpp's loss on the held-out text from the F16 merged GGUF against qlorad's own Evaluate
 * job (the GPU engine on the NF4 base + adapter) on the same text as a dataset record: both see
 * bos + text + eos and average the cross-entropy of every next token. Within the 1e-3
 * relative loss for F16 (the file rounds the merged weights to f16, llama.cpp rounds its matmul
 * inputs to f16, the engine computes in f32; tests/export/gguf_llama_cpp_test.ts derives why
 * that is far inside 1e-3).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { exportGguf } from "../../src/export/export_gguf.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { runEvaluateJob } from "../../src/train/evaluate_job.ts";
import { closeGpuAfterTests, gpu, gpuTest } from "../support/gpu.ts";
import { llamaCppUnavailable, runLlamaCpp } from "../llama_cpp/install.ts";
import { HELD_OUT_TEXT, makeGgufFixture } from "./gguf_fixture.ts";

const F16_REL_LOSS_TOL = 1e-3;

gpuTest(
  "llama.cpp on the F16 merged GGUF: loss within 1e-3 relative of qlorad's Evaluate",
  async () => {
    const why = llamaCppUnavailable();
    if (why) {
      console.log(`skipped: ${why}`);
      return;
    }
    const fx = await makeGgufFixture();
    try {
      const tok = await loadTokenizer(fx.baseDir);
      const tokens = [
        tok.bosId!,
        ...tok.encode(HELD_OUT_TEXT, { addSpecialTokens: false }),
        tok.eosId!,
      ];
      const datasetPath = join(fx.dir, "held_out.jsonl");
      await Deno.writeTextFile(datasetPath, JSON.stringify({ text: HELD_OUT_TEXT }) + "\n");
      const ev = await runEvaluateJob(gpu, {
        baseModelDir: fx.baseDir,
        adapterDir: fx.adapterDir,
        datasetPath,
        maxSeqLen: 64,
        batchSize: 1,
        samplePrompts: [],
        maxNewTokens: 0,
        labels: { baseModel: "q", dataset: "held_out.jsonl", adapter: "a" },
      }, {});
      assert.equal(
        ev.tokens,
        tokens.length - 1,
        "Evaluate scores every next token of bos+text+eos",
      );
      const path = join(fx.dir, "merged-F16.gguf");
      await exportGguf({
        baseModelDir: fx.baseDir,
        adapterDir: fx.adapterDir,
        mode: "merged",
        outputPath: path,
        type: "F16",
        overwrite: false,
      });
      const [r] = await runLlamaCpp([{ model: path, tokens }], fx.dir);
      const loss = -r.logprobs.reduce((a, b) => a + b, 0) / r.logprobs.length;
      const rel = Math.abs(loss - ev.loss) / ev.loss;
      console.log(
        `llama.cpp F16 loss ${loss.toFixed(6)}, Evaluate ${ev.loss.toFixed(6)}: rel ${
          rel.toExponential(2)
        }`,
      );
      assert.ok(rel <= F16_REL_LOSS_TOL, `${rel}`);
    } finally {
      await Deno.remove(fx.dir, { recursive: true });
    }
  },
);

closeGpuAfterTests();
