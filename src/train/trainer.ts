/**
 * The training loop a Train job runs: steps of gradient accumulation over the data plan,
 * learning-rate schedule, metrics every step, evaluation every `evalSteps`, checkpoints every
 * `saveSteps` (and when stopped), and at the end the PEFT adapter plus a JSON summary.
 * Stopping (cancel, shutdown) happens at a step boundary and writes a checkpoint first, so
 * `resume_from` continues exactly where it stopped.
 */
import type { LoraStorage } from "../model/lora_params.ts";
import { join } from "node:path";
import type { GpuContext } from "../gpu/context.ts";
import type { BaseModel } from "../model/base_model.ts";
import type { LoraSpec } from "../model/lora.ts";
import type { MicroBatch } from "../model/graph.ts";
import { TrainingEngine } from "./engine.ts";
import { learningRate, type LrScheduler } from "./schedule.ts";
import { StepTimeEstimator } from "./eta.ts";
import { type DataCursor, type LoadedCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { saveAdapter } from "./peft.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { CancelledError, invalidArgument } from "../util/errors.ts";
import type { MemoryBytes } from "../gpu/memory.ts";

export interface Hyperparameters {
  learningRate: number;
  lrScheduler: LrScheduler;
  warmupSteps: number;
  /** Optimizer steps; 0 = derived from epochs. */
  maxSteps: number;
  epochs: number;
  microBatchSize: number;
  gradientAccumulationSteps: number;
  maxSeqLen: number;
  maxGradNorm: number;
  weightDecay: number;
  seed: number;
  gradientCheckpointing: boolean;
  /** 0 = only at the end (and when stopped). */
  saveSteps: number;
  /** 0 = only at the end. */
  evalSteps: number;
  optimizerGpuBudgetBytes: number;
  /**
   * The LoRA parameters on the GPU: "f32" (default), or a "bf16" compute copy with the f32 master
   * paged with AdamW (EngineOptions.loraStorage; needs optimizerGpuBudgetBytes > 0).
   */
  loraDtype?: LoraStorage;
}

/** One optimizer step's micro-batches, and where the data stands after it. */
export interface PlannedStep {
  micro: MicroBatch[];
  cursorAfter: DataCursor;
  epoch: number;
}

/** The data side of a run (src/data builds it): deterministic from its cursor. */
export interface TrainingData {
  totalSteps: number;
  stepsFrom(cursor: DataCursor): Iterable<PlannedStep>;
}

export interface StepMetrics {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  learningRate: number;
  gradNorm: number;
  tokens: number;
  tokensPerSecond: number;
  stepSeconds: number;
  etaSeconds: number;
  memory: MemoryBytes;
  pagedInBytes: number;
  pagedOutBytes: number;
}

export interface EvalMetrics {
  step: number;
  loss: number;
  perplexity: number;
  tokenAccuracy: number;
  tokens: number;
}

export interface TrainingEvents {
  metrics?(m: StepMetrics): void;
  eval?(e: EvalMetrics): void;
  checkpoint?(path: string, step: number, isFinal: boolean): void;
  log?(level: "info" | "warning", message: string): void;
}

export interface TrainingSpec {
  outputDir: string;
  /** Written as base_model_name_or_path (the user's path, not the host's). */
  baseModelName: string;
  lora: LoraSpec;
  hp: Hyperparameters;
  data: TrainingData;
  evalData?: MicroBatch[];
  resume?: { checkpoint: LoadedCheckpoint; adapter: Float32Array };
  /** Settings recorded in checkpoints; a resume must match them. */
  settings: Record<string, unknown>;
  /** Tokens per sequence the buffers are sized for (the data's longest); default max_seq_len. */
  activationSeqLen?: number;
}

export interface TrainingSummary {
  steps: number;
  totalSteps: number;
  finalLoss: number;
  firstLoss?: number;
  tokensSeen: number;
  trainSeconds: number;
  tokensPerSecond: number;
  lastEval?: EvalMetrics;
  peakMemory: MemoryBytes;
  peakMemoryTotal: number;
  parameters: number;
  resumedFromStep?: number;
}

export async function evaluateBatches(
  engine: TrainingEngine,
  batches: MicroBatch[],
  step: number,
  signal?: AbortSignal,
): Promise<EvalMetrics> {
  let lossSum = 0;
  let correct = 0;
  let tokens = 0;
  for (const mb of batches) {
    if (signal?.aborted) throw new CancelledError();
    const r = await engine.evaluate(mb);
    lossSum += r.lossSum;
    correct += r.correct;
    tokens += r.tokens;
  }
  const loss = tokens > 0 ? lossSum / tokens : 0;
  return {
    step,
    loss,
    perplexity: Math.exp(loss),
    tokenAccuracy: tokens ? correct / tokens : 0,
    tokens,
  };
}

export async function runTraining(
  ctx: GpuContext,
  model: BaseModel,
  spec: TrainingSpec,
  events: TrainingEvents = {},
  signal?: AbortSignal,
): Promise<TrainingSummary> {
  const { hp } = spec;
  const totalSteps = spec.data.totalSteps;
  if (totalSteps < 1) throw invalidArgument("the dataset and settings give no training steps");
  const engine = new TrainingEngine(ctx, model, {
    lora: spec.lora,
    maxShape: { batch: hp.microBatchSize, seq: spec.activationSeqLen ?? hp.maxSeqLen },
    gradientCheckpointing: hp.gradientCheckpointing,
    seed: hp.seed,
    adamw: { weightDecay: hp.weightDecay },
    maxGradNorm: hp.maxGradNorm,
    optimizerGpuBudgetBytes: hp.optimizerGpuBudgetBytes,
    loraStorage: hp.loraDtype,
    adapter: spec.resume?.adapter,
  });
  try {
    let step = 0;
    let cursor: DataCursor = { epoch: 0, index: 0 };
    let tokensSeen = 0;
    if (spec.resume) {
      const { state, optimizer } = spec.resume.checkpoint;
      engine.optimizer.setState(optimizer);
      step = state.step;
      cursor = state.cursor;
      tokensSeen = state.tokensSeen;
      events.log?.("info", `resumed from step ${step} of ${totalSteps}`);
    }
    ctx.memory.resetPeak();
    let lastCheckpointStep = step;
    let lastLoss = spec.resume?.checkpoint.state.lastLoss ?? Number.NaN; // a finished run resumed
    let firstLoss: number | undefined;
    let lastEval: EvalMetrics | undefined;
    let trainSeconds = 0;
    let trainTokens = 0;
    const stepTimes = new StepTimeEstimator();
    const checkpoint = async (isFinal: boolean) => {
      const path = await saveCheckpoint(
        spec.outputDir,
        engine.layout,
        await engine.readAdapter(),
        await engine.optimizer.state(),
        { step, totalSteps, cursor, settings: spec.settings, lastLoss, tokensSeen },
        spec.baseModelName,
      );
      lastCheckpointStep = step;
      events.checkpoint?.(path, step, isFinal);
    };
    const evaluate = async () => {
      if (!spec.evalData?.length) return;
      lastEval = await evaluateBatches(engine, spec.evalData, step, signal);
      events.eval?.(lastEval);
    };

    for (const planned of spec.data.stepsFrom(cursor)) {
      if (step >= totalSteps) break;
      if (signal?.aborted) {
        if (step > lastCheckpointStep) await checkpoint(false);
        throw new CancelledError(`stopped at step ${step}; resume from its checkpoint`);
      }
      const lr = learningRate(hp.learningRate, hp.lrScheduler, step, hp.warmupSteps, totalSteps);
      const started = performance.now();
      const r = await engine.trainStep(planned.micro, lr);
      const seconds = (performance.now() - started) / 1000;
      step++;
      cursor = planned.cursorAfter;
      tokensSeen += r.labelTokens;
      trainSeconds += seconds;
      trainTokens += r.inputTokens;
      if (!Number.isFinite(r.loss)) {
        throw invalidArgument(
          `training diverged: loss is ${r.loss} at step ${step}; lower learning_rate`,
        );
      }
      lastLoss = r.loss;
      firstLoss ??= r.loss;
      stepTimes.add(seconds);
      events.metrics?.({
        step,
        totalSteps,
        epoch: planned.epoch,
        loss: r.loss,
        learningRate: lr,
        gradNorm: r.gradNorm,
        tokens: r.inputTokens,
        tokensPerSecond: r.inputTokens / Math.max(seconds, 1e-9),
        stepSeconds: seconds,
        etaSeconds: stepTimes.remainingSeconds(totalSteps - step),
        memory: ctx.memory.current(),
        pagedInBytes: r.pagedInBytes,
        pagedOutBytes: r.pagedOutBytes,
      });
      if (hp.evalSteps > 0 && step % hp.evalSteps === 0 && step < totalSteps) await evaluate();
      if (hp.saveSteps > 0 && step % hp.saveSteps === 0 && step < totalSteps) {
        await checkpoint(false);
      }
    }
    if (step < totalSteps) {
      throw invalidArgument(`the data plan ended after ${step} of ${totalSteps} steps`);
    }
    await evaluate();
    await checkpoint(true);
    const adapter = await engine.readAdapter();
    await saveAdapter(spec.outputDir, engine.layout, adapter, spec.baseModelName);
    const summary: TrainingSummary = {
      steps: step,
      totalSteps,
      finalLoss: lastLoss,
      firstLoss,
      tokensSeen,
      trainSeconds,
      tokensPerSecond: trainTokens / Math.max(trainSeconds, 1e-9),
      lastEval,
      peakMemory: ctx.memory.peak(),
      peakMemoryTotal: ctx.memory.peakTotal,
      parameters: engine.layout.parameterCount,
      resumedFromStep: spec.resume?.checkpoint.state.step,
    };
    await writeFileAtomic(
      join(spec.outputDir, "training_summary.json"),
      JSON.stringify({ ...summary, settings: spec.settings }, null, 2) + "\n",
    );
    return summary;
  } finally {
    engine.destroy();
  }
}
