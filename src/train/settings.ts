/**
 * Every job's settings (Train, Evaluate, Quantize, Export, EstimateMemory): their defaults and ranges,
 * written once. The gRPC handlers and the command line both map their input onto these
 * functions, so both fronts share one set of defaults; each passes a `name` function that turns
 * a setting's key into what its user wrote (`hyperparameters.learning_rate` over gRPC, `--lr` on
 * the command line), and every error names that.
 *
 * An input value left `undefined` takes the default. A value may be a number or, from the command
 * line, the text of one. What "unset" means on the wire (proto3's 0 or empty list) is the
 * handlers' concern: they turn it into `undefined` before calling here.
 */
import { LINEAR_MODULES, parseTargetModules } from "../model/config.ts";
import type { LoraSpec } from "../model/lora.ts";
import { LORA_STORAGES, type LoraStorage } from "../model/lora_params.ts";
import { ALLOWED_BLOCKSIZES } from "../quant/blockwise.ts";
import type { QuantType } from "../quant/codes.ts";
import { QloradError } from "../util/errors.ts";
import type { LrScheduler } from "./schedule.ts";
import type { Hyperparameters } from "./trainer.ts";

/** A setting that is out of range or malformed; `field` is the user's name for it. */
export class SettingError extends QloradError {
  readonly field: string;

  constructor(field: string, message: string) {
    super("invalid_argument", message);
    this.name = "SettingError";
    this.field = field;
  }
}

/** Turns a setting's key (e.g. "learningRate") into the user's name for it. */
export type SettingNames<K extends string> = (key: K) => string;

export type TrainHyperparameters = Hyperparameters & { packing: boolean };

/**
 * Each hyperparameter's snake_case name: the proto's Hyperparameters field and the key a
 * checkpoint records its run settings under (resuming compares them, so these never change).
 */
export const HYPERPARAMETER_FIELDS = {
  learningRate: "learning_rate",
  lrScheduler: "lr_scheduler",
  warmupSteps: "warmup_steps",
  maxSteps: "max_steps",
  epochs: "epochs",
  microBatchSize: "micro_batch_size",
  gradientAccumulationSteps: "gradient_accumulation_steps",
  maxSeqLen: "max_seq_len",
  maxGradNorm: "max_grad_norm",
  weightDecay: "weight_decay",
  seed: "seed",
  gradientCheckpointing: "gradient_checkpointing",
  saveSteps: "save_steps",
  evalSteps: "eval_steps",
  optimizerGpuBudgetBytes: "optimizer_gpu_budget_bytes",
  packing: "packing",
  loraDtype: "lora_dtype",
} as const satisfies Record<keyof TrainHyperparameters, string>;

export type HyperparameterKey = keyof typeof HYPERPARAMETER_FIELDS;

/** The LoRA settings' snake_case names (PEFT's LoraConfig, the proto's LoraConfig). */
export const LORA_FIELDS = {
  r: "r",
  alpha: "alpha",
  dropout: "dropout",
  targets: "target_modules",
  useRslora: "use_rslora",
} as const satisfies Record<keyof LoraSpec, string>;

export type LoraKey = keyof typeof LORA_FIELDS;

/** The hyperparameters under their snake_case names. */
export type SnakeCaseHyperparameters = {
  [K in HyperparameterKey as (typeof HYPERPARAMETER_FIELDS)[K]]: TrainHyperparameters[K];
};

/** The hyperparameters keyed by their snake_case names. */
export function snakeCaseHyperparameters(hp: TrainHyperparameters): SnakeCaseHyperparameters {
  return Object.fromEntries(
    Object.entries(HYPERPARAMETER_FIELDS).map(([k, snake]) => [snake, hp[k as HyperparameterKey]]),
  ) as SnakeCaseHyperparameters;
}

