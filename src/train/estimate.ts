/**
 * GPU memory estimator: the bytes the training engine allocates, by ledger category, for a
 * model config and training settings, computed from the same formulas as the code that
 * allocates (src/train/engine.ts, src/model/graph.ts, src/model/activations.ts,
 * src/kernels/quant_weight.ts, src/train/paged_adamw.ts) without touching a GPU. Every buffer
 * is rounded up as GpuContext.createBuffer rounds it, so on the engine's shapes the estimate
 * matches the ledger to the byte (tests/train/estimate_test.ts checks that on two models).
 *
 * Also the QLoRA paper's comparison (full fine-tuning in 16-bit, 16-bit LoRA, QLoRA) and the
 * Llama configs the paper argues with.
 */
import { MEMORY_CATEGORIES, type MemoryBytes, type MemoryCategory } from "../gpu/memory.ts";
import { LINEAR_MODULES, linearShape, type LlamaConfig } from "../model/config.ts";
import { LoraLayout, type LoraSpec } from "../model/lora.ts";
import {
  activationPlan,
  BackwardScratch,
  LayerActivations,
  type Shape,
} from "../model/activations.ts";
import { attentionScratchBytes } from "../kernels/attention.ts";
import { crossEntropyChunks, crossEntropyScratchBytes } from "../kernels/cross_entropy.ts";
import { tableChunkBytes, tableChunkRows } from "../kernels/row_chunks.ts";
import { globalNormScratchBytes } from "../kernels/grad_norm.ts";
import { halfBufferBytes } from "../kernels/convert_f16.ts";
import { NESTED_BLOCKSIZE } from "../quant/double_quant.ts";
import { ALLOWED_BLOCKSIZES } from "../quant/blockwise.ts";
import type { QuantType } from "../quant/codes.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkByteCounts } from "../model/config_bounds.ts";
import { resolveActivationPrecision } from "../model/graph.ts";
import { type LoraStorage, loraWindowFloats } from "../model/lora_params.ts";
import type { SettingNames } from "./settings.ts";
import { bf16BufferBytes } from "../kernels/bf16.ts";
import {
  checkBf16MasterBudget,
  OPTIMIZER_POOL_SLOTS,
  optimizerPageFloats,
  pagedArrays,
} from "./paged_adamw.ts";

export interface EstimateSettings {
  lora: LoraSpec;
  /** Sequences per micro-batch (the engine's maxShape.batch). */
  microBatchSize: number;
  /** Tokens per sequence (the engine's maxShape.seq). */
  maxSeqLen: number;
  gradientCheckpointing: boolean;
  /**
   * Precision of the layer inputs kept for the backward recompute under gradient checkpointing
   * (ignored without it: the graph keeps f32 inputs then). The engine's "auto" is f16 on an
   * adapter with shader-f16; give that device's answer (resolveActivationPrecision). Default f32,
   * the larger, so an estimate made without knowing the device never comes out short.
   */
  activationPrecision?: "f32" | "f16";
  /** 0 = AdamW moments resident on the GPU; otherwise the paged pool's budget. */
  optimizerGpuBudgetBytes: number;
  /**
   * The LoRA parameters on the GPU (EngineOptions.loraStorage): "f32" (default), or a bf16
   * compute copy plus a one-layer f32 window, the f32 master then paged with the moments.
   */
  loraStorage?: LoraStorage;
  /**
   * The user's names for lora_dtype and the optimizer budget, which a bf16 refusal quotes (the
   * flags, or the request's fields); the snake_case keys when absent.
   */
  settingNames?: SettingNames<"loraDtype" | "optimizerGpuBudgetBytes">;
  /** nf4 or fp4: the same bytes. Default nf4. */
  quantType?: QuantType;
  /** Default 64. */
  blocksize?: number;
  /** Default true. */
  doubleQuant?: boolean;
  /** Vocabulary columns per cross-entropy pass; default as ModelGraph (2048). */
  vocabChunk?: number;
  /**
   * The device's GpuContext.maxBindingBytes: tables larger than it are split into row chunks
   * (each its own padded buffer) and the cross-entropy block shrinks to fit; default no limit.
   */
  maxBindingBytes?: number;
  /** Token rows per MLP chunk (GraphOptions.mlpChunkRows); default as ModelGraph. */
  mlpChunkRows?: number;
}

/** One group of identical buffers. */
export interface EstimateDetail {
  category: MemoryCategory;
  name: string;
  /** How many buffers of `each` bytes. */
  count: number;
  each: number;
  bytes: number;
}

