/** EstimateMemory: bytes by category for a model config and training settings. */
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { join } from "node:path";
import { readJsonFile } from "../../io/checkpoint.ts";
import { parseJsonText } from "../../util/json.ts";
import { llamaConfigFromHf } from "../../model/config.ts";
import { estimateMemory } from "../../train/estimate.ts";
import { validateBlocksize } from "../../quant/blockwise.ts";
import { invalidArgument } from "../../util/errors.ts";
import { resolveDataPath } from "../paths.ts";
import { serviceErrorOf } from "../status.ts";
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
  let raw: unknown;
  let label: string;
  if (req.model_config_json) {
    if (req.base_model_path) {
      throw invalidArgument("give base_model_path or model_config_json, not both");
    }
    label = "model_config_json";
    raw = parseJsonText(String(req.model_config_json), label);
  } else if (req.base_model_path) {
    const dir = await resolveDataPath(dataDir, req.base_model_path, "base_model_path", {
      mustExist: true,
    });
    label = `base_model_path ${JSON.stringify(req.base_model_path)}: config.json`;
    raw = await readJsonFile(join(dir, "config.json"));
  } else {
    throw invalidArgument("base_model_path or model_config_json is required");
  }
  const cfg = llamaConfigFromHf(raw, label);
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
