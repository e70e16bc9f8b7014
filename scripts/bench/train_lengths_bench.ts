/**
 * QLoRA training of one real-size layer at several sequence lengths (issue #10's row: the
 * 1-layer Llama-3-8B shape at 512, 2,048 and 8,192 tokens), on random NF4 weights made once on the
 * GPU (scripts/bench/random_model_gpu.ts): LoRA r 16 on all seven linears, gradient
 * checkpointing, one sequence per step. One engine per length (sized for that length), so that
 * each length's peak memory is the memory ledger's peak from that engine's creation through its
 * steps, base weights included: exact, since the ledger counts every GPU buffer's bytes.
 *
 * A short step (up to 64 tokens) compiles the pipelines first; then at each length full steps
 * (forward, backward, clip, AdamW, the loss read back) as long as the time box allows; tokens/s
 * leave out a length's first step when later ones ran. A step that would
 * still be running when the box closes is left running: the result says so (`inFlight`), and its
 * peak is the ledger's peak when the box closed. The ledger grows as the step is recorded, long
 * before a slow adapter finishes computing it, so that figure is exact once recording is done, a
 * lower bound otherwise. The caller must then stop using the GPU (the queue is still busy).
 */
import { type GpuContext, statsDelta } from "../../src/gpu/context.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import type { BaseModel } from "../../src/model/base_model.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { releaseFreedMemory } from "../../src/util/gc_hint.ts";
import { median } from "../../src/gpu/timing.ts";
import { randomModelGpu } from "./random_model_gpu.ts";
import { parameterCount, randomBatch } from "./random_model.ts";
import { BENCH_LORA } from "./train_bench.ts";

/** Llama-3-8B's dimensions with one decoder layer: the real shape at a size a CPU adapter runs. */
export const LLAMA3_8B_1L: LlamaConfig = {
  hidden: 4096,
  intermediate: 14336,
  layers: 1,
  heads: 32,
  kvHeads: 8,
  headDim: 128,
  vocab: 128256,
  rmsEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  },
  tieEmbeddings: false,
  maxPositions: 131072,
  bosTokenId: 128000,
  eosTokenIds: [128001],
  torchDtype: "bfloat16",
};

/** The issue's sequence lengths. */
export const BENCH_LENGTHS = [512, 2048, 8192] as const;

export interface LengthsOptions {
  cfg: LlamaConfig;
  lengths: readonly number[];
  /** Full steps at most per length. */
  maxSteps: number;
  /** Date.now() by which everything must be done. */
  deadline: number;
  onUpdate?: (partial: LengthsResult) => void;
  onProgress?: (line: string) => void;
}

export interface LengthRow {
  seq: number;
  stepsS: number[];
  /**
   * Tokens per step / the median step's seconds, the first step at this length left out when
   * later ones ran (it compiles what this length's shapes need); null when no step finished.
   */
  tokensPerSecond: number | null;
  /** The memory ledger's peak, bytes (base weights included). */
  peakBytes: number;
  peakByCategoryBytes: Record<string, number>;
  /**
   * The ledger's total right after the engine was made (base weights, LoRA state, and every
   * buffer the engine sizes for its length): the peak's share known before any step runs.
   */
  engineBytes: number;
  /** engineBytes by category. */
  engineByCategoryBytes: Record<string, number>;
  /** Why this length failed, if it did (e.g. a buffer over the adapter's binding limit). */
  error?: string;
  /** A step was still running when the box closed (peakBytes is the ledger's peak then). */
  inFlight: boolean;
  /**
   * For a step in flight: its forward/backward batch had been recorded and submitted (a step's
   * first submit holds them: the whole step when the optimizer is resident), so the ledger had
   * seen all of its buffers.
   */
  recorded?: boolean;
  /** Why this length has fewer steps than asked, if so. */
  note?: string;
}

export interface LengthsResult {
  r: number;
  gradientCheckpointing: true;
  parameters: number;
  loraParameters: number;
  modelBuildS: number;
  /** The compiling step at 64 tokens. */
  warmupStepS?: number;
  rows: LengthRow[];
  /** A step is still running on the GPU: stop using this context. */
  inFlight: boolean;
}

const WARMUP_TOKENS = 64;

const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(3);

/** A length's row before any step has run. */
function emptyRow(seq: number): LengthRow {
  return {
    seq,
    stepsS: [],
    tokensPerSecond: null,
    peakBytes: 0,
    peakByCategoryBytes: {},
    engineBytes: 0,
    engineByCategoryBytes: {},
    inFlight: false,
  };
}

