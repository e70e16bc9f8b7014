/**
 * Request messages onto the job settings (src/train/settings.ts) and back: what "unset" means on
 * the wire (proto3's 0 and empty list where the proto says so, enum names), and each setting's
 * proto field name for errors (`hyperparameters.learning_rate`). The defaults and ranges are
 * settings.ts's.
 */
import type { LoraSpec } from "../../model/lora.ts";
import type { QuantType } from "../../quant/codes.ts";
import type { LrScheduler } from "../../train/schedule.ts";
import {
  type EvaluateSettings,
  evaluateSettings,
  HYPERPARAMETER_FIELDS,
  type HyperparameterKey,
  hyperparameterSettings,
  hyperparametersFromSnakeCase,
  LORA_FIELDS,
  type LoraKey,
  loraSettings,
  type QuantizeKey,
  type QuantizeSettings,
  quantizeSettings,
  snakeCaseHyperparameters,
  type TrainHyperparameters,
} from "../../train/settings.ts";
import type { LoraStorage } from "../../model/lora_params.ts";
import type { EvaluateRequest, Hyperparameters, LoraConfig, QuantizeRequest } from "../messages.ts";

/** proto3 cannot tell 0 or [] from unset; where the proto says "0 means the default", it is. */
function unsetIfZero(v: unknown): unknown {
  return v === 0 || v === null ? undefined : v;
}

function unsetIfEmpty(v: unknown): unknown {
  return Array.isArray(v) && v.length === 0 ? undefined : v ?? undefined;
}

/** An enum's name without its prefix, lowercase; UNSPECIFIED is unset; an unknown number stays. */
export function enumSetting(v: unknown, prefix: string): unknown {
  if (typeof v !== "string") return v ?? undefined;
  const name = v.startsWith(prefix) ? v.slice(prefix.length).toLowerCase() : v;
  return name === "unspecified" ? undefined : name;
}

/** True when every name in N is a field of message M (checked when the types are checked). */
type AllFieldsOf<N, M> = [N] extends [keyof M] ? true : never;
const _hyperparameterFieldsInProto: AllFieldsOf<
  (typeof HYPERPARAMETER_FIELDS)[HyperparameterKey],
  Hyperparameters
> = true;
const _loraFieldsInProto: AllFieldsOf<(typeof LORA_FIELDS)[LoraKey], LoraConfig> = true;

export const loraFieldName = (k: LoraKey) => `lora.${LORA_FIELDS[k]}`;
export const hyperparameterFieldName = (k: HyperparameterKey) =>
  `hyperparameters.${HYPERPARAMETER_FIELDS[k]}`;

/** LoraConfig (an unset message arrives as null) with the defaults filled in. */
export function loraFromMessage(m: LoraConfig | null | undefined): LoraSpec {
  return loraSettings({
    r: unsetIfZero(m?.r),
    alpha: m?.alpha ?? undefined,
    dropout: m?.dropout ?? undefined,
    targets: unsetIfEmpty(m?.target_modules),
    useRslora: m?.use_rslora ?? undefined,
  }, loraFieldName);
}

/** Hyperparameters with the defaults filled in. */
export function hyperparametersFromMessage(
  m: Hyperparameters | null | undefined,
): TrainHyperparameters {
  const input = hyperparametersFromSnakeCase({ ...m });
  for (const k of Object.keys(input) as HyperparameterKey[]) {
    if (input[k] === null) input[k] = undefined;
  }
  // Fields whose 0 the proto documents as "the default" (uint32 without presence).
  for (const k of ["microBatchSize", "gradientAccumulationSteps", "maxSeqLen"] as const) {
    input[k] = unsetIfZero(input[k]);
  }
  // seed is `optional`, so 0 could be told from unset; the service has always read 0 as unset
  // (42), and a run resumed from a checkpoint must keep reading it so.
  input.seed = unsetIfZero(input.seed);
  input.lrScheduler = enumSetting(input.lrScheduler, "LR_SCHEDULER_");
  input.loraDtype = enumSetting(input.loraDtype, "LORA_DTYPE_");
  return hyperparameterSettings(input, hyperparameterFieldName);
}

export function loraMessage(spec: LoraSpec): LoraConfig {
  return {
    r: spec.r,
    alpha: spec.alpha,
    dropout: spec.dropout,
    target_modules: spec.targets.map((t) => `${t}_proj`),
    use_rslora: spec.useRslora,
  };
}

export function hyperparametersMessage(hp: TrainHyperparameters): Hyperparameters {
  const scheduler = hp.lrScheduler.toUpperCase() as Uppercase<LrScheduler>;
  // The snake_case names are the message's fields (settings.ts keeps the one table of them).
  const loraDtype = (hp.loraDtype ?? "f32").toUpperCase() as Uppercase<LoraStorage>;
  return {
    ...snakeCaseHyperparameters(hp),
    lr_scheduler: `LR_SCHEDULER_${scheduler}`,
    lora_dtype: `LORA_DTYPE_${loraDtype}`,
  };
}

const EVALUATE_FIELDS: Record<keyof EvaluateSettings, string> = {
  maxSeqLen: "max_seq_len",
  batchSize: "batch_size",
  samplePrompts: "sample_prompts",
  maxNewTokens: "max_new_tokens",
};

export function evaluateSettingsOf(req: EvaluateRequest): EvaluateSettings {
  return evaluateSettings({
    maxSeqLen: unsetIfZero(req.max_seq_len),
    batchSize: unsetIfZero(req.batch_size),
    samplePrompts: req.sample_prompts ?? undefined,
    maxNewTokens: unsetIfZero(req.max_new_tokens),
  }, (k) => EVALUATE_FIELDS[k]);
}

const QUANTIZE_FIELDS: Record<QuantizeKey, string> = {
  quantType: "quant_type",
  blocksize: "blocksize",
  doubleQuant: "double_quant",
  skipModules: "skip_modules",
};

/** Quantize's settings; EstimateMemory's 4-bit format fields are the same ones. */
export function quantizeSettingsOf(
  req: Pick<QuantizeRequest, "quant_type" | "blocksize" | "double_quant"> & {
    skip_modules?: string[];
  },
): QuantizeSettings {
  return quantizeSettings({
    quantType: enumSetting(req.quant_type, "QUANT_TYPE_"),
    blocksize: unsetIfZero(req.blocksize),
    doubleQuant: req.double_quant ?? undefined,
    skipModules: unsetIfEmpty(req.skip_modules),
  }, (k) => QUANTIZE_FIELDS[k]);
}

export function quantTypeEnum(t: QuantType): `QUANT_TYPE_${Uppercase<QuantType>}` {
  return `QUANT_TYPE_${t.toUpperCase() as Uppercase<QuantType>}`;
}