export interface MemoryEstimate {
  bytes: MemoryBytes;
  /** Sum over categories: everything is allocated before the first step ends, nothing freed. */
  total: number;
  details: EstimateDetail[];
  /** Frozen base parameters (linears, embeddings, lm_head unless tied, norms). */
  baseParameters: number;
  /** Of which in the 4-bit linears. */
  quantizedParameters: number;
  loraParameters: number;
  optimizerPaged: boolean;
}

/** As GpuContext.createBuffer allocates (and the ledger counts): 16-byte multiples, >= 16. */
export function paddedBufferBytes(bytes: number): number {
  return Math.max(16, Math.ceil(bytes / 16) * 16);
}

/**
 * GPU bytes of one 4-bit weight as uploadQuantWeight (src/kernels/quant_weight.ts) lays it out:
 * three padded buffers; the code tables and the nested offset are shader constants, not memory.
 */
export function quantWeightBytes(
  shape: readonly [number, number],
  blocksize = 64,
  doubleQuant = true,
): { packed: number; absmax: number; nestedAbsmax: number; total: number } {
  const n = shape[0] * shape[1];
  const blocks = Math.ceil(n / blocksize);
  const packed = paddedBufferBytes(Math.ceil(n / 2));
  // Double quant: one 8-bit code per block and an f32 per NESTED_BLOCKSIZE blocks; without it,
  // an f32 absmax per block and a 16-byte dummy for the unused binding.
  const absmax = paddedBufferBytes(doubleQuant ? blocks : blocks * 4);
  const nestedAbsmax = paddedBufferBytes(
    doubleQuant ? Math.ceil(blocks / NESTED_BLOCKSIZE) * 4 : 16,
  );
  return { packed, absmax, nestedAbsmax, total: packed + absmax + nestedAbsmax };
}

/** All parameters of the model (linears, embeddings, lm_head unless tied, norms). */
export function modelParameterCount(cfg: LlamaConfig): { total: number; linear: number } {
  let perLayer = 0;
  for (const m of LINEAR_MODULES) {
    const [o, i] = linearShape(cfg, m);
    perLayer += o * i;
  }
  const linear = perLayer * cfg.layers;
  const embeddings = cfg.vocab * cfg.hidden * (cfg.tieEmbeddings ? 1 : 2);
  const norms = (2 * cfg.layers + 1) * cfg.hidden;
  return { total: linear + embeddings + norms, linear };
}

function positiveInt(v: number, field: string): number {
  if (!Number.isInteger(v) || v < 1) throw invalidArgument(`${field} must be >= 1, got ${v}`);
  return v;
}

