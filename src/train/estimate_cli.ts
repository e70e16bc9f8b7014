/**
 * `qlorad estimate`: prints the GPU memory estimate by category for a model config.json or the
 * Llama presets, and with --compare the QLoRA paper's table (full fine-tuning in 16-bit, 16-bit
 * LoRA, QLoRA). Tables are Markdown, so they read in a terminal and paste into docs.
 */
import { parseArgs } from "node:util";
import { readJsonFile } from "../io/checkpoint.ts";
import { type LlamaConfig, llamaConfigFromHf, parseTargetModules } from "../model/config.ts";
import type { LoraSpec } from "../model/lora.ts";
import { MEMORY_CATEGORIES, type MemoryBytes } from "../gpu/memory.ts";
import { ALLOWED_BLOCKSIZES } from "../quant/blockwise.ts";
import type { QuantType } from "../quant/codes.ts";
import {
  compareTrainingSetups,
  estimateMemory,
  type EstimateSettings,
  type LlamaPresetName,
  llamaPresets,
} from "./estimate.ts";

export const ESTIMATE_USAGE = `usage:
  qlorad estimate (--config CONFIG.json | --preset 7b|13b|33b|65b|70b|all) [--r 64] [--alpha 16]
                  [--targets q_proj,...|all-linear] [--batch 1] [--seq 512] [--checkpointing]
                  [--optimizer-budget BYTES] [--blocksize 64] [--no-double-quant]
                  [--vocab-chunk 2048] [--activations f16|f32] [--units GiB|MiB|GB|bytes]
                  [--compare] [--json]
      GPU memory a training job allocates, by category, before it runs. --config takes a
      Hugging Face config.json (a bitsandbytes quantization_config sets the 4-bit type and
      double quant). --compare adds full fine-tuning (fp16) and 16-bit LoRA beside QLoRA.
      --activations: precision of the layer inputs kept under --checkpointing (default f16, what
      an adapter with shader-f16 gets; f32 on one without).
`;

class EstimateUsageError extends Error {}

function usage(message: string): never {
  throw new EstimateUsageError(message);
}

function int(value: string | undefined, flag: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min) {
    usage(`${flag} must be an integer >= ${min}, not ${value}`);
  }
  return Number(value);
}

function positive(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (!(v > 0) || !Number.isFinite(v)) usage(`${flag} must be a positive number, not ${value}`);
  return v;
}

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

/** A Markdown table with columns padded to their widest cell; numbers right-aligned. */
export function markdownTable(header: string[], rows: string[][], rightFrom = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) => (i >= rightFrom ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(
        " | ",
      )
    } |`;
  const rule = `|${
    widths.map((w, i) => (i >= rightFrom ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")
  }|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}

async function modelsFrom(config: string | undefined, presetName: string | undefined) {
  if ((config === undefined) === (presetName === undefined)) {
    usage("estimate needs exactly one of --config CONFIG.json and --preset NAME");
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
    usage(`--preset must be one of ${Object.keys(llamaPresets).join(", ")}, all; not ${name}`);
  }
  return [{ ...p }];
}

/**
 * Runs `qlorad estimate ARGS`, writing the tables with `print`; resolves to the exit code
 * (2 for usage errors, printed with the usage). Other errors (a bad config file) propagate.
 */
export async function runEstimateCommand(
  args: string[],
  print: (line: string) => void = console.log,
  printError: (line: string) => void = console.error,
): Promise<number> {
  try {
    return await estimate(args, print);
  } catch (err) {
    const parseError = err instanceof TypeError && "code" in err &&
      String(err.code).startsWith("ERR_PARSE_ARGS");
    if (err instanceof EstimateUsageError || parseError) {
      printError(`qlorad estimate: ${(err as Error).message}\n\n${ESTIMATE_USAGE}`);
      return 2;
    }
    throw err;
  }
}

function quantLabel(s: EstimateSettings): string {
  return `${(s.quantType ?? "nf4").toUpperCase()}${s.doubleQuant === false ? "" : "+DQ"}`;
}

async function estimate(args: string[], print: (line: string) => void): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      config: { type: "string" },
      preset: { type: "string" },
      r: { type: "string" },
      alpha: { type: "string" },
      targets: { type: "string" },
      batch: { type: "string" },
      seq: { type: "string" },
      checkpointing: { type: "boolean" },
      "optimizer-budget": { type: "string" },
      blocksize: { type: "string" },
      "no-double-quant": { type: "boolean" },
      "vocab-chunk": { type: "string" },
      activations: { type: "string" },
      units: { type: "string" },
      compare: { type: "boolean" },
      json: { type: "boolean" },
    },
  });
  const models = await modelsFrom(values.config, values.preset);
  const lora: LoraSpec = {
    r: int(values.r, "--r", 64),
    alpha: positive(values.alpha, "--alpha", 16),
    dropout: 0,
    targets: parseTargetModules(
      values.targets === undefined ? [] : values.targets.split(",").map((s) => s.trim()),
      "--targets",
    ),
    useRslora: false,
  };
  const blocksize = int(values.blocksize, "--blocksize", 64);
  if (!ALLOWED_BLOCKSIZES.includes(blocksize)) {
    usage(`--blocksize must be one of ${ALLOWED_BLOCKSIZES.join(", ")}, not ${blocksize}`);
  }
  const unit = UNITS[(values.units ?? "GiB").toLowerCase()] ??
    usage(`--units must be GiB, MiB, GB or bytes, not ${values.units}`);
  const activations = values.activations ?? "f16";
  if (activations !== "f16" && activations !== "f32") {
    usage(`--activations must be f16 or f32, not ${activations}`);
  }
  const base = {
    lora,
    microBatchSize: int(values.batch, "--batch", 1),
    maxSeqLen: int(values.seq, "--seq", 512),
    gradientCheckpointing: Boolean(values.checkpointing),
    activationPrecision: activations as "f16" | "f32",
    optimizerGpuBudgetBytes: int(values["optimizer-budget"], "--optimizer-budget", 0, 0),
    blocksize,
    vocabChunk: values["vocab-chunk"] === undefined
      ? undefined
      : int(values["vocab-chunk"], "--vocab-chunk", 2048),
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
      2,
    ));
    print("");
    for (const r of comparisons[0].rows) print(`- ${r.label}: ${r.note}.`);
  }
  return 0;
}
