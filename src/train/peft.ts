/**
 * PEFT LoRA adapters on disk (REFERENCE §6): `adapter_config.json` (sorted keys, the fields
 * peft's LoraConfig writes) and `adapter_model.safetensors` (F32, metadata {"format": "pt"}).
 * Reads adapters written by us or by Python peft (F32, F16 or BF16 tensors).
 */
import { join } from "node:path";
import { SafetensorsFile, writeSafetensors } from "../io/safetensors.ts";
import { readJsonFile } from "../io/checkpoint.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { asBytes } from "../io/dtype.ts";
import { type LinearModule, type LlamaConfig, parseTargetModules } from "../model/config.ts";
import { LoraLayout, type LoraSpec } from "../model/lora.ts";
import { invalidArgument, notFound } from "../util/errors.ts";

export const ADAPTER_CONFIG = "adapter_config.json";
export const ADAPTER_WEIGHTS = "adapter_model.safetensors";

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}

/** adapter_config.json as peft's LoraConfig.save_pretrained writes it (json, sorted keys). */
export function adapterConfigJson(spec: LoraSpec, baseModel: string): string {
  const config = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: spec.alpha,
    lora_dropout: spec.dropout,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: spec.r,
    rank_pattern: {},
    revision: null,
    target_modules: spec.targets.map((m) => `${m}_proj`),
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: spec.useRslora,
  };
  return JSON.stringify(sortKeys(config), null, 2) + "\n";
}

/** Writes both files into `dir` (each atomically). */
export async function saveAdapter(
  dir: string,
  layout: LoraLayout,
  flat: Float32Array,
  baseModel: string,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const tensors = layout.toPeftTensors(flat).map((t) => ({
    name: t.name,
    dtype: "F32" as const,
    shape: t.shape,
    data: asBytes(t.data),
  }));
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: "pt" });
  await writeFileAtomic(join(dir, ADAPTER_CONFIG), adapterConfigJson(layout.spec, baseModel));
}

export interface LoadedAdapter {
  spec: LoraSpec;
  layout: LoraLayout;
  flat: Float32Array;
  baseModel: string;
}

function field<T>(
  cfg: Record<string, unknown>,
  key: string,
  check: (v: unknown) => boolean,
  file: string,
): T {
  const v = cfg[key];
  if (!check(v)) {
    throw invalidArgument(`${file}: field "${key}" is missing or invalid (${JSON.stringify(v)})`);
  }
  return v as T;
}

/** Reads a PEFT LoRA folder for this model config; errors name the file and field. */
export async function loadAdapter(dir: string, cfg: LlamaConfig): Promise<LoadedAdapter> {
  const configPath = join(dir, ADAPTER_CONFIG);
  const weightsPath = join(dir, ADAPTER_WEIGHTS);
  for (const p of [configPath, weightsPath]) {
    try {
      await Deno.stat(p);
    } catch {
      throw notFound(
        `${p}: not found (a PEFT adapter folder has ${ADAPTER_CONFIG} and ${ADAPTER_WEIGHTS})`,
      );
    }
  }
  const raw = await readJsonFile(configPath);
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    throw invalidArgument(`${configPath}: expected a JSON object`);
  }
  const c = raw as Record<string, unknown>;
  const peftType = field<string>(c, "peft_type", (v) => typeof v === "string", configPath);
  if (peftType !== "LORA") {
    throw invalidArgument(`${configPath}: peft_type "${peftType}" is not LORA`);
  }
  if (c.use_dora === true) throw invalidArgument(`${configPath}: DoRA adapters are not supported`);
  if (c.bias !== undefined && c.bias !== "none") {
    throw invalidArgument(`${configPath}: bias "${c.bias}" is not supported (only "none")`);
  }
  const r = field<number>(c, "r", (v) => Number.isInteger(v) && (v as number) >= 1, configPath);
  const alpha = field<number>(c, "lora_alpha", (v) => typeof v === "number" && v > 0, configPath);
  const rawTargets = c.target_modules;
  const names = typeof rawTargets === "string" ? [rawTargets] : rawTargets;
  if (!Array.isArray(names) || !names.every((n) => typeof n === "string")) {
    throw invalidArgument(`${configPath}: field "target_modules" must be a list of module names`);
  }
  const targets: LinearModule[] = parseTargetModules(
    names as string[],
    `${configPath}: target_modules`,
  );
  const spec: LoraSpec = {
    r,
    alpha,
    dropout: typeof c.lora_dropout === "number" ? c.lora_dropout : 0,
    targets,
    useRslora: c.use_rslora === true,
  };
  const layout = new LoraLayout(cfg, spec);
  const file = await SafetensorsFile.open(weightsPath);
  try {
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const name of file.names()) {
      const info = file.info(name);
      // peft may keep the adapter name in keys (".lora_A.default.weight"); normalize it away.
      const key = name.replace(/\.lora_([AB])\.default\.weight$/, ".lora_$1.weight");
      tensors.set(key, { shape: info.shape, data: await file.readFloat32(name) });
    }
    const flat = layout.fromPeftTensors((n) => tensors.get(n), weightsPath);
    const extra = [...tensors.keys()].find((k) => !layout.slots.some((s) => s.peftKey === k));
    if (extra) {
      throw invalidArgument(
        `${weightsPath}: unexpected tensor ${extra} for target_modules ${names}`,
      );
    }
    return {
      spec,
      layout,
      flat,
      baseModel: typeof c.base_model_name_or_path === "string" ? c.base_model_name_or_path : "",
    };
  } finally {
    file.close();
  }
}
