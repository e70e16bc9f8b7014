/**
 * A Train job from validated options: reads and checks the datasets (a bad record fails the
 * job before any step, naming file and line), loads the frozen base (4-bit folder, or quantized
 * on load), resumes from a checkpoint when asked, and runs the training loop.
 */
import { basename } from "node:path";
import type { GpuContext } from "../gpu/context.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { type Example, loadDataset } from "../data/dataset.ts";
import { BatchPlan } from "../data/batches.ts";
import type { MicroBatch } from "../model/graph.ts";
import { loadBaseModel } from "../model/load.ts";
import { checkSequenceLength, llamaConfigFromHf } from "../model/config.ts";
import type { LoraSpec } from "../model/lora.ts";
import { readJsonFile } from "../io/checkpoint.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import { loadAdapter } from "./peft.ts";
import {
  runTraining,
  type TrainingData,
  type TrainingEvents,
  type TrainingSummary,
} from "./trainer.ts";
import { failedPrecondition, invalidArgument } from "../util/errors.ts";
import { estimateMemory } from "./estimate.ts";
import {
  activationSeqLen,
  checkMemoryFits,
  deviceActivationPrecision,
  quantSettingsOf,
  type SizingSettingNames,
} from "./memory_fit.ts";
import {
  HYPERPARAMETER_FIELDS,
  type HyperparameterKey,
  type TrainHyperparameters,
} from "./settings.ts";

/** What errors about sizing name: memory_fit's settings, and the two a bf16 refusal quotes. */
export type TrainSettingNames =
  & SizingSettingNames
  & Record<"loraDtype" | "optimizerGpuBudgetBytes", string>;

/** The Train request's field names, as errors quote them. */
const TRAIN_SETTING_NAMES: TrainSettingNames = {
  microBatchSize: "hyperparameters.micro_batch_size",
  maxSeqLen: "hyperparameters.max_seq_len",
  gradientCheckpointing: "hyperparameters.gradient_checkpointing",
  budget: "GPU memory budget",
  loraDtype: "hyperparameters.lora_dtype",
  optimizerGpuBudgetBytes: "hyperparameters.optimizer_gpu_budget_bytes",
};
import { join } from "node:path";

export interface TrainJobOptions {
  baseModelDir: string;
  datasetPath: string;
  evalDatasetPath?: string;
  outputDir: string;
  resumeFrom?: string;
  lora: LoraSpec;
  hp: TrainHyperparameters;
  /** What the user called things (errors and files show these, never host paths). */
  labels: { baseModel: string; dataset: string; evalDataset?: string };
  /** GPU memory the job may use (bytes); 0 or absent: only the adapter's buffer limits. */
  gpuMemoryBudgetBytes?: number;
  /** The user's names for the sizing settings, as errors quote them; the Train request's fields when absent. */
  settingNames?: Partial<TrainSettingNames>;
}

export interface JobHooks extends TrainingEvents {
  progress?(message: string, index?: number, total?: number): void;
}

/** Micro-batches of an evaluation set, in file order. */
export function evalBatches(examples: readonly Example[], batchSize: number): MicroBatch[] {
  const out: MicroBatch[] = [];
  for (let i = 0; i < examples.length; i += batchSize) {
    const group = examples.slice(i, i + batchSize);
    out.push({ tokens: group.map((e) => e.tokens), labels: group.map((e) => e.labels) });
  }
  return out;
}

function planData(
  examples: Example[],
  o: TrainJobOptions,
): { plan: BatchPlan; data: TrainingData } {
  const hp = o.hp;
  const base = {
    microBatchSize: hp.microBatchSize,
    gradientAccumulationSteps: hp.gradientAccumulationSteps,
    seed: hp.seed,
    packing: hp.packing,
    maxSeqLen: hp.maxSeqLen,
  };
  let plan = new BatchPlan(examples, { ...base, epochs: Math.max(1, Math.ceil(hp.epochs)) });
  if (hp.maxSteps > 0) {
    plan = new BatchPlan(examples, { ...base, maxSteps: hp.maxSteps });
  } else if (!Number.isInteger(hp.epochs)) {
    const steps = Math.max(1, Math.ceil(hp.epochs * plan.stepsPerEpoch));
    plan = new BatchPlan(examples, { ...base, maxSteps: steps });
  }
  const data: TrainingData = {
    totalSteps: plan.totalSteps,
    *stepsFrom(cursor) {
      for (const s of plan.stepsFrom(cursor)) {
        yield { micro: s.microBatches, cursorAfter: s.next, epoch: s.epoch };
      }
    },
  };
  return { plan, data };
}

/**
 * The hyperparameters a checkpoint records; resuming with different ones would not continue the
 * run. (Checkpointing, saving, evaluating, optimizer paging and the LoRA storage may change on
 * resume: a checkpoint holds the f32 adapter either way.)
 */
const RUN_HYPERPARAMETERS: readonly HyperparameterKey[] = [
  "learningRate",
  "lrScheduler",
  "warmupSteps",
  "maxSteps",
  "epochs",
  "microBatchSize",
  "gradientAccumulationSteps",
  "maxSeqLen",
  "maxGradNorm",
  "weightDecay",
  "seed",
  "packing",
];