/** Hyperparameter inputs read from an object keyed by the snake_case names (a message). */
export function hyperparametersFromSnakeCase(
  fields: Record<string, unknown>,
): { [K in HyperparameterKey]?: unknown } {
  return Object.fromEntries(
    Object.entries(HYPERPARAMETER_FIELDS).map(([k, snake]) => [k, fields[snake]]),
  );
}

// ------------------------------------------------------------------ ranges

interface Range {
  min: number;
  max: number;
  /** The minimum itself is not allowed: (min, max]. */
  openMin?: boolean;
  integer?: boolean;
}

const NUMBER_TEXT = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** A number in `range`, `fallback` when undefined; a SettingError naming `name` otherwise. */
export function inRange(value: unknown, name: string, range: Range, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  let v: number;
  if (typeof value === "number") v = value;
  else if (typeof value === "string" && NUMBER_TEXT.test(value.trim())) v = Number(value);
  else throw new SettingError(name, `${name}: ${JSON.stringify(value)} is not a number`);
  const { min, max, openMin, integer } = range;
  const shown = integer ? `${min}..${max}` : `${openMin ? "(" : "["}${min}, ${max}]`;
  if (integer && Number.isFinite(v) && !Number.isInteger(v)) {
    throw new SettingError(name, `${name}: ${value} is not a whole number (${shown})`);
  }
  if (!Number.isFinite(v) || v > max || (openMin ? v <= min : v < min)) {
    throw new SettingError(name, `${name}: ${value} is outside ${shown}`);
  }
  return v;
}

/** A boolean, `fallback` when undefined; a SettingError naming `name` otherwise. */
export function flag(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "boolean") {
    throw new SettingError(name, `${name}: ${JSON.stringify(value)} is not true or false`);
  }
  return value;
}

/** A list of strings: at most `maxItems`, each 1..`maxChars` characters (entries not echoed). */
function stringList(value: unknown, name: string, maxItems: number, maxChars: number): string[] {
  if (!Array.isArray(value)) throw new SettingError(name, `${name}: must be a list of names`);
  if (value.length > maxItems) {
    throw new SettingError(name, `${name}: at most ${maxItems} entries, got ${value.length}`);
  }
  if (value.some((s) => typeof s !== "string" || s.trim() === "" || s.length > maxChars)) {
    throw new SettingError(name, `${name}: each entry must be 1..${maxChars} characters`);
  }
  return [...value];
}

/** A check from another module, its invalid_argument error made a SettingError on `name`. */
function checked<T>(name: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof QloradError && err.kind === "invalid_argument") {
      throw new SettingError(name, err.message);
    }
    throw err;
  }
}

// ------------------------------------------------------------------ LoRA

export const LORA_DEFAULTS = {
  r: 8,
  alpha: 16,
  dropout: 0.05,
  targets: [...LINEAR_MODULES],
  useRslora: false,
} as const;

export type LoraInput = { [K in LoraKey]?: unknown };

/** The adapter's shape: r 1..1024, alpha in (0, 1e6], dropout in [0, 0.99], known linears. */
export function loraSettings(
  input: LoraInput,
  name: SettingNames<LoraKey>,
  defaults: Partial<LoraSpec> = {},
): LoraSpec {
  const d = { ...LORA_DEFAULTS, ...defaults };
  const targets = input.targets === undefined
    ? [...d.targets]
    : checked(name("targets"), () =>
      parseTargetModules(stringList(input.targets, name("targets"), 64, 64), name("targets")));
  return {
    r: inRange(input.r, name("r"), { min: 1, max: 1024, integer: true }, d.r),
    alpha: inRange(input.alpha, name("alpha"), { min: 0, max: 1e6, openMin: true }, d.alpha),
    dropout: inRange(input.dropout, name("dropout"), { min: 0, max: 0.99 }, d.dropout),
    targets,
    useRslora: flag(input.useRslora, name("useRslora"), d.useRslora),
  };
}

// ------------------------------------------------------------------ Train hyperparameters

