/**
 * EstimateMemory: bytes by category for a model config and training settings. The config (a
 * model folder's config.json, or model_config_json) is size-limited and its dimensions bounded
 * before anything is computed from them, and every byte count must stay exact.
 */
import { parseJsonText } from "../../util/json.ts";
import { type LlamaConfig, llamaConfigFromHf } from "../../model/config.ts";
import { estimateMemory } from "../../train/estimate.ts";
import { invalidArgument } from "../../util/errors.ts";
import { MAX_CONFIG_BYTES, readModelConfig } from "./model_config.ts";
import { type ServiceContext, unary } from "./jobs.ts";
import {
  hyperparameterFieldName,
  hyperparametersFromMessage,
  loraFromMessage,
  quantizeSettingsOf,
} from "./request_settings.ts";
import { checkPathFields } from "./validate.ts";
import type { EstimateMemoryRequest, EstimateMemoryResponse } from "../messages.ts";

export async function estimateFromRequest(
  req: EstimateMemoryRequest,
  dataDir: string,
): Promise<EstimateMemoryResponse> {
  checkPathFields(req, ["base_model_path"]);
  const { quantType, blocksize, doubleQuant } = quantizeSettingsOf(req);
  let cfg: LlamaConfig;
  if (req.model_config_json) {
    if (req.base_model_path) {
      throw invalidArgument("give base_model_path or model_config_json, not both");
    }
    const text = String(req.model_config_json);
    if (text.length > MAX_CONFIG_BYTES) {
      throw invalidArgument(`model_config_json: longer than ${MAX_CONFIG_BYTES} characters`);
    }
    cfg = llamaConfigFromHf(parseJsonText(text, "model_config_json"), "model_config_json");
  } else if (req.base_model_path) {
    cfg = (await readModelConfig(dataDir, req.base_model_path, "base_model_path")).cfg;
  } else {
    throw invalidArgument("base_model_path or model_config_json is required");
  }
  const hp = hyperparametersFromMessage(req.hyperparameters);
  const est = estimateMemory(cfg, {
    lora: loraFromMessage(req.lora),
    microBatchSize: hp.microBatchSize,
    maxSeqLen: hp.maxSeqLen,
    gradientCheckpointing: hp.gradientCheckpointing,
    optimizerGpuBudgetBytes: hp.optimizerGpuBudgetBytes,
    loraStorage: hp.loraDtype,
    settingNames: hyperparameterFieldName,
    quantType,
    blocksize,
    doubleQuant,
  });
  return { bytes_by_category: est.bytes, total_bytes: est.total };
}

/** The EstimateMemory RPC. */
export function estimateHandler(ctx: ServiceContext) {
  return unary(
    ctx,
    "EstimateMemory",
    (req: EstimateMemoryRequest) => estimateFromRequest(req, ctx.dataDir),
  );
}
