/**
 * `qlorad train` and `qlorad eval`: the service's Train and Evaluate jobs on local folders (no
 * server), for scripts and quick checks. Their settings, defaults and ranges are the RPCs'
 * (src/train/settings.ts); an error names the flag.
 */
import { resolve } from "node:path";
import { GpuContext } from "../gpu/context.ts";
import { runTrainJob } from "../train/train_job.ts";
import { runEvaluateJob } from "../train/evaluate_job.ts";
import type { LoraSpec } from "../model/lora.ts";
import {
  EVALUATE_DEFAULTS,
  type EvaluateSettings,
  evaluateSettings,
  HYPERPARAMETER_DEFAULTS as HP,
  hyperparameterSettings,
  LORA_DEFAULTS,
  loraSettings,
  type TrainHyperparameters,
} from "../train/settings.ts";
import { type Command, interruptible, parseFlags, usageError } from "./command.ts";
import { formatDuration } from "./progress.ts";

/** Each train setting's flag, as errors name it. */
const TRAIN_FLAGS: Record<string, string> = {
  r: "--r",
  alpha: "--alpha",
  learningRate: "--lr",
  maxSteps: "--steps",
  epochs: "--epochs",
  microBatchSize: "--batch",
  gradientAccumulationSteps: "--accumulate",
  maxSeqLen: "--max-seq-len",
  seed: "--seed",
  saveSteps: "--save-steps",
  optimizerGpuBudgetBytes: "--optimizer-budget",
  loraDtype: "--lora-dtype",
};

const trainFlag = (key: string) => TRAIN_FLAGS[key] ?? key;

export const TRAIN: Command = {
  name: "train",
  usage:
    `  qlorad train --model DIR --data FILE --out DIR [--eval-data FILE] [--steps N] [--epochs X]
               [--lr X] [--r N] [--alpha X] [--batch N] [--accumulate N] [--max-seq-len N]
               [--seed N] [--save-steps N] [--optimizer-budget BYTES] [--lora-dtype f32|bf16]
               [--resume DIR]
      Train a LoRA adapter on a local model folder (4-bit or full precision); prints a line per
      step. The Train RPC's defaults: --epochs ${HP.epochs} (--steps, when given, wins),` +
    ` --lr ${HP.learningRate},
      --r ${LORA_DEFAULTS.r}, --alpha ${LORA_DEFAULTS.alpha}, --batch ${HP.microBatchSize},` +
    ` --accumulate ${HP.gradientAccumulationSteps}, --max-seq-len ${HP.maxSeqLen},
      --seed ${HP.seed}, --save-steps ${HP.saveSteps} (a checkpoint only at the end),
      --optimizer-budget ${HP.optimizerGpuBudgetBytes} (AdamW state resident; BYTES > 0 smaller
      than the state pages it through that much GPU memory), --lora-dtype ${HP.loraDtype} (bf16: a
      bf16 compute copy on the GPU, the f32 master paged with AdamW; needs an --optimizer-budget
      smaller than master + moments, 12 bytes a LoRA parameter).`,
  run: (args) => interruptible((signal) => train(args, signal)),
};

export const EVAL: Command = {
  name: "eval",
  usage: `  qlorad eval --model DIR --data FILE [--adapter DIR] [--max-seq-len N] [--batch N]
      Mean token cross-entropy, perplexity and accuracy as JSON. The Evaluate RPC's defaults:
      --max-seq-len ${EVALUATE_DEFAULTS.maxSeqLen}, --batch ${EVALUATE_DEFAULTS.batchSize}.`,
  run: (args) => interruptible((signal) => evaluate(args, signal)),
};

/** The settings `qlorad train`'s flags give (a SettingError naming the flag when one is bad). */
export function trainSettingsOfFlags(v: {
  r?: string;
  alpha?: string;
  lr?: string;
  steps?: string;
  epochs?: string;
  batch?: string;
  accumulate?: string;
  "max-seq-len"?: string;
  seed?: string;
  "save-steps"?: string;
  "optimizer-budget"?: string;
  "lora-dtype"?: string;
}): { lora: LoraSpec; hp: TrainHyperparameters } {
  return {
    lora: loraSettings({ r: v.r, alpha: v.alpha }, trainFlag),
    hp: hyperparameterSettings({
      learningRate: v.lr,
      maxSteps: v.steps,
      epochs: v.epochs,
      microBatchSize: v.batch,
      gradientAccumulationSteps: v.accumulate,
      maxSeqLen: v["max-seq-len"],
      seed: v.seed,
      saveSteps: v["save-steps"],
      optimizerGpuBudgetBytes: v["optimizer-budget"],
      loraDtype: v["lora-dtype"],
    }, trainFlag),
  };
}