/** The QLoRA paper's recipe where it has one; the proto documents each of these. */
export const HYPERPARAMETER_DEFAULTS: TrainHyperparameters = {
  learningRate: 2e-4,
  lrScheduler: "constant",
  warmupSteps: 0,
  maxSteps: 0,
  epochs: 1,
  microBatchSize: 1,
  gradientAccumulationSteps: 1,
  maxSeqLen: 512,
  maxGradNorm: 0.3,
  weightDecay: 0,
  seed: 42,
  gradientCheckpointing: true,
  saveSteps: 0,
  evalSteps: 0,
  optimizerGpuBudgetBytes: 0,
  packing: false,
  loraDtype: "f32",
};

const LR_SCHEDULERS: readonly LrScheduler[] = ["constant", "linear", "cosine"];

/** Sequence lengths every job accepts (a model's max_position_embeddings may lower the top). */
const SEQ_LEN: Range = { min: 2, max: 131072, integer: true };
const STEPS: Range = { min: 0, max: 1e7, integer: true };

export type HyperparameterInput = { [K in HyperparameterKey]?: unknown };

/** Training hyperparameters with their defaults; every one range-checked. */
export function hyperparameterSettings(
  input: HyperparameterInput,
  name: SettingNames<HyperparameterKey>,
  defaults: Partial<TrainHyperparameters> = {},
): TrainHyperparameters {
  const d = { ...HYPERPARAMETER_DEFAULTS, ...defaults };
  const n = (k: HyperparameterKey, range: Range) =>
    inRange(input[k], name(k), range, d[k] as number);
  const scheduler = input.lrScheduler ?? d.lrScheduler;
  if (!LR_SCHEDULERS.includes(scheduler as LrScheduler)) {
    throw new SettingError(
      name("lrScheduler"),
      `${name("lrScheduler")}: ${scheduler} is not supported (${LR_SCHEDULERS.join(", ")})`,
    );
  }
  const hp: TrainHyperparameters = {
    learningRate: n("learningRate", { min: 0, max: 1, openMin: true }),
    lrScheduler: scheduler as LrScheduler,
    warmupSteps: n("warmupSteps", STEPS),
    maxSteps: n("maxSteps", STEPS),
    epochs: n("epochs", { min: 0, max: 1000, openMin: true }),
    microBatchSize: n("microBatchSize", { min: 1, max: 1024, integer: true }),
    gradientAccumulationSteps: n("gradientAccumulationSteps", { min: 1, max: 4096, integer: true }),
    maxSeqLen: n("maxSeqLen", SEQ_LEN),
    maxGradNorm: n("maxGradNorm", { min: 0, max: 1e6 }),
    weightDecay: n("weightDecay", { min: 0, max: 1 }),
    seed: n("seed", { min: 0, max: 0xffffffff, integer: true }),
    gradientCheckpointing: flag(
      input.gradientCheckpointing,
      name("gradientCheckpointing"),
      d.gradientCheckpointing,
    ),
    saveSteps: n("saveSteps", STEPS),
    evalSteps: n("evalSteps", STEPS),
    optimizerGpuBudgetBytes: n("optimizerGpuBudgetBytes", {
      min: 0,
      max: Number.MAX_SAFE_INTEGER,
      integer: true,
    }),
    packing: flag(input.packing, name("packing"), d.packing),
    loraDtype: loraDtypeSetting(input.loraDtype, name("loraDtype"), d.loraDtype ?? "f32"),
  };
  if (hp.loraDtype === "bf16" && hp.optimizerGpuBudgetBytes === 0) {
    // The f32 master lives with the paged optimizer state; without paging it has no home.
    throw new SettingError(
      name("loraDtype"),
      `${name("loraDtype")}: bf16 keeps the f32 master parameters with the paged optimizer: ` +
        `set ${name("optimizerGpuBudgetBytes")} > 0 (e.g. 268435456, 256 MiB)`,
    );
  }
  if (hp.warmupSteps > 0 && hp.maxSteps > 0 && hp.warmupSteps > hp.maxSteps) {
    throw new SettingError(
      name("warmupSteps"),
      `${name("warmupSteps")} ${hp.warmupSteps} exceeds ${name("maxSteps")} ${hp.maxSteps}`,
    );
  }
  return hp;
}