/** Predicts what TrainingEngine (with its base model) allocates on the GPU, by category. */
export function estimateMemory(cfg: LlamaConfig, settings: EstimateSettings): MemoryEstimate {
  const batch = positiveInt(settings.microBatchSize, "micro_batch_size");
  const seq = positiveInt(settings.maxSeqLen, "max_seq_len");
  const budget = settings.optimizerGpuBudgetBytes;
  if (!(budget >= 0)) throw invalidArgument(`optimizer_gpu_budget_bytes must be >= 0`);
  const blocksize = settings.blocksize ?? 64;
  if (!ALLOWED_BLOCKSIZES.includes(blocksize)) {
    throw invalidArgument(`blocksize ${blocksize} is not one of ${ALLOWED_BLOCKSIZES.join(", ")}`);
  }
  const doubleQuant = settings.doubleQuant ?? true;
  const shape: Shape = { batch, seq };
  const rows = batch * seq;
  const layout = new LoraLayout(cfg, settings.lora);
  const n = layout.totalFloats;

  const details: EstimateDetail[] = [];
  const add = (category: MemoryCategory, name: string, count: number, each: number) => {
    if (count > 0) details.push({ category, name, count, each, bytes: count * each });
  };
  const f32 = (floats: number) => paddedBufferBytes(floats * 4);

  // Base model: src/model/load.ts (uploadBaseModel / loadBaseModel and assemble); embeddings and
  // lm_head are 16-bit tables in row chunks (src/kernels/row_chunks.ts).
  const bindingLimit = settings.maxBindingBytes ?? Infinity;
  const tables = cfg.tieEmbeddings ? ["embed_tokens (tied lm_head)"] : ["embed_tokens", "lm_head"];
  for (const name of tables) {
    const chunks = tableChunkRows(cfg.vocab, cfg.hidden, bindingLimit);
    for (const rows of new Set(chunks)) {
      add(
        "base_weights",
        `${name} (bf16, ${rows} rows a chunk)`,
        chunks.filter((r) => r === rows).length,
        paddedBufferBytes(tableChunkBytes(rows, cfg.hidden)),
      );
    }
  }
  add("base_weights", "rms norm weights (f32)", 2 * cfg.layers + 1, f32(cfg.hidden));
  add("base_weights", "rope inverse frequencies", 1, f32(cfg.headDim / 2));
  const quantName = `${(settings.quantType ?? "nf4").toUpperCase()}${doubleQuant ? "+DQ" : ""}`;
  for (const m of LINEAR_MODULES) {
    const shapeM = linearShape(cfg, m);
    add(
      "base_weights",
      `${m}_proj [${shapeM.join("x")}] ${quantName} bs${blocksize}`,
      cfg.layers,
      quantWeightBytes(shapeM, blocksize, doubleQuant).total,
    );
  }

  if (cfg.qkvBias) {
    for (const m of ["q", "k", "v"] as const) {
      add("base_weights", `${m}_proj bias (f32)`, cfg.layers, f32(linearShape(cfg, m)[0]));
    }
  }

  // LoRA, gradients, optimizer: src/train/engine.ts, src/model/lora_params.ts,
  // src/train/paged_adamw.ts.
  const bf16 = (settings.loraStorage ?? "f32") === "bf16";
  if (bf16) {
    checkBf16MasterBudget(n, budget, settings.settingNames);
    add(
      "lora",
      "LoRA A/B compute copy (bf16, packed, flat)",
      1,
      paddedBufferBytes(bf16BufferBytes(n)),
    );
    add("lora", "LoRA layer window (f32, largest layer)", 1, f32(loraWindowFloats(layout)));
  } else {
    add("lora", "LoRA A/B (f32, flat, 64-float slots)", 1, f32(n));
  }
  add("gradients", "LoRA gradients (f32)", 1, f32(n));
  const arrays = pagedArrays(bf16);
  const stateBytes = arrays * n * 4;
  const paged = budget > 0 && budget < stateBytes;
  if (!paged) {
    add("optimizer", "AdamW m, v (f32, resident)", 2, f32(n));
  } else {
    // AdamWOptimizer: page size from the budget, two slots per paged array in the pool.
    const pageFloats = optimizerPageFloats(budget, arrays);
    add(
      "optimizer",
      `AdamW m, v${bf16 ? " and the f32 master's" : ""} page pools ` +
        `(${OPTIMIZER_POOL_SLOTS} x ${pageFloats} floats)`,
      arrays,
      f32(OPTIMIZER_POOL_SLOTS * pageFloats),
    );
  }

  // Activations: src/model/graph.ts; the saved sets and the shared scratch from the buffer lists
  // of src/model/activations.ts, each buffer rounded as allocated.
  const plan = activationPlan(cfg, shape, settings.lora, settings);
  const precision = resolveActivationPrecision(
    settings.activationPrecision ?? "f32",
    false,
    settings.gradientCheckpointing,
  );
  if (precision === "f16") {
    // f16 checkpoints: one f32 buffer of the residual stream (alternating with the final norm
    // output) and each layer's input as packed halves.
    add("activations", "residual stream (f32)", 1, f32(rows * cfg.hidden));
    add(
      "activations",
      "layer inputs (f16 checkpoints)",
      cfg.layers,
      paddedBufferBytes(halfBufferBytes(rows * cfg.hidden)),
    );
  } else {
    add("activations", "layer inputs (f32)", cfg.layers + 1, f32(rows * cfg.hidden));
  }
  add(
    "activations",
    `saved layer activations (${
      settings.gradientCheckpointing ? "1 set, checkpointing" : "per layer"
    })`,
    settings.gradientCheckpointing ? 1 : cfg.layers,
    LayerActivations.bytes(plan),
  );
  add("activations", "tokens, positions, segments, labels", 4, f32(rows));
  add("activations", "final norm output", 1, f32(rows * cfg.hidden));
  add("activations", "final norm rstd", 1, f32(rows));

  // Scratch: graph.ts, engine.ts, and the attention backward's per-context (lse, delta) buffer.
  const scratch = BackwardScratch.bytes(plan);
  add(
    "scratch",
    `backward scratch${plan.dropout ? " (with the LoRA dropout buffer)" : ""}`,
    1,
    scratch.backward,
  );
  add(
    "scratch",
    `d q/k/v, or the MLP chunk's tensors (2 shared buffers, ${plan.chunkRows} rows a chunk)`,
    1,
    scratch.shared,
  );
  add(
    "scratch",
    `MLP chunk ${plan.gradientCheckpointing ? "h, " : ""}n2 and rstd (${plan.chunkRows} rows)`,
    1,
    scratch.mlpNorm,
  );
  add("scratch", "row loss, row correct, loss sum", 3, f32(rows));
  const ce = crossEntropyChunks(rows, cfg.vocab, {
    vocabChunk: settings.vocabChunk,
    maxBindingBytes: bindingLimit,
  });
  add(
    "scratch",
    `cross-entropy block (${ce.rowChunk} rows x ${ce.vocabChunk} columns)`,
    1,
    f32(Math.ceil(crossEntropyScratchBytes(ce.rowChunk, ce.vocabChunk) / 4)),
  );
  add(
    "scratch",
    "attention backward (lse, delta) (per context)",
    1,
    paddedBufferBytes(attentionScratchBytes({ batchSize: batch, seq, heads: cfg.heads })),
  );
  add("scratch", "grad norm, clip scale", 1, paddedBufferBytes(8) + paddedBufferBytes(4));
  add("scratch", "grad norm partial sums", 1, paddedBufferBytes(globalNormScratchBytes([n])));

  const bytes = Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as MemoryBytes;
  for (const d of details) bytes[d.category] += d.bytes;
  checkByteCounts(bytes, "memory estimate");
  const params = modelParameterCount(cfg);
  return {
    bytes,
    total: MEMORY_CATEGORIES.reduce((s, c) => s + bytes[c], 0),
    details,
    baseParameters: params.total,
    quantizedParameters: params.linear,
    loraParameters: layout.parameterCount,
    optimizerPaged: paged,
  };
}

