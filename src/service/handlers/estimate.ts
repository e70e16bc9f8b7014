/**
 * EstimateMemory: bytes by category for a model config and training settings. The config (a
 * model folder's config.json, or model_config_json) is size-limited and its dimensions bounded
 * before anything is computed from them, and every byte count must stay exact.
 */
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { parseJsonText } from "../../util/json.ts";
import { type LlamaConfig, llamaConfigFromHf } from "../../model/config.ts";
import { estimateMemory } from "../../train/estimate.ts";
import { validateBlocksize } from "../../quant/blockwise.ts";
import { invalidArgument } from "../../util/errors.ts";
import { serviceErrorOf } from "../status.ts";
import { MAX_CONFIG_BYTES, readModelConfig } from "./model_config.ts";
import type { ServiceContext } from "./jobs.ts";
import { parseHyperparameters, parseLoraConfig } from "./train.ts";
import { checkPathFields } from "./validate.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

const QUANT_TYPES: Record<string, "nf4" | "fp4"> = {
  QUANT_TYPE_UNSPECIFIED: "nf4",
  QUANT_TYPE_NF4: "nf4",
  QUANT_TYPE_FP4: "fp4",
};

export async function estimateFromRequest(req: Msg, dataDir: string): Promise<Msg> {
  checkPathFields(req, ["base_model_path"]);
  const quantType = QUANT_TYPES[req.quant_type ?? "QUANT_TYPE_UNSPECIFIED"];
  if (!quantType) {
    throw invalidArgument(
      `quant_type ${
        JSON.stringify(req.quant_type)
      }: unsupported (QUANT_TYPE_NF4 or QUANT_TYPE_FP4)`,
    );
  }
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
  const hp = parseHyperparameters(req.hyperparameters);
  const blocksize = Number(req.blocksize || 64);
  validateBlocksize(blocksize, "blocksize");
  const est = estimateMemory(cfg, {
    lora: parseLoraConfig(req.lora),
    microBatchSize: hp.microBatchSize,
    maxSeqLen: hp.maxSeqLen,
    gradientCheckpointing: hp.gradientCheckpointing,
    optimizerGpuBudgetBytes: hp.optimizerGpuBudgetBytes,
    quantType,
    blocksize,
    doubleQuant: req.double_quant ?? true,
  });
  return { bytes_by_category: est.bytes, total_bytes: est.total };
}

export function estimateHandler(ctx: ServiceContext) {
  return async (call: ServerUnaryCall<Msg, Msg>, callback: sendUnaryData<Msg>) => {
    try {
      callback(null, await estimateFromRequest(call.request, ctx.dataDir));
    } catch (err) {
      callback(
        serviceErrorOf(err, {
          logger: ctx.logger,
          hostDirs: ctx.hostDirs,
          context: "EstimateMemory",
        }),
      );
    }
  };
}
