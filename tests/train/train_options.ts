/** The standard small training run of train_job_test.ts (shared with its subprocess runner). */
import { join } from "node:path";
import type { TrainJobOptions } from "../../src/train/train_job.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";

export function trainOptions(
  dir: string,
  out: string,
  over: Partial<TrainJobOptions["hp"]> = {},
): TrainJobOptions {
  return {
    baseModelDir: join(dir, "model"),
    datasetPath: join(dir, "model", "train.jsonl"),
    outputDir: join(dir, out),
    lora: { r: 8, alpha: 16, dropout: 0.05, targets: [...LINEAR_MODULES], useRslora: false },
    hp: {
      learningRate: 3e-3,
      lrScheduler: "cosine",
      warmupSteps: 2,
      maxSteps: 12,
      epochs: 1,
      microBatchSize: 4,
      gradientAccumulationSteps: 2,
      maxSeqLen: 64,
      maxGradNorm: 1,
      weightDecay: 0,
      seed: 7,
      gradientCheckpointing: true,
      saveSteps: 4,
      evalSteps: 0,
      optimizerGpuBudgetBytes: 0,
      packing: false,
      ...over,
    },
    labels: { baseModel: "model", dataset: "model/train.jsonl" },
  };
}
