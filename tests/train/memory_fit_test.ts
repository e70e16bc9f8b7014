/**
 * Memory known before a job starts: buffers sized from the data's real lengths, and jobs that
 * cannot fit refused up front, naming the setting, before anything reaches the GPU.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { closeGpuAfterTests, gpu, gpuTest } from "../support/gpu.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { runTrainJob } from "../../src/train/train_job.ts";
import { runEvaluateJob } from "../../src/train/evaluate_job.ts";
import {
  activationSeqLen,
  checkMemoryFits,
  deviceActivationPrecision,
} from "../../src/train/memory_fit.ts";
import type { MemoryEstimate } from "../../src/train/estimate.ts";
import { QloradError } from "../../src/util/errors.ts";
import { trainOptions } from "./train_options.ts";

const names = {
  microBatchSize: "hyperparameters.micro_batch_size",
  maxSeqLen: "hyperparameters.max_seq_len",
  gradientCheckpointing: "hyperparameters.gradient_checkpointing",
  budget: "GPU memory budget",
};

function estimateOf(details: Array<[MemoryEstimate["details"][0]["category"], string, number]>) {
  const bytes = {
    base_weights: 0,
    lora: 0,
    gradients: 0,
    optimizer: 0,
    activations: 0,
    scratch: 0,
  } as MemoryEstimate["bytes"];
  for (const [c, , b] of details) bytes[c] += b;
  return {
    bytes,
    total: Object.values(bytes).reduce((a, b) => a + b, 0),
    details: details.map(([category, name, each]) => ({
      category,
      name,
      count: 1,
      each,
      bytes: each,
    })),
    baseParameters: 0,
    quantizedParameters: 0,
    loraParameters: 0,
    optimizerPaged: false,
  } satisfies MemoryEstimate;
}

function rejectsWith(fn: () => void, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof QloradError, String(e));
    assert.equal(e.kind, "resource_exhausted");
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" lacks "${p}"`);
    return true;
  });
}

Deno.test("activationSeqLen: the longest example, capped by max_seq_len; packing fills rows", () => {
  assert.equal(activationSeqLen([17, 5, 33, 2], 64), 33);
  assert.equal(activationSeqLen([17, 90], 64), 64);
  assert.equal(activationSeqLen([17, 5], 64, true), 64);
  assert.equal(activationSeqLen([], 64), 1);
});

Deno.test("checkMemoryFits: a growing buffer over the binding limit names the sizing settings", () => {
  const est = estimateOf([["base_weights", "q_proj", 1000], ["activations", "layer inputs", 5000]]);
  const shape = { batch: 4, seq: 777, gradientCheckpointing: false };
  const limits = { maxBufferSize: 10_000, maxStorageBufferBindingSize: 4999 };
  rejectsWith(
    () => checkMemoryFits(est, { limits, names, shape }),
    '"layer inputs"',
    "5000 bytes",
    "maxStorageBufferBindingSize of 4999",
    "hyperparameters.max_seq_len (777)",
    "hyperparameters.micro_batch_size (4)",
    "hyperparameters.gradient_checkpointing",
  );
  // One byte more of binding room and it fits.
  checkMemoryFits(est, { limits: { ...limits, maxStorageBufferBindingSize: 5000 }, names, shape });
  // A frozen buffer over the limit says the model is too large for the adapter.
  const table = estimateOf([["base_weights", "q_proj", 7000]]);
  rejectsWith(() => checkMemoryFits(table, { limits, names, shape }), "too large");
});

Deno.test("checkMemoryFits: over the budget says which part grows and what to lower", () => {
  const GiB = 1024 ** 3;
  const est = estimateOf([["base_weights", "w", 3 * GiB], ["activations", "a", 2 * GiB]]);
  const shape = { batch: 2, seq: 4096, gradientCheckpointing: true };
  const limits = { maxBufferSize: 8 * GiB, maxStorageBufferBindingSize: 8 * GiB };
  rejectsWith(
    () => checkMemoryFits(est, { limits, names, shape, budgetBytes: 4.5 * GiB }),
    "5.00 GiB",
    "GPU memory budget of 4.50 GiB",
    "2.00 GiB",
    "hyperparameters.max_seq_len (4096)",
  );
  rejectsWith(
    () => checkMemoryFits(est, { limits, names, shape, budgetBytes: 2 * GiB }),
    "the frozen base alone needs 3.00 GiB",
  );
  checkMemoryFits(est, { limits, names, shape, budgetBytes: 5 * GiB });
  checkMemoryFits(est, { limits, names, shape, budgetBytes: 0 });
});

Deno.test("the estimate checked against a device assumes the checkpoints its engine takes", () => {
  // TrainingEngine's default "auto": f16 checkpoints with shader-f16 under checkpointing only.
  assert.equal(deviceActivationPrecision({ f16: true }, true), "f16");
  assert.equal(deviceActivationPrecision({ f16: false }, true), "f32");
  assert.equal(deviceActivationPrecision({ f16: true }, false), "f32");
  assert.equal(deviceActivationPrecision({ f16: false }, false), "f32");
});

let fixtureDir: string | undefined;
async function fixture(): Promise<string> {
  if (!fixtureDir) {
    fixtureDir = await Deno.makeTempDir({ prefix: "qlorad-fit-" });
    await makeTinyLlama(join(fixtureDir, "model"));
  }
  return fixtureDir;
}

gpuTest(
  "a Train job over its GPU memory budget is refused before the model is loaded",
  async (ctx) => {
    const dir = await fixture();
    const before = ctx.memory.total;
    await assert.rejects(
      runTrainJob(gpu, { ...trainOptions(dir, "over"), gpuMemoryBudgetBytes: 64 * 1024 }, {}),
      (e: unknown) => {
        assert.ok(e instanceof QloradError && e.kind === "resource_exhausted", String(e));
        assert.match(e.message, /over the GPU memory budget of 64\.0 KiB; the frozen base alone/);
        return true;
      },
    );
    assert.equal(ctx.memory.total, before, "nothing was allocated on the GPU");
    await assert.rejects(Deno.stat(join(dir, "over")));
    // Room for the base but not for 4 x 64-token activations without checkpointing.
    const tight = trainOptions(dir, "tight", { gradientCheckpointing: false });
    await assert.rejects(
      runTrainJob(gpu, { ...tight, gpuMemoryBudgetBytes: 1024 * 1024 }, {}),
      (e: unknown) => {
        assert.ok(e instanceof QloradError && e.kind === "resource_exhausted", String(e));
        assert.match(e.message, /over the GPU memory budget of 1\.00 MiB; activations and scratch/);
        assert.match(e.message, /hyperparameters\.max_seq_len \(\d+\)/);
        assert.match(e.message, /turn on hyperparameters\.gradient_checkpointing/);
        return true;
      },
    );
    assert.equal(ctx.memory.total, before);
  },
);

gpuTest("activation buffers follow the data's longest row, not max_seq_len", async (ctx) => {
  const dir = await fixture();
  // The same data with max_seq_len 64 and 250: the engine allocates the same bytes.
  const peaks: number[] = [];
  for (const maxSeqLen of [64, 250]) {
    ctx.memory.resetPeak();
    await runTrainJob(gpu, trainOptions(dir, `len-${maxSeqLen}`, { maxSteps: 1, maxSeqLen }), {});
    peaks.push(ctx.memory.peakTotal);
  }
  assert.equal(peaks[0], peaks[1]);
  const evalPeaks: number[] = [];
  for (const maxSeqLen of [64, 250]) {
    ctx.memory.resetPeak();
    await runEvaluateJob(gpu, {
      baseModelDir: join(dir, "model"),
      datasetPath: join(dir, "model", "eval.jsonl"),
      maxSeqLen,
      batchSize: 3,
      samplePrompts: [],
      maxNewTokens: 0,
      labels: { baseModel: "model", dataset: "model/eval.jsonl" },
    }, {});
    evalPeaks.push(ctx.memory.peakTotal);
  }
  assert.equal(evalPeaks[0], evalPeaks[1]);
});

gpuTest("(cleanup)", async () => {
  if (fixtureDir) await Deno.remove(fixtureDir, { recursive: true });
});

closeGpuAfterTests();