/** "f32" or "bf16" (any case), `fallback` when undefined. */
function loraDtypeSetting(value: unknown, name: string, fallback: LoraStorage): LoraStorage {
  if (value === undefined || value === null) return fallback;
  const v = typeof value === "string" ? value.toLowerCase() : value;
  if (!LORA_STORAGES.includes(v as LoraStorage)) {
    throw new SettingError(
      name,
      `${name}: ${JSON.stringify(value)} is not one of ${LORA_STORAGES.join(", ")}`,
    );
  }
  return v as LoraStorage;
}

// ------------------------------------------------------------------ Evaluate

export interface EvaluateSettings {
  maxSeqLen: number;
  batchSize: number;
  samplePrompts: string[];
  maxNewTokens: number;
}

export type EvaluateKey = keyof EvaluateSettings;

export const EVALUATE_DEFAULTS: EvaluateSettings = {
  maxSeqLen: 512,
  batchSize: 1,
  samplePrompts: [],
  maxNewTokens: 64,
};

export function evaluateSettings(
  input: { [K in EvaluateKey]?: unknown },
  name: SettingNames<EvaluateKey>,
): EvaluateSettings {
  const d = EVALUATE_DEFAULTS;
  const prompts = input.samplePrompts ?? d.samplePrompts;
  const promptsName = name("samplePrompts");
  if (!Array.isArray(prompts)) {
    throw new SettingError(promptsName, `${promptsName}: must be a list of prompts`);
  }
  if (prompts.length > 64) {
    throw new SettingError(promptsName, `${promptsName}: at most 64, got ${prompts.length}`);
  }
  if (prompts.some((p) => typeof p !== "string" || p.length === 0 || p.length > 16384)) {
    throw new SettingError(promptsName, `${promptsName}: each prompt must be 1..16384 characters`);
  }
  return {
    maxSeqLen: inRange(input.maxSeqLen, name("maxSeqLen"), SEQ_LEN, d.maxSeqLen),
    batchSize: inRange(
      input.batchSize,
      name("batchSize"),
      { min: 1, max: 1024, integer: true },
      d.batchSize,
    ),
    samplePrompts: [...prompts],
    maxNewTokens: inRange(
      input.maxNewTokens,
      name("maxNewTokens"),
      { min: 1, max: 4096, integer: true },
      d.maxNewTokens,
    ),
  };
}

// ------------------------------------------------------------------ Quantize

export interface QuantizeSettings {
  quantType: QuantType;
  blocksize: number;
  doubleQuant: boolean;
  skipModules: string[];
}

export type QuantizeKey = keyof QuantizeSettings;

export const QUANTIZE_DEFAULTS: QuantizeSettings = {
  quantType: "nf4",
  blocksize: 64,
  doubleQuant: true,
  skipModules: ["lm_head"],
};

/** The 4-bit format: type nf4 or fp4, a blocksize of 32..4096 (powers of two), double quant. */
export function quantFormatSettings(
  input: { quantType?: unknown; blocksize?: unknown; doubleQuant?: unknown },
  name: SettingNames<QuantizeKey>,
): Omit<QuantizeSettings, "skipModules"> {
  const d = QUANTIZE_DEFAULTS;
  const type = input.quantType ?? d.quantType;
  const t = typeof type === "string" ? type.toLowerCase() : type;
  if (t !== "nf4" && t !== "fp4") {
    const field = name("quantType");
    throw new SettingError(field, `${field} ${JSON.stringify(type)}: unsupported (nf4 or fp4)`);
  }
  const blocksize = inRange(
    input.blocksize,
    name("blocksize"),
    { min: 0, max: Infinity, integer: true },
    d.blocksize,
  );
  if (!ALLOWED_BLOCKSIZES.includes(blocksize)) {
    const field = name("blocksize");
    throw new SettingError(
      field,
      `${field}: ${blocksize} is not allowed; use one of ${ALLOWED_BLOCKSIZES.join(", ")}`,
    );
  }
  return {
    quantType: t,
    blocksize,
    doubleQuant: flag(input.doubleQuant, name("doubleQuant"), d.doubleQuant),
  };
}

