/**
 * What `deno task gpu-check` measures and how long each stage may take: the real shapes on a GPU
 * ("full"), or the same stages at tiny shapes ("small", a couple of minutes on a CPU adapter, for
 * CI). Stages run in this order; each gets at most its cap, and never so much that the stages
 * after it could not have their minimum (stageTimeoutS).
 */
import type { LlamaConfig } from "../../src/model/config.ts";
import { llamaPresets } from "../../src/train/estimate.ts";
import { MID_BENCH, TINY_BENCH } from "./random_model.ts";
import type { GemmShape } from "./gemm_bench.ts";
import { BENCH_LENGTHS, LLAMA3_8B_1L } from "./train_lengths_bench.ts";

export type CheckMode = "full" | "small";

export type StageName =
  | "adapter"
  | "tests-1"
  | "gemm"
  | "gemv"
  | "train_50m"
  | "train_7b"
  | "train_8b_1l"
  | "generate"
  | "tests-2"
  | "tests-3";

export interface StagePlan {
  name: StageName;
  /** Longest this stage may run, s. */
  capS: number;
  /** Time kept back for it while earlier stages run, s. */
  minS: number;
}

export interface CheckPlan {
  mode: CheckMode;
  /** Whole run, s (a lent machine's call is 8 minutes, the kit's unpacking included). */
  budgetS: number;
  stages: StagePlan[];
  gemm: { m: number; shapes: GemmShape[]; targetMs: number; rounds: number };
  gemv: {
    out: number;
    in: number;
    copies: number;
    copyBytes: number;
    targetMs: number;
    rounds: number;
  };
  train50m: {
    name: string;
    cfg: LlamaConfig;
    batch: number;
    seq: number;
    rounds: number;
    /** Random weights made on the GPU (seconds of host quantization saved at ~50M). */
    gpuWeights: boolean;
  };
  train7b: { cfg: LlamaConfig; batch: number; seq: number; maxSteps: number; paged: boolean };
  /** One layer of Llama-3-8B at several sequence lengths (tokens/s and ledger peak per length). */
  train8b1l: { cfg: LlamaConfig; lengths: number[]; maxSteps: number };
  /**
   * Generation (prefill, KV-cached decode, uncached) per model, in this order; each but the last
   * ends its timing `laterCaseS` before the stage's deadline, which the later ones then use.
   */
  generate: { cases: GenerateCasePlan[]; laterCaseS: number };
  tests: { jobs: number; fileTimeoutS: number };
  /**
   * Decide every laddered kernel in the adapter stage (so that later stages read the choices
   * from the ladder's disk cache). On a CPU adapter that compiles every variant of every kernel,
   * minutes with a cold shader cache, so small mode lets each stage decide what it uses.
   */
  warmLadder: boolean;
}

export interface GenerateCasePlan {
  name: string;
  cfg: LlamaConfig;
  promptTokens: number;
  newTokens: number;
  rounds: number;
  gpuWeights: boolean;
}

/** The two weight shapes, W [out, in]; the keys of the JSON's GEMM figures. */
export const GEMM_KEYS = ["4096x4096", "14336x4096"] as const;

/** Llama-2-7B's layer structure at toy size (multi-head attention, SwiGLU ~2.7x), for small mode. */
const TOY_7B: LlamaConfig = {
  ...llamaPresets["7b"].cfg,
  hidden: 64,
  intermediate: 176,
  layers: 2,
  heads: 4,
  kvHeads: 4,
  headDim: 16,
  vocab: 256,
  maxPositions: 128,
};

/** Llama-3-8B's layer structure at toy size (GQA 4/2, llama3 RoPE scaling), for small mode. */
const TOY_8B_1L: LlamaConfig = {
  ...LLAMA3_8B_1L,
  hidden: 64,
  intermediate: 224,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
  vocab: 320,
  maxPositions: 256,
  ropeScaling: { ...LLAMA3_8B_1L.ropeScaling!, originalMaxPositionEmbeddings: 32 } as LlamaConfig[
    "ropeScaling"
  ],
};