// ---- the QLoRA paper's comparison ----------------------------------------------------------

export type TrainingSetup = "full_ft_fp16" | "lora_fp16" | "qlora_nf4_dq";

export interface SetupEstimate {
  setup: TrainingSetup;
  label: string;
  bytes: MemoryBytes;
  total: number;
  /** The assumptions behind the row. */
  note: string;
}

export interface CompareOptions {
  /** Default r 64, alpha 16, all seven linear modules. */
  lora?: LoraSpec;
  /** Default true. */
  gradientCheckpointing?: boolean;
  /** QLoRA row only; default 0 (optimizer resident). */
  optimizerGpuBudgetBytes?: number;
  /** QLoRA row only: its checkpoints' precision (EstimateSettings); default f32. */
  activationPrecision?: "f32" | "f16";
  /** QLoRA row only: the LoRA parameters' storage (EstimateSettings); default f32. */
  loraStorage?: LoraStorage;
}

export const PAPER_LORA: LoraSpec = {
  r: 64,
  alpha: 16,
  dropout: 0.05,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

/**
 * Full fine-tuning in 16-bit, 16-bit LoRA, and QLoRA as qlorad runs it, for one model. The
 * 16-bit rows take the activations and scratch of qlorad's graph at 2 bytes an element.
 */
export function compareTrainingSetups(
  cfg: LlamaConfig,
  seq: number,
  batch: number,
  opts: CompareOptions = {},
): SetupEstimate[] {
  const lora = opts.lora ?? PAPER_LORA;
  const gradientCheckpointing = opts.gradientCheckpointing ?? true;
  const common = { microBatchSize: batch, maxSeqLen: seq, gradientCheckpointing };
  const qloraWith = (activationPrecision?: "f32" | "f16") =>
    estimateMemory(cfg, {
      ...common,
      lora,
      optimizerGpuBudgetBytes: opts.optimizerGpuBudgetBytes ?? 0,
      activationPrecision,
      loraStorage: opts.loraStorage,
    });
  const qlora = qloraWith(opts.activationPrecision);
  // The 16-bit rows halve the all-f32 graph.
  const qlora32 = opts.activationPrecision === "f16" ? qloraWith("f32") : qlora;
  const checkpoints = gradientCheckpointing && opts.activationPrecision === "f16"
    ? ", f16 layer-input checkpoints"
    : "";
  // The same graph without LoRA tensors (rank 0 slots), for full fine-tuning.
  const noLora = estimateMemory(cfg, {
    ...common,
    lora: { ...lora, targets: [], r: 1 },
    optimizerGpuBudgetBytes: 0,
  });
  const half = (b: MemoryBytes) => ({
    activations: Math.round(b.activations / 2),
    scratch: Math.round(b.scratch / 2),
  });
  const P = qlora.baseParameters;
  const L = qlora.loraParameters;
  const row = (
    setup: TrainingSetup,
    label: string,
    parts: Omit<MemoryBytes, "activations" | "scratch">,
    acts: { activations: number; scratch: number },
    note: string,
  ): SetupEstimate => {
    const bytes: MemoryBytes = { ...parts, ...acts };
    return {
      setup,
      label,
      bytes,
      total: MEMORY_CATEGORIES.reduce((s, c) => s + bytes[c], 0),
      note,
    };
  };
  const ckpt = gradientCheckpointing ? "with" : "without";
  return [
    row(
      "full_ft_fp16",
      "full fine-tuning (fp16)",
      { base_weights: 2 * P, lora: 0, gradients: 2 * P, optimizer: 8 * P },
      half(noLora.bytes),
      `every parameter trained: fp16 weights 2 B + fp16 gradients 2 B + Adam moments in fp32 ` +
        `8 B per parameter (no fp32 master copy, which would add 4 B); activations and scratch ` +
        `of qlorad's graph in 16-bit, ${ckpt} gradient checkpointing`,
    ),
    row(
      "lora_fp16",
      "LoRA (16-bit base)",
      { base_weights: 2 * P, lora: 2 * L, gradients: 2 * L, optimizer: 8 * L },
      half(qlora32.bytes),
      `frozen fp16 base 2 B per parameter; LoRA r=${lora.r} on ${lora.targets.length} linear ` +
        `module(s): fp16 parameters and gradients 2 B + 2 B, Adam moments in fp32 8 B per LoRA ` +
        `parameter; activations and scratch of qlorad's graph in 16-bit, ${ckpt} checkpointing`,
    ),
    row(
      "qlora_nf4_dq",
      "QLoRA (NF4 + DQ, qlorad)",
      {
        base_weights: qlora.bytes.base_weights,
        lora: qlora.bytes.lora,
        gradients: qlora.bytes.gradients,
        optimizer: qlora.bytes.optimizer,
      },
      { activations: qlora.bytes.activations, scratch: qlora.bytes.scratch },
      `qlorad's own estimate: linears in NF4 with double quant (4 + 8/64 + 32/(64*256) ≈ 4.127 ` +
        `bits per parameter), embeddings and lm_head in bf16, norms in f32; LoRA parameters, gradients ` +
        `and AdamW moments in f32 (${
          qlora.optimizerPaged ? "moments paged through a GPU pool" : "moments resident"
        }); f32 activations${checkpoints}, ${ckpt} checkpointing`,
    ),
  ];
}

// ---- presets -------------------------------------------------------------------------------

export type LlamaPresetName = "7b" | "13b" | "33b" | "65b" | "70b";

export interface LlamaPreset {
  name: string;
  cfg: LlamaConfig;
}

function preset(
  hidden: number,
  intermediate: number,
  layers: number,
  heads: number,
  kvHeads: number,
  maxPositions: number,
  rmsEps: number,
): LlamaConfig {
  return {
    hidden,
    intermediate,
    layers,
    heads,
    kvHeads,
    headDim: hidden / heads,
    vocab: 32000,
    rmsEps,
    ropeTheta: 10000,
    tieEmbeddings: false,
    maxPositions,
    bosTokenId: 1,
    eosTokenIds: [2],
    torchDtype: "float16",
  };
}

/** The Llama configs of the QLoRA paper's argument (Llama-1 33B and 65B, Llama-2 otherwise). */
export const llamaPresets: Record<LlamaPresetName, LlamaPreset> = {
  "7b": { name: "Llama-2 7B", cfg: preset(4096, 11008, 32, 32, 32, 4096, 1e-5) },
  "13b": { name: "Llama-2 13B", cfg: preset(5120, 13824, 40, 40, 40, 4096, 1e-5) },
  "33b": { name: "Llama 33B", cfg: preset(6656, 17920, 60, 52, 52, 2048, 1e-6) },
  "65b": { name: "Llama 65B", cfg: preset(8192, 22016, 80, 64, 64, 2048, 1e-5) },
  "70b": { name: "Llama-2 70B", cfg: preset(8192, 28672, 80, 64, 8, 4096, 1e-5) },
};
