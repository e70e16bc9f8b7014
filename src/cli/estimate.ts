/**
 * `qlorad estimate`: prints the GPU memory estimate by category for a model config.json or the
 * Llama presets, and with --compare the QLoRA paper's table (full fine-tuning in 16-bit, 16-bit
 * LoRA, QLoRA). Tables are Markdown, so they read in a terminal and paste into docs. Settings are
 * checked by src/train/settings.ts, with the paper's comparison defaults (r 64, no dropout, no
 * gradient checkpointing unless asked).
 */
import { readJsonFile } from "../io/checkpoint.ts";
import { type LlamaConfig, llamaConfigFromHf } from "../model/config.ts";
import { MEMORY_CATEGORIES, type MemoryBytes } from "../gpu/memory.ts";
import type { QuantType } from "../quant/codes.ts";
import {
  compareTrainingSetups,
  estimateMemory,
  type EstimateSettings,
  type LlamaPresetName,
  llamaPresets,
} from "../train/estimate.ts";
import {
  hyperparameterSettings,
  loraSettings,
  PAPER_ESTIMATE_DEFAULTS,
  quantFormatSettings,
} from "../train/settings.ts";
import { markdownTable } from "../util/markdown_table.ts";
import {
  type Command,
  type CommandIo,
  CONSOLE_IO,
  integerFlag,
  parseFlags,
  runCommand,
  usageError,
} from "./command.ts";

export const ESTIMATE: Command = {
  name: "estimate",
  usage:
    `  qlorad estimate (--config CONFIG.json | --preset 7b|13b|33b|65b|70b|all) [--r 64] [--alpha 16]
                  [--targets q_proj,...|all-linear] [--batch 1] [--seq 512] [--checkpointing]
                  [--optimizer-budget BYTES] [--lora-dtype f32|bf16] [--blocksize 64]
                  [--no-double-quant]
                  [--vocab-chunk 2048] [--activations f16|f32] [--units GiB|MiB|GB|bytes]
                  [--compare] [--json]
      GPU memory a training job allocates, by category, before it runs (docs/MEMORY.md).
      --config takes a Hugging Face config.json (a bitsandbytes quantization_config sets the
      4-bit type and double quant). --compare adds full fine-tuning (fp16) and 16-bit LoRA
      beside QLoRA. Defaults are the QLoRA paper's comparison: --r 64 on every linear, no
      gradient checkpointing unless --checkpointing. --activations: precision of the layer
      inputs kept under --checkpointing (default f16, what an adapter with shader-f16 gets; f32
      on one without). --lora-dtype bf16: a bf16 compute copy of the LoRA parameters on the GPU,
      the f32 master paged with AdamW (needs --optimizer-budget).`,
  run: (args, io) => estimate(args, io),
};

/** Runs `qlorad estimate ARGS`, writing with `print` and `printError`; resolves to the exit code. */
export function runEstimateCommand(
  args: string[],
  print: (line: string) => void = CONSOLE_IO.print,
  printError: (line: string) => void = CONSOLE_IO.printError,
): Promise<number> {
  return runCommand(ESTIMATE, args, { print, printError });
}

/** Each setting's flag, as errors name it. */
const FLAGS: Record<string, string> = {
  r: "--r",
  alpha: "--alpha",
  targets: "--targets",
  microBatchSize: "--batch",
  maxSeqLen: "--seq",
  optimizerGpuBudgetBytes: "--optimizer-budget",
  loraDtype: "--lora-dtype",
  blocksize: "--blocksize",
};

const flagName = (key: string) => FLAGS[key] ?? key;

const UNITS: Record<string, { div: number; digits: number; name: string }> = {
  gib: { div: 2 ** 30, digits: 2, name: "GiB" },
  mib: { div: 2 ** 20, digits: 1, name: "MiB" },
  gb: { div: 1e9, digits: 2, name: "GB" },
  bytes: { div: 1, digits: 0, name: "bytes" },
};