const EVAL_FLAGS: Record<string, string> = { maxSeqLen: "--max-seq-len", batchSize: "--batch" };

/** The settings `qlorad eval`'s flags give. */
export function evaluateSettingsOfFlags(
  v: { "max-seq-len"?: string; batch?: string },
): EvaluateSettings {
  return evaluateSettings(
    { maxSeqLen: v["max-seq-len"], batchSize: v.batch },
    (k) => EVAL_FLAGS[k] ?? k,
  );
}

async function withGpu<T>(fn: (ctx: GpuContext) => Promise<T>): Promise<T> {
  const ctx = await GpuContext.open();
  try {
    return await fn(ctx);
  } finally {
    ctx.destroy();
  }
}

async function train(args: string[], signal: AbortSignal): Promise<number> {
  const v = parseFlags(args, {
    model: { type: "string" },
    data: { type: "string" },
    out: { type: "string" },
    "eval-data": { type: "string" },
    steps: { type: "string" },
    epochs: { type: "string" },
    lr: { type: "string" },
    r: { type: "string" },
    alpha: { type: "string" },
    batch: { type: "string" },
    accumulate: { type: "string" },
    "max-seq-len": { type: "string" },
    seed: { type: "string" },
    "save-steps": { type: "string" },
    "optimizer-budget": { type: "string" },
    "lora-dtype": { type: "string" },
    resume: { type: "string" },
  });
  const model = v.model ?? usageError("train needs --model DIR");
  const data = v.data ?? usageError("train needs --data FILE");
  const out = v.out ?? usageError("train needs --out DIR");
  const { lora, hp } = trainSettingsOfFlags(v);
  const summary = await withGpu((ctx) =>
    runTrainJob(() => Promise.resolve(ctx), {
      baseModelDir: resolve(model),
      datasetPath: resolve(data),
      evalDatasetPath: v["eval-data"] ? resolve(v["eval-data"]) : undefined,
      outputDir: resolve(out),
      resumeFrom: v.resume ? resolve(v.resume) : undefined,
      lora,
      hp,
      labels: { baseModel: model, dataset: data, evalDataset: v["eval-data"] },
      settingNames: {
        microBatchSize: "--batch",
        maxSeqLen: "--max-seq-len",
        gradientCheckpointing: undefined,
        loraDtype: "--lora-dtype",
        optimizerGpuBudgetBytes: "--optimizer-budget",
      },
    }, {
      metrics: (m) =>
        console.log(
          `step ${m.step}/${m.totalSteps} loss ${m.loss.toFixed(4)} lr ${
            m.learningRate.toExponential(2)
          } grad_norm ${m.gradNorm.toFixed(3)} ${Math.round(m.tokensPerSecond)} tok/s ETA ${
            formatDuration(m.etaSeconds)
          }`,
        ),
      eval: (e) =>
        console.log(`eval loss ${e.loss.toFixed(4)} perplexity ${e.perplexity.toFixed(2)}`),
      log: (level, message) => console.error(`${level}: ${message}`),
    }, signal)
  );
  console.log(
    `trained ${summary.steps} steps: loss ${summary.firstLoss?.toFixed(4)} -> ${
      summary.finalLoss.toFixed(4)
    }; adapter in ${out}`,
  );
  return 0;
}

async function evaluate(args: string[], signal: AbortSignal): Promise<number> {
  const v = parseFlags(args, {
    model: { type: "string" },
    data: { type: "string" },
    adapter: { type: "string" },
    "max-seq-len": { type: "string" },
    batch: { type: "string" },
  });
  const model = v.model ?? usageError("eval needs --model DIR");
  const data = v.data ?? usageError("eval needs --data FILE");
  const settings = evaluateSettingsOfFlags(v);
  const r = await withGpu((ctx) =>
    runEvaluateJob(
      () => Promise.resolve(ctx),
      {
        baseModelDir: resolve(model),
        adapterDir: v.adapter ? resolve(v.adapter) : undefined,
        datasetPath: resolve(data),
        ...settings,
        labels: { baseModel: model, dataset: data, adapter: v.adapter },
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