/** Settings a checkpoint records, under their snake_case names. */
function runSettings(o: TrainJobOptions): Record<string, unknown> {
  return {
    base_model: o.labels.baseModel,
    dataset: o.labels.dataset,
    lora: o.lora,
    ...Object.fromEntries(RUN_HYPERPARAMETERS.map((k) => [HYPERPARAMETER_FIELDS[k], o.hp[k]])),
  };
}

export async function runTrainJob(
  gpu: () => Promise<GpuContext>,
  o: TrainJobOptions,
  hooks: JobHooks,
  signal?: AbortSignal,
): Promise<TrainingSummary> {
  const rawConfig = await readJsonFile(join(o.baseModelDir, "config.json"));
  const cfg = llamaConfigFromHf(rawConfig, `${o.labels.baseModel}/config.json`);
  const names = { ...TRAIN_SETTING_NAMES, ...o.settingNames };
  checkSequenceLength(cfg, o.hp.maxSeqLen, names.maxSeqLen, `${o.labels.baseModel}/config.json`);
  hooks.progress?.("reading datasets");
  const tokenizer = await loadTokenizer(o.baseModelDir);
  const train = await loadDataset(o.datasetPath, tokenizer, {
    maxSeqLen: o.hp.maxSeqLen,
    labelSource: o.labels.dataset,
    vocabSize: cfg.vocab,
    signal,
  });
  const evalSet = o.evalDatasetPath
    ? await loadDataset(o.evalDatasetPath, tokenizer, {
      maxSeqLen: o.hp.maxSeqLen,
      labelSource: o.labels.evalDataset,
      vocabSize: cfg.vocab,
      signal,
    })
    : undefined;
  for (const w of [...train.warnings, ...(evalSet?.warnings ?? [])]) hooks.log?.("warning", w);
  if (train.examples.length === 0) {
    throw invalidArgument(`${o.labels.dataset}: no example has a token to train on`);
  }
  const { data } = planData(train.examples, o);
  const settings = runSettings(o);

  let resume;
  if (o.resumeFrom) {
    const checkpoint = await loadCheckpoint(o.resumeFrom);
    const mismatch = Object.keys(settings).find((k) =>
      JSON.stringify(settings[k]) !== JSON.stringify(checkpoint.state.settings[k])
    );
    if (mismatch) {
      throw failedPrecondition(
        `resume_from: the checkpoint was made with a different ${mismatch} (${
          JSON.stringify(checkpoint.state.settings[mismatch])
        }, now ${JSON.stringify(settings[mismatch])})`,
      );
    }
    const adapter = await loadAdapter(checkpoint.adapterDir, cfg);
    resume = { checkpoint, adapter: adapter.flat };
    hooks.log?.(
      "info",
      `resuming from ${basename(checkpoint.dir)} (step ${checkpoint.state.step})`,
    );
  }

  const seqLen = activationSeqLen(
    [...train.examples, ...(evalSet?.examples ?? [])].map((e) => e.tokens.length),
    o.hp.maxSeqLen,
    o.hp.packing,
  );
  const ctx = await gpu();
  const estimate = estimateMemory(cfg, {
    maxBindingBytes: ctx.maxBindingBytes,
    lora: o.lora,
    microBatchSize: o.hp.microBatchSize,
    maxSeqLen: seqLen,
    gradientCheckpointing: o.hp.gradientCheckpointing,
    activationPrecision: deviceActivationPrecision(ctx.capabilities, o.hp.gradientCheckpointing),
    optimizerGpuBudgetBytes: o.hp.optimizerGpuBudgetBytes,
    loraStorage: o.hp.loraDtype,
    settingNames: (k) => names[k],
    ...quantSettingsOf(rawConfig),
  });
  checkMemoryFits(estimate, {
    limits: {
      maxBufferSize: ctx.limits.maxBufferSize,
      maxStorageBufferBindingSize: ctx.maxBindingBytes,
    },
    budgetBytes: o.gpuMemoryBudgetBytes,
    names,
    shape: {
      batch: o.hp.microBatchSize,
      seq: seqLen,
      gradientCheckpointing: o.hp.gradientCheckpointing,
    },
  });
  hooks.log?.(
    "info",
    `estimated GPU memory ${(estimate.total / 1024 ** 3).toFixed(2)} GiB ` +
      `(micro-batch ${o.hp.microBatchSize} x ${seqLen} tokens)`,
  );
  const model = await loadBaseModel(ctx, o.baseModelDir, {
    signal,
    onProgress: (tensor, index, total) => hooks.progress?.(`loading ${tensor}`, index, total),
  });
  try {
    await Deno.mkdir(o.outputDir, { recursive: true });
    return await runTraining(
      ctx,
      model,
      {
        outputDir: o.outputDir,
        baseModelName: o.labels.baseModel,
        lora: o.lora,
        hp: o.hp,
        data,
        evalData: evalSet ? evalBatches(evalSet.examples, o.hp.microBatchSize) : undefined,
        resume,
        settings,
        activationSeqLen: seqLen,
      },
      hooks,
      signal,
    );
  } finally {
    model.destroy();
  }
}