interface Model {
  name: string;
  cfg: LlamaConfig;
  quantType?: QuantType;
  doubleQuant?: boolean;
}

async function modelsFrom(config: string | undefined, presetName: string | undefined) {
  if ((config === undefined) === (presetName === undefined)) {
    usageError("estimate needs exactly one of --config CONFIG.json and --preset NAME");
  }
  if (config !== undefined) {
    const raw = await readJsonFile(config);
    const cfg = llamaConfigFromHf(raw, config);
    const q = (raw as Record<string, unknown>).quantization_config as
      | Record<string, unknown>
      | undefined;
    const bnb4 = q?.quant_method === "bitsandbytes" && q?.load_in_4bit === true;
    const model: Model = { name: config, cfg };
    if (bnb4) {
      const t = String(q?.bnb_4bit_quant_type ?? "nf4").toLowerCase();
      model.quantType = t === "fp4" ? "fp4" : "nf4";
      model.doubleQuant = q?.bnb_4bit_use_double_quant === true;
    }
    return [model];
  }
  const name = presetName!.toLowerCase();
  if (name === "all") return Object.values(llamaPresets).map((p) => ({ ...p }));
  const p = llamaPresets[name as LlamaPresetName];
  if (!p) {
    usageError(`--preset must be one of ${Object.keys(llamaPresets).join(", ")}, all; not ${name}`);
  }
  return [{ ...p }];
}

function quantLabel(s: EstimateSettings): string {
  return `${(s.quantType ?? "nf4").toUpperCase()}${s.doubleQuant === false ? "" : "+DQ"}`;
}