export function checkPlan(mode: CheckMode): CheckPlan {
  if (mode === "full") {
    return {
      mode,
      budgetS: 420,
      stages: [
        { name: "adapter", capS: 60, minS: 15 },
        { name: "tests-1", capS: 110, minS: 30 },
        { name: "gemm", capS: 70, minS: 20 },
        { name: "gemv", capS: 40, minS: 10 },
        { name: "train_50m", capS: 60, minS: 15 },
        { name: "train_7b", capS: 240, minS: 60 },
        // Model made in seconds (two 128k x 4096 bf16 tables on the host); a step at 8,192
        // tokens is ~30 TFLOP of work (most of it the 128k lm_head, forward and back): seconds.
        { name: "train_8b_1l", capS: 60, minS: 20 },
        // The 7B shape made on the GPU as for train_7b, then a warm-up and up to 2 rounds, each
        // a 512-token prefill (~7 TFLOP), the same prefill and 64 decode steps (3.5 GB of
        // weights read per token), and one uncached forward: seconds each (an estimate; not yet
        // run on a GPU). Rounds end early at the deadline; the budget stays 420 s.
        { name: "generate", capS: 45, minS: 20 },
        { name: "tests-2", capS: 100, minS: 30 },
        { name: "tests-3", capS: 100, minS: 30 },
      ],
      gemm: {
        m: 4096,
        shapes: [
          { key: GEMM_KEYS[0], out: 4096, in: 4096 },
          { key: GEMM_KEYS[1], out: 14336, in: 4096 },
        ],
        targetMs: 200,
        rounds: 3,
      },
      // Eight 14336x4096 weights: 235 MB of codes, several times an H100/H200's 50-60 MB L2.
      gemv: { out: 14336, in: 4096, copies: 8, copyBytes: 256 << 20, targetMs: 50, rounds: 5 },
      train50m: { name: "~50M", cfg: MID_BENCH, batch: 4, seq: 1024, rounds: 3, gpuWeights: true },
      train7b: { cfg: llamaPresets["7b"].cfg, batch: 4, seq: 1024, maxSteps: 3, paged: true },
      train8b1l: { cfg: LLAMA3_8B_1L, lengths: [...BENCH_LENGTHS], maxSteps: 3 },
      generate: {
        cases: [
          {
            name: "Llama-2-7B shape",
            cfg: llamaPresets["7b"].cfg,
            promptTokens: 512,
            newTokens: 64,
            rounds: 2,
            gpuWeights: true,
          },
          {
            name: "~50M",
            cfg: MID_BENCH,
            promptTokens: 512,
            newTokens: 64,
            rounds: 3,
            gpuWeights: true,
          },
        ],
        laterCaseS: 8,
      },
      tests: { jobs: 4, fileTimeoutS: 75 },
      warmLadder: true,
    };
  }
  return {
    mode,
    // Caps far above the 5-30 s a small run takes with warm shader caches: with a cold one (a
    // fresh CI machine) Mesa compiles each kernel at its first dispatch, and on lavapipe the dense
    // `blocked` matmul alone took 199 s (2 busy cores), the 4-bit regblock one 39 s.
    budgetS: 1500,
    stages: [
      { name: "adapter", capS: 120, minS: 10 },
      { name: "tests-1", capS: 240, minS: 15 },
      { name: "gemm", capS: 480, minS: 10 },
      { name: "gemv", capS: 240, minS: 10 },
      { name: "train_50m", capS: 480, minS: 10 },
      { name: "train_7b", capS: 300, minS: 15 },
      { name: "train_8b_1l", capS: 240, minS: 15 },
      { name: "generate", capS: 240, minS: 15 },
      { name: "tests-2", capS: 120, minS: 15 },
      { name: "tests-3", capS: 120, minS: 15 },
    ],
    // Fewer than 32 rows everywhere: the CPU adapters' wide register-tile kernels take a minute
    // each to compile cold on llvmpipe; the narrow ones a few seconds.
    gemm: {
      m: 16,
      shapes: [
        { key: GEMM_KEYS[0], out: 128, in: 128 },
        { key: GEMM_KEYS[1], out: 448, in: 128 },
      ],
      targetMs: 10,
      rounds: 2,
    },
    gemv: { out: 448, in: 128, copies: 2, copyBytes: 1 << 20, targetMs: 5, rounds: 2 },
    train50m: { name: "tiny", cfg: TINY_BENCH, batch: 1, seq: 24, rounds: 2, gpuWeights: true },
    train7b: { cfg: TOY_7B, batch: 1, seq: 24, maxSteps: 3, paged: true },
    train8b1l: { cfg: TOY_8B_1L, lengths: [16, 32, 64], maxSteps: 2 },
    generate: {
      cases: [
        {
          name: "tiny",
          cfg: TINY_BENCH,
          promptTokens: 24,
          newTokens: 8,
          rounds: 2,
          gpuWeights: true,
        },
      ],
      laterCaseS: 0,
    },
    tests: { jobs: 1, fileTimeoutS: 240 },
    warmLadder: false,
  };
}

/**
 * Seconds stage `i` of `stages` (those selected to run) may take now: its cap, less what the
 * stages after it need at least.
 */
export function stageTimeoutS(stages: StagePlan[], i: number, secondsLeft: number): number {
  const later = stages.slice(i + 1).reduce((s, st) => s + st.minS, 0);
  return Math.min(stages[i].capS, secondsLeft - later);
}