export function quantizeSettings(
  input: { [K in QuantizeKey]?: unknown },
  name: SettingNames<QuantizeKey>,
): QuantizeSettings {
  const skip = input.skipModules === undefined
    ? [...QUANTIZE_DEFAULTS.skipModules]
    : stringList(input.skipModules, name("skipModules"), 256, 256);
  return { ...quantFormatSettings(input, name), skipModules: skip };
}

// ------------------------------------------------------------------ Export

/**
 * What an export writes: "gguf" one GGUF model file for llama.cpp / Ollama (the base with the
 * adapter folded in, or the base alone), "gguf-lora" the adapter alone as a GGUF LoRA (llama.cpp's
 * `--lora`, on the base's GGUF), "hf" a Hugging Face checkpoint folder with the adapter merged.
 */
export type ExportFormat = "gguf" | "gguf-lora" | "hf";

/** Tensor types, lowercase as the command line takes them. */
export type ExportType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0";

export interface ExportSettings {
  format: ExportFormat;
  type: ExportType;
}

export type ExportKey = keyof ExportSettings;

export const EXPORT_FORMATS: readonly ExportFormat[] = ["gguf", "gguf-lora", "hf"];

/** The types each format can hold: llama.cpp loads a LoRA in F32/F16 only; safetensors has no ggml blocks. */
export const EXPORT_TYPES: Record<ExportFormat, readonly ExportType[]> = {
  gguf: ["f16", "q8_0", "q4_0", "f32"],
  "gguf-lora": ["f16", "f32"],
  hf: ["bf16", "f16", "f32"],
};

/**
 * The default type per format: F16 for GGUF (llama.cpp's converters' default, no loss a user can
 * measure), BF16 for Hugging Face folders (the dtype Llama checkpoints ship in).
 */
export const EXPORT_DEFAULTS: { format: ExportFormat; type: Record<ExportFormat, ExportType> } = {
  format: "gguf",
  type: { gguf: "f16", "gguf-lora": "f16", hf: "bf16" },
};

/** The format (default GGUF merged) and a type that format can hold (default per format). */
export function exportSettings(
  input: { [K in ExportKey]?: unknown },
  name: SettingNames<ExportKey>,
): ExportSettings {
  const format = input.format ?? EXPORT_DEFAULTS.format;
  if (!EXPORT_FORMATS.includes(format as ExportFormat)) {
    const field = name("format");
    throw new SettingError(
      field,
      `${field}: ${JSON.stringify(format)} is not one of ${EXPORT_FORMATS.join(", ")}`,
    );
  }
  const f = format as ExportFormat;
  const allowed = EXPORT_TYPES[f];
  const raw = input.type ?? EXPORT_DEFAULTS.type[f];
  const type = typeof raw === "string" ? raw.toLowerCase() : raw;
  if (!allowed.includes(type as ExportType)) {
    const field = name("type");
    throw new SettingError(
      field,
      `${field}: ${JSON.stringify(raw)} is not a ${f} type (${allowed.join(", ")})`,
    );
  }
  return { format: f, type: type as ExportType };
}

// ------------------------------------------------------------------ EstimateMemory

/**
 * `qlorad estimate`'s defaults where they differ from a Train job's: the QLoRA paper's memory
 * comparison (r 64 on every linear, no dropout, no gradient checkpointing unless asked), so its
 * tables line up with the paper's (docs/MEMORY.md).
 */
export const PAPER_ESTIMATE_DEFAULTS = {
  lora: { r: 64, dropout: 0 },
  hp: { gradientCheckpointing: false },
} as const;