async function estimate(args: string[], io: CommandIo): Promise<number> {
  const print = io.print;
  const values = parseFlags(args, {
    config: { type: "string" },
    preset: { type: "string" },
    r: { type: "string" },
    alpha: { type: "string" },
    targets: { type: "string" },
    batch: { type: "string" },
    seq: { type: "string" },
    checkpointing: { type: "boolean" },
    "optimizer-budget": { type: "string" },
    "lora-dtype": { type: "string" },
    blocksize: { type: "string" },
    "no-double-quant": { type: "boolean" },
    "vocab-chunk": { type: "string" },
    activations: { type: "string" },
    units: { type: "string" },
    compare: { type: "boolean" },
    json: { type: "boolean" },
  });
  const models = await modelsFrom(values.config, values.preset);
  const lora = loraSettings(
    {
      r: values.r,
      alpha: values.alpha,
      targets: values.targets?.split(",").map((s) => s.trim()),
    },
    flagName,
    PAPER_ESTIMATE_DEFAULTS.lora,
  );
  const hp = hyperparameterSettings(
    {
      microBatchSize: values.batch,
      maxSeqLen: values.seq,
      gradientCheckpointing: values.checkpointing ? true : undefined,
      optimizerGpuBudgetBytes: values["optimizer-budget"],
      loraDtype: values["lora-dtype"],
    },
    flagName,
    PAPER_ESTIMATE_DEFAULTS.hp,
  );
  const { blocksize } = quantFormatSettings({ blocksize: values.blocksize }, flagName);
  const unit = UNITS[(values.units ?? "GiB").toLowerCase()] ??
    usageError(`--units must be GiB, MiB, GB or bytes, not ${values.units}`);
  const activations = values.activations ?? "f16";
  if (activations !== "f16" && activations !== "f32") {
    usageError(`--activations must be f16 or f32, not ${activations}`);
  }
  const base = {
    lora,
    microBatchSize: hp.microBatchSize,
    maxSeqLen: hp.maxSeqLen,
    gradientCheckpointing: hp.gradientCheckpointing,
    activationPrecision: activations as "f16" | "f32",
    optimizerGpuBudgetBytes: hp.optimizerGpuBudgetBytes,
    loraStorage: hp.loraDtype,
    settingNames: flagName,
    blocksize,
    vocabChunk: values["vocab-chunk"] === undefined
      ? undefined
      : integerFlag(values["vocab-chunk"], "--vocab-chunk", 2048, 1),
  };
  const settingsFor = (m: Model): EstimateSettings => ({
    ...base,
    quantType: m.quantType ?? "nf4",
    doubleQuant: values["no-double-quant"] ? false : (m.doubleQuant ?? true),
  });

  const estimates = models.map((m) => ({
    model: m,
    estimate: estimateMemory(m.cfg, settingsFor(m)),
  }));
  const comparisons = values.compare
    ? models.map((m) => ({
      model: m,
      rows: compareTrainingSetups(m.cfg, base.maxSeqLen, base.microBatchSize, {
        lora,
        gradientCheckpointing: base.gradientCheckpointing,
        optimizerGpuBudgetBytes: base.optimizerGpuBudgetBytes,
        activationPrecision: base.activationPrecision,
        loraStorage: base.loraStorage,
      }),
    }))
    : [];

  if (values.json) {
    print(JSON.stringify(
      {
        settings: { ...base, lora },
        estimates: estimates.map(({ model, estimate }) => ({
          model: model.name,
          quantType: settingsFor(model).quantType,
          doubleQuant: settingsFor(model).doubleQuant,
          ...estimate,
        })),
        comparisons: comparisons.map(({ model, rows }) => ({ model: model.name, rows })),
      },
      null,
      2,
    ));
    return 0;
  }

  const fmt = (bytes: number) =>
    unit.div === 1 ? String(bytes) : (bytes / unit.div).toFixed(unit.digits);
  const targets = lora.targets.map((t) => `${t}_proj`).join(",");
  print(
    `settings: LoRA r=${lora.r} alpha=${lora.alpha} on ${targets}; micro-batch ${base.microBatchSize} x ` +
      `seq ${base.maxSeqLen}; gradient checkpointing ${
        base.gradientCheckpointing ? "on" : "off"
      }; ` +
      `optimizer ${
        base.optimizerGpuBudgetBytes > 0
          ? `GPU budget ${base.optimizerGpuBudgetBytes} bytes`
          : "resident"
      }; LoRA parameters ${
        base.loraStorage === "bf16" ? "bf16 on the GPU, f32 master paged" : "f32"
      }; 4-bit blocksize ${blocksize}`,
  );
  print("");
  print(`qlorad GPU memory (${unit.name}):`);
  print("");
  print(markdownTable(
    ["model", "parameters", "LoRA parameters", ...MEMORY_CATEGORIES, "total"],
    estimates.map(({ model, estimate: e }) => [
      `${model.name} (${quantLabel(settingsFor(model))})`,
      e.baseParameters.toLocaleString("en-US"),
      e.loraParameters.toLocaleString("en-US"),
      ...MEMORY_CATEGORIES.map((c) => fmt(e.bytes[c])),
      fmt(e.total),
    ]),
  ));
  if (comparisons.length > 0) {
    print("");
    print(`Full fine-tuning vs LoRA vs QLoRA (${unit.name}):`);
    print("");
    const cols = (b: MemoryBytes) => [
      fmt(b.base_weights),
      fmt(b.lora),
      fmt(b.gradients),
      fmt(b.optimizer),
      fmt(b.activations + b.scratch),
    ];
    print(markdownTable(
      [
        "model",
        "setup",
        "weights",
        "LoRA params",
        "gradients",
        "optimizer",
        "activations + scratch",
        "total",
      ],
      comparisons.flatMap(({ model, rows }) =>
        rows.map((r) => [model.name, r.label, ...cols(r.bytes), fmt(r.total)])
      ),
    ));
    print("");
    for (const r of comparisons[0].rows) print(`- ${r.label}: ${r.note}.`);
  }
  return 0;
}
