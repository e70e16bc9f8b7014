/**
 * QLoRA training at a real model's shape (Llama-2-7B: 32 layers of hidden 4096, intermediate
 * 11008, vocabulary 32000) on random NF4 weights made on the GPU (scripts/bench/random_model_gpu.ts):
 * LoRA r 16 on all seven linears, one micro-batch of batch x seq tokens, gradient checkpointing.
 * A short step first compiles the pipelines (batch x 64 tokens); then full steps (forward,
 * backward, clip, AdamW, the loss read back: TrainingEngine.trainStep) as long as the time box allows another. Tokens/s are
 * of the median full step; peak GPU memory is the memory ledger's peak from the first step on
 * (base weights included). Then, if time is left, the same steps with the AdamW moments paged
 * through a GPU pool of a quarter of their bytes. Every finished step is reported at once through
 * `onUpdate`, so a run cut short by its time box still leaves its figures.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { releaseFreedMemory } from "../../src/util/gc_hint.ts";
import { randomModelGpu } from "./random_model_gpu.ts";
import { parameterCount, randomBatch } from "./random_model.ts";
import { median } from "../../src/gpu/timing.ts";
import { BENCH_LORA } from "./train_bench.ts";

export interface LargeTrainOptions {
  cfg: LlamaConfig;
  batch: number;
  seq: number;
  /** Full steps at most, per optimizer placement. */
  maxSteps: number;
  /** Date.now() by which everything must be done (a step is started only if it should fit). */
  deadline: number;
  /** Also time paged AdamW (budget 1/4 of the state) when time is left. */
  paged: boolean;
  onUpdate?: (partial: LargeTrainResult) => void;
  onProgress?: (line: string) => void;
}

export interface PlacementResult {
  stepsS: number[];
  tokensPerSecond: number | null;
  peakGib: number;
  peakByCategoryGib: Record<string, number>;
}

export interface LargeTrainResult {
  batch: number;
  seq: number;
  r: number;
  gradientCheckpointing: true;
  parameters: number;
  loraParameters: number;
  modelBuildS: number;
  /** The compiling step (the batch at 64 tokens per sequence). */
  warmupStepS?: number;
  resident?: PlacementResult;
  paged?: PlacementResult & {
    budgetBytes: number;
    stateBytes: number;
    pagedBytesPerStep: number;
    /** Median paged step / median resident step. */
    ratioToResident: number | null;
  };
  /** Why fewer steps ran than asked for, if so. */
  note?: string;
}

const GIB = 1024 ** 3;

export async function benchLargeTraining(
  ctx: GpuContext,
  o: LargeTrainOptions,
): Promise<LargeTrainResult> {
  const log = o.onProgress ?? (() => {});
  const t0 = performance.now();
  const model = await randomModelGpu(ctx, o.cfg, 7, (l) => {
    if (l % 8 === 7 || l === o.cfg.layers - 1) log(`model: layer ${l + 1}/${o.cfg.layers} made`);
  });
  const result: LargeTrainResult = {
    batch: o.batch,
    seq: o.seq,
    r: BENCH_LORA.r,
    gradientCheckpointing: true,
    parameters: parameterCount(o.cfg),
    loraParameters: 0,
    modelBuildS: (performance.now() - t0) / 1000,
  };
  const update = () => o.onUpdate?.(structuredClone(result));
  const tokens = o.batch * o.seq;
  const full = [0, 1, 2].map((s) => randomBatch(o.cfg.vocab, o.batch, o.seq, 900 + s));
  const notes: string[] = [];
  try {
    /** Steps one engine (resident moments, or paged under `budgetBytes`) until done or boxed. */
    const run = async (budgetBytes: number): Promise<PlacementResult> => {
      ctx.memory.resetPeak();
      const engine = new TrainingEngine(ctx, model, {
        lora: BENCH_LORA,
        maxShape: { batch: o.batch, seq: o.seq },
        gradientCheckpointing: true,
        seed: 1,
        maxGradNorm: 1,
        optimizerGpuBudgetBytes: budgetBytes,
      });
      try {
        result.loraParameters = engine.layout.totalFloats;
        if (result.warmupStepS === undefined) {
          // The compiling step: the full batch of short sequences, so that kernels see as many
          // rows as in a full step and pick the same pipelines (register-tile heights, say).
          const s0 = performance.now();
          const short = randomBatch(o.cfg.vocab, o.batch, Math.min(64, o.seq), 899);
          await engine.trainStep([short], 1e-4);
          result.warmupStepS = (performance.now() - s0) / 1000;
          log(
            `warm-up step (${o.batch} x ${short.tokens[0].length} tokens): ${
              result.warmupStepS.toFixed(2)
            } s`,
          );
          update();
        }
        const placement: PlacementResult = {
          stepsS: [],
          tokensPerSecond: null,
          peakGib: 0,
          peakByCategoryGib: {},
        };
        const name = budgetBytes ? "paged" : "resident";
        for (let i = 0; i < o.maxSteps; i++) {
          const last = placement.stepsS.at(-1) ?? result.resident?.stepsS.at(-1) ?? 0;
          // A step is started only if one as long as the last should end inside the box.
          if (i > 0 && Date.now() + 1.3 * last * 1000 > o.deadline) {
            notes.push(
              `${name}: stopped after ${i} full steps, the time box would not hold another`,
            );
            break;
          }
          const s0 = performance.now();
          const r = await engine.trainStep([full[i % full.length]], 1e-4);
          if (!Number.isFinite(r.loss)) throw new Error(`${name} step ${i + 1}: loss ${r.loss}`);
          placement.stepsS.push((performance.now() - s0) / 1000);
          placement.peakGib = ctx.memory.peakTotal / GIB;
          placement.peakByCategoryGib = Object.fromEntries(
            Object.entries(ctx.memory.peak()).map(([k, v]) => [k, v / GIB]),
          );
          placement.tokensPerSecond = tokens / median(placement.stepsS);
          log(
            `${name} step ${i + 1}: ${placement.stepsS.at(-1)!.toFixed(2)} s, loss ${
              r.loss.toFixed(3)
            }`,
          );
          if (budgetBytes) {
            const resident = result.resident?.tokensPerSecond;
            result.paged = {
              ...placement,
              budgetBytes,
              stateBytes: 2 * engine.layout.totalFloats * 4,
              pagedBytesPerStep: r.pagedInBytes + r.pagedOutBytes,
              ratioToResident: resident ? resident / placement.tokensPerSecond : null,
            };
          } else {
            result.resident = { ...placement };
          }
          result.note = notes.join("; ") || undefined;
          update();
        }
        return placement;
      } finally {
        engine.destroy();
        releaseFreedMemory();
      }
    };

    const resident = await run(0);
    if (o.paged) {
      // A paged step costs about a resident one (the moments move while the step computes).
      const stepS = resident.stepsS.length ? median(resident.stepsS) : Infinity;
      if (Date.now() + 2.5 * stepS * 1000 > o.deadline) {
        notes.push("paged AdamW not timed: no time left");
      } else {
        await run(Math.floor((2 * result.loraParameters * 4) / 4));
      }
    }
    result.note = notes.join("; ") || undefined;
    update();
    return result;
  } finally {
    model.destroy();
  }
}
