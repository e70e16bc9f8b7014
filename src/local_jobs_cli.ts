/**
 * `qlorad train` and `qlorad eval`: the same jobs the service runs, from the command line on
 * local folders (no server), for scripts and quick checks.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { GpuContext } from "./gpu/context.ts";
import { LINEAR_MODULES } from "./model/config.ts";
import { runTrainJob } from "./train/train_job.ts";
import { runEvaluateJob } from "./train/evaluate_job.ts";
import { invalidArgument } from "./util/errors.ts";

export const LOCAL_JOBS_USAGE =
  `  qlorad train --model DIR --data FILE --out DIR [--eval-data FILE] [--steps N] [--lr X]
               [--r N] [--alpha X] [--batch N] [--accumulate N] [--max-seq-len N] [--seed N]
               [--save-steps N] [--resume DIR]
      Train a LoRA adapter on a local model folder (4-bit or full precision); prints a line per step.
      Defaults: --steps 100, --lr 2e-4, --r 8, --alpha 16, --batch 1, --accumulate 1,
      --max-seq-len 512, --seed 42.
  qlorad eval --model DIR --data FILE [--adapter DIR] [--max-seq-len N] [--batch N]
      Mean token cross-entropy, perplexity and accuracy as JSON.
`;

function number(v: string | undefined, flag: string, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw invalidArgument(`${flag}: ${v} is not a number >= 0`);
  return n;
}

async function withGpu<T>(fn: (ctx: GpuContext) => Promise<T>): Promise<T> {
  const ctx = await GpuContext.open();
  try {
    return await fn(ctx);
  } finally {
    ctx.destroy();
  }
}

export async function runTrainCommand(args: string[], signal?: AbortSignal): Promise<number> {
  const { values: v } = parseArgs({
    args,
    strict: true,
    options: Object.fromEntries(
      [
        "model",
        "data",
        "out",
        "eval-data",
        "steps",
        "lr",
        "r",
        "alpha",
        "batch",
        "accumulate",
        "max-seq-len",
        "seed",
        "save-steps",
        "resume",
      ].map((k) => [k, { type: "string" as const }]),
    ),
  });
  for (const k of ["model", "data", "out"]) {
    if (!v[k]) throw invalidArgument(`train needs --${k}`);
  }
  const summary = await withGpu((ctx) =>
    runTrainJob(() => Promise.resolve(ctx), {
      baseModelDir: resolve(v.model!),
      datasetPath: resolve(v.data!),
      evalDatasetPath: v["eval-data"] ? resolve(v["eval-data"]) : undefined,
      outputDir: resolve(v.out!),
      resumeFrom: v.resume ? resolve(v.resume) : undefined,
      lora: {
        r: number(v.r, "--r", 8),
        alpha: number(v.alpha, "--alpha", 16),
        dropout: 0.05,
        targets: [...LINEAR_MODULES],
        useRslora: false,
      },
      hp: {
        learningRate: number(v.lr, "--lr", 2e-4),
        lrScheduler: "constant",
        warmupSteps: 0,
        maxSteps: number(v.steps, "--steps", 100),
        epochs: 1,
        microBatchSize: number(v.batch, "--batch", 1),
        gradientAccumulationSteps: number(v.accumulate, "--accumulate", 1),
        maxSeqLen: number(v["max-seq-len"], "--max-seq-len", 512),
        maxGradNorm: 0.3,
        weightDecay: 0,
        seed: number(v.seed, "--seed", 42),
        gradientCheckpointing: true,
        saveSteps: number(v["save-steps"], "--save-steps", 0),
        evalSteps: 0,
        optimizerGpuBudgetBytes: 0,
        packing: false,
      },
      labels: { baseModel: v.model!, dataset: v.data!, evalDataset: v["eval-data"] },
    }, {
      metrics: (m) =>
        console.log(
          `step ${m.step}/${m.totalSteps} loss ${m.loss.toFixed(4)} lr ${
            m.learningRate.toExponential(2)
          } grad_norm ${m.gradNorm.toFixed(3)} ${Math.round(m.tokensPerSecond)} tok/s`,
        ),
      eval: (e) =>
        console.log(`eval loss ${e.loss.toFixed(4)} perplexity ${e.perplexity.toFixed(2)}`),
      log: (level, message) => console.error(`${level}: ${message}`),
    }, signal)
  );
  console.log(
    `trained ${summary.steps} steps: loss ${summary.firstLoss?.toFixed(4)} -> ${
      summary.finalLoss.toFixed(4)
    }; adapter in ${v.out}`,
  );
  return 0;
}

export async function runEvalCommand(args: string[], signal?: AbortSignal): Promise<number> {
  const { values: v } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string" },
      data: { type: "string" },
      adapter: { type: "string" },
      "max-seq-len": { type: "string" },
      batch: { type: "string" },
    },
  });
  if (!v.model || !v.data) throw invalidArgument("eval needs --model and --data");
  const r = await withGpu((ctx) =>
    runEvaluateJob(
      () => Promise.resolve(ctx),
      {
        baseModelDir: resolve(v.model!),
        adapterDir: v.adapter ? resolve(v.adapter) : undefined,
        datasetPath: resolve(v.data!),
        maxSeqLen: number(v["max-seq-len"], "--max-seq-len", 512),
        batchSize: number(v.batch, "--batch", 4),
        samplePrompts: [],
        maxNewTokens: 1,
        labels: { baseModel: v.model!, dataset: v.data!, adapter: v.adapter },
      },
      {},
      signal,
    )
  );
  console.log(JSON.stringify({
    loss: r.loss,
    perplexity: r.perplexity,
    token_accuracy: r.tokenAccuracy,
    tokens: r.tokens,
    examples: r.examples,
  }));
  return 0;
}
