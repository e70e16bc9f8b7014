/**
 * Sections (d) and (e, whole step): training steps of one model by three engines sharing its
 * frozen base, stepped in interleaved rounds: gradient checkpointing off and on (optimizer
 * resident), and checkpointing off with the optimizer paged under a GPU budget of a quarter of
 * its state. A step is what a user waits for: forward, backward, clipping, the AdamW update and
 * the loss read back (TrainingEngine.trainStep).
 */
import { type GpuContext, statsDelta } from "../../src/gpu/context.ts";
import { LINEAR_MODULES, type LlamaConfig } from "../../src/model/config.ts";
import type { LoraSpec } from "../../src/model/lora.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { parameterCount, randomBatch, randomModel } from "./random_model.ts";
import { randomModelGpu } from "./random_model_gpu.ts";
import { interleaved, type Timing } from "../../src/gpu/timing.ts";

export const BENCH_LORA: LoraSpec = {
  r: 16,
  alpha: 32,
  dropout: 0.05,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

export interface TrainCase {
  name: string;
  cfg: LlamaConfig;
  batch: number;
  seq: number;
  rounds: number;
  /** Make the random base model on the GPU (scripts/bench/random_model_gpu.ts), not on the host. */
  gpuWeights?: boolean;
}

export interface TrainRow {
  model: string;
  parameters: number;
  loraParameters: number;
  tokensPerStep: number;
  plain: StepStats;
  checkpointed: StepStats;
  paged: StepStats & { budgetBytes: number; stateBytes: number; pagedBytesPerStep: number };
  /** The host's share of one checkpointed step (after the timed rounds, so caches are warm). */
  host: HostStepStats;
}

/** What one training step costs the host: dispatches recorded, submits, encoding time. */
export interface HostStepStats {
  dispatches: number;
  submits: number;
  bindGroupsCreated: number;
  encodeMs: number;
}

export interface StepStats {
  ms: number;
  tokensPerS: number;
  /** Bytes of activations the engine's graph allocated. */
  activationBytes: number;
  samples: number[];
}

export async function benchTraining(
  ctx: GpuContext,
  c: TrainCase,
  onProgress?: (line: string) => void,
): Promise<TrainRow> {
  const model = c.gpuWeights
    ? await randomModelGpu(ctx, c.cfg, 4242)
    : randomModel(ctx, c.cfg, 4242);
  const engines: TrainingEngine[] = [];
  try {
    const make = (over: { gradientCheckpointing: boolean; optimizerGpuBudgetBytes: number }) => {
      const before = ctx.memory.current().activations;
      const e = new TrainingEngine(ctx, model, {
        lora: BENCH_LORA,
        maxShape: { batch: c.batch, seq: c.seq },
        seed: 1,
        maxGradNorm: 1,
        ...over,
      });
      engines.push(e);
      return { engine: e, activationBytes: ctx.memory.current().activations - before };
    };
    const plain = make({ gradientCheckpointing: false, optimizerGpuBudgetBytes: 0 });
    const ckpt = make({ gradientCheckpointing: true, optimizerGpuBudgetBytes: 0 });
    const stateBytes = 2 * plain.engine.layout.totalFloats * 4;
    const budgetBytes = Math.floor(stateBytes / 4);
    const paged = make({ gradientCheckpointing: false, optimizerGpuBudgetBytes: budgetBytes });
    if (!paged.engine.optimizer.paged) throw new Error(`${c.name}: the optimizer did not page`);

    const batches = [0, 1, 2, 3].map((s) => randomBatch(c.cfg.vocab, c.batch, c.seq, 100 + s));
    let pagedBytes = 0;
    const stepper = (name: string, e: TrainingEngine, onStep?: (bytes: number) => void) => {
      let i = 0;
      return {
        name,
        run: async () => {
          const r = await e.trainStep([batches[i++ % batches.length]], 1e-4);
          if (!Number.isFinite(r.loss)) throw new Error(`${c.name} ${name}: loss ${r.loss}`);
          onStep?.(r.pagedInBytes + r.pagedOutBytes);
        },
      };
    };
    const t = await interleaved([
      stepper("plain", plain.engine),
      stepper("checkpointed", ckpt.engine),
      stepper("paged", paged.engine, (b) => (pagedBytes = b)),
    ], {
      warmup: 1,
      rounds: c.rounds,
      onRound: (r) => onProgress?.(`${c.name}: round ${r + 1}/${c.rounds}`),
    });
    const before = ctx.statsSnapshot();
    await ckpt.engine.trainStep([batches[0]], 1e-4);
    const d = statsDelta(before, ctx.statsSnapshot());
    const host: HostStepStats = {
      dispatches: d.dispatches,
      submits: d.submits,
      bindGroupsCreated: d.bindGroupsCreated,
      encodeMs: d.encodeMs,
    };
    const tokens = c.batch * c.seq;
    const stats = (x: Timing, activationBytes: number): StepStats => ({
      ms: x.ms,
      tokensPerS: tokens / (x.ms / 1000),
      activationBytes,
      samples: x.samples,
    });
    return {
      model: c.name,
      parameters: parameterCount(c.cfg),
      loraParameters: plain.engine.layout.totalFloats,
      tokensPerStep: tokens,
      plain: stats(t.get("plain")!, plain.activationBytes),
      checkpointed: stats(t.get("checkpointed")!, ckpt.activationBytes),
      paged: {
        ...stats(t.get("paged")!, paged.activationBytes),
        budgetBytes,
        stateBytes,
        pagedBytesPerStep: pagedBytes,
      },
      host,
    };
  } finally {
    for (const e of engines) e.destroy();
    model.destroy();
  }
}