/** The step's result, or "boxed" if the deadline comes first (the step keeps running). */
async function stepOrBox<T>(step: Promise<T>, deadline: number): Promise<T | "boxed"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const box = new Promise<"boxed">((resolve) => {
    timer = setTimeout(() => resolve("boxed"), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([step, box]);
  } finally {
    clearTimeout(timer);
  }
}

export async function benchTrainLengths(
  ctx: GpuContext,
  o: LengthsOptions,
): Promise<LengthsResult> {
  const log = o.onProgress ?? (() => {});
  const t0 = performance.now();
  const model: BaseModel = await randomModelGpu(ctx, o.cfg, 11);
  const result: LengthsResult = {
    r: BENCH_LORA.r,
    gradientCheckpointing: true,
    parameters: parameterCount(o.cfg),
    loraParameters: 0,
    modelBuildS: (performance.now() - t0) / 1000,
    rows: [],
    inFlight: false,
  };
  log(`model made: ${result.modelBuildS.toFixed(1)} s`);
  const update = () => o.onUpdate?.(structuredClone(result));
  update();
  try {
    let previous: { seq: number; stepS: number } | undefined;
    for (const seq of o.lengths) {
      if (Date.now() >= o.deadline) break;
      const row = emptyRow(seq);
      ctx.memory.resetPeak();
      const engine = new TrainingEngine(ctx, model, {
        lora: BENCH_LORA,
        maxShape: { batch: 1, seq },
        gradientCheckpointing: true,
        seed: 1,
        maxGradNorm: 1,
        optimizerGpuBudgetBytes: 0,
      });
      row.engineBytes = ctx.memory.total;
      row.engineByCategoryBytes = { ...ctx.memory.current() };
      log(`seq ${seq}: engine made, ledger total ${gib(row.engineBytes)} GiB`);
      const readPeak = () => {
        row.peakBytes = ctx.memory.peakTotal;
        row.peakByCategoryBytes = { ...ctx.memory.peak() };
      };
      let boxed = false;
      try {
        result.loraParameters = engine.layout.totalFloats;
        result.rows.push(row);
        if (result.warmupStepS === undefined) {
          const s0 = performance.now();
          const short = randomBatch(o.cfg.vocab, 1, Math.min(WARMUP_TOKENS, seq), 899);
          const r = await stepOrBox(engine.trainStep([short], 1e-4), o.deadline);
          if (r === "boxed") {
            boxed = true;
            row.note = "the time box closed during the compiling step";
          } else {
            result.warmupStepS = (performance.now() - s0) / 1000;
            log(
              `warm-up step (${short.tokens[0].length} tokens): ${result.warmupStepS.toFixed(2)} s`,
            );
          }
        }
        for (let i = 0; !boxed && i < o.maxSteps; i++) {
          const batch = randomBatch(o.cfg.vocab, 1, seq, 900 + i);
          const s0 = performance.now();
          const before = ctx.statsSnapshot();
          const r = await stepOrBox(engine.trainStep([batch], 1e-4), o.deadline);
          if (r === "boxed") {
            boxed = true;
            row.recorded = statsDelta(before, ctx.statsSnapshot()).submits >= 1;
            const predicted = previous && (previous.stepS * seq) / previous.seq;
            row.note = `step ${i + 1} unfinished when the time box closed after ${
              ((performance.now() - s0) / 1000).toFixed(0)
            } s${predicted ? ` (~${predicted.toFixed(0)} s expected from the last length)` : ""}`;
            break;
          }
          if (!Number.isFinite(r.loss)) throw new Error(`seq ${seq} step ${i + 1}: loss ${r.loss}`);
          const stepS = (performance.now() - s0) / 1000;
          row.stepsS.push(stepS);
          row.tokensPerSecond = seq /
            median(row.stepsS.length > 1 ? row.stepsS.slice(1) : row.stepsS);
          readPeak();
          previous = { seq, stepS: seq / row.tokensPerSecond };
          log(
            `seq ${seq} step ${i + 1}: ${stepS.toFixed(2)} s, loss ${r.loss.toFixed(3)}, ledger ` +
              `peak ${gib(row.peakBytes)} GiB`,
          );
          update();
          // Another step only if one as long as the last should end inside the box.
          if (Date.now() + 1.3 * stepS * 1000 > o.deadline && i + 1 < o.maxSteps) {
            row.note = `stopped after ${i + 1} steps: the time box would not hold another`;
            break;
          }
        }
      } catch (e) {
        // This length cannot run here (the next, shorter or not, may): recorded, not fatal.
        row.error = e instanceof Error ? e.message.split("\n")[0] : String(e);
        log(`seq ${seq}: failed: ${row.error}`);
      }
      try {
        readPeak();
        if (boxed) {
          row.inFlight = result.inFlight = true;
          log(`seq ${seq}: boxed, ledger peak ${gib(row.peakBytes)} GiB so far`);
        }
        update();
      } finally {
        // Buffers an unfinished step still uses are left alone: the process ends soon after.
        if (!boxed) {
          engine.destroy();
          releaseFreedMemory();
        }
      }
      if (boxed) break;
    }
    for (const seq of o.lengths.slice(result.rows.length)) {
      result.rows.push({ ...emptyRow(seq), note: "not run: the time box had closed" });
    }
    update();
    return result;
  } finally {
    if (!result.inFlight) model.destroy();
  }
}
