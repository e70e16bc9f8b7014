/**
 * Evaluate: checks the request (fields, paths, the model's config within bounds and max_seq_len
 * within its positions, tokenizer, adapter) before any job exists, then queues an evaluation job
 * that works through pinned paths (confine.ts). The dataset's records are checked when the job
 * starts.
 */
import { type EvaluateJobOptions, runEvaluateJob } from "../../train/evaluate_job.ts";
import { invalidArgument } from "../../util/errors.ts";
import { normalizeUserPath, resolveDataPath } from "../paths.ts";
import { checkFolderLinks } from "../confine.ts";
import { resolveAdapterFolder } from "./adapter_folder.ts";
import type { ServiceContext } from "./jobs.ts";
import { dataRelative, jobBody, type JobRpc, jobRpcHandler, type JobStart } from "./job_rpc.ts";
import { readModelConfig } from "./model_config.ts";
import { modelFolder } from "./train.ts";
import { evaluateSettingsOf } from "./request_settings.ts";
import { checkPathFields } from "./validate.ts";
import { jobTrace } from "../../telemetry/tracing.ts";
import { tracedJob } from "../job_telemetry.ts";
import type { Echoed, EvaluateRequest } from "../messages.ts";

export interface ValidatedEvaluate {
  /** The request with every default filled in (what GetJob shows). */
  request: Echoed<EvaluateRequest>;
  options: EvaluateJobOptions;
  summary: string;
}

export async function validateEvaluateRequest(
  req: EvaluateRequest,
  dataDir: string,
): Promise<ValidatedEvaluate> {
  checkPathFields(req, ["base_model_path", "dataset_path", "adapter_path"]);
  const { maxSeqLen, batchSize, maxNewTokens, samplePrompts: prompts } = evaluateSettingsOf(req);
  const baseModelDir = await modelFolder(dataDir, req.base_model_path, "base_model_path");
  const { cfg } = await readModelConfig(dataDir, req.base_model_path, "base_model_path");
  if (maxSeqLen > cfg.maxPositions) {
    throw invalidArgument(
      `max_seq_len ${maxSeqLen} exceeds the model's max_position_embeddings ${cfg.maxPositions}`,
    );
  }
  const datasetPath = await resolveDataPath(dataDir, req.dataset_path, "dataset_path", {
    mustExist: true,
  });
  if (!(await Deno.stat(datasetPath)).isFile) {
    throw invalidArgument(`dataset_path ${JSON.stringify(req.dataset_path)}: not a file`);
  }
  const adapterDir = await resolveAdapterFolder(dataDir, req.adapter_path);
  const labels = {
    baseModel: normalizeUserPath(req.base_model_path),
    dataset: normalizeUserPath(req.dataset_path),
    adapter: req.adapter_path ? normalizeUserPath(req.adapter_path) : undefined,
  };
  return {
    request: {
      base_model_path: labels.baseModel,
      adapter_path: labels.adapter ?? "",
      dataset_path: labels.dataset,
      max_seq_len: maxSeqLen,
      batch_size: batchSize,
      sample_prompts: prompts,
      max_new_tokens: maxNewTokens,
    },
    options: {
      baseModelDir,
      adapterDir,
      datasetPath,
      maxSeqLen,
      batchSize,
      samplePrompts: prompts,
      maxNewTokens,
      labels,
    },
    summary: `evaluate ${labels.baseModel}${
      labels.adapter ? ` + ${labels.adapter}` : ""
    } on ${labels.dataset}`,
  };
}

export function evaluateJob(v: ValidatedEvaluate, ctx: ServiceContext): JobStart {
  // Made inside the RPC: the job's spans join the caller's trace (src/service/job_telemetry.ts).
  const spans = jobTrace("evaluate", {
    "qlorad.model": v.request.base_model_path,
    "qlorad.adapter": v.request.adapter_path,
    "qlorad.dataset": v.request.dataset_path,
  });
  let traced: ReturnType<typeof tracedJob>;
  const run = jobBody(spans, ({ emit }) => {
    traced = tracedJob(spans, {
      progress: (message, index, total) => emit({ progress: { message, index, total } }),
      log: (level, message) => emit({ log: { level, message } }),
    }, ctx.gpu);
    return { userPath: dataRelative(ctx.dataDir), finish: () => traced.finish() };
  }, async ({ signal }, pins) => {
    const o = v.options;
    const label = (field: keyof Echoed<EvaluateRequest>) =>
      `${field} ${JSON.stringify(v.request[field])}`;
    const baseModelDir = await pins.pin(o.baseModelDir, label("base_model_path"), "dir");
    await checkFolderLinks(ctx.dataDir, baseModelDir, label("base_model_path"));
    const datasetPath = await pins.pin(o.datasetPath, label("dataset_path"), "file");
    const adapterDir = o.adapterDir
      ? await pins.pin(o.adapterDir, label("adapter_path"), "dir")
      : undefined;
    if (adapterDir) await checkFolderLinks(ctx.dataDir, adapterDir, label("adapter_path"));
    const r = await runEvaluateJob(
      traced.gpu,
      {
        ...o,
        baseModelDir,
        datasetPath,
        adapterDir,
        gpuMemoryBudgetBytes: ctx.gpuMemoryBudgetBytes,
      },
      traced.hooks,
      signal,
    );
    spans.set({ "qlorad.loss": r.loss, "qlorad.tokens": r.tokens });
    return {
      eval_result: {
        loss: r.loss,
        perplexity: r.perplexity,
        token_accuracy: r.tokenAccuracy,
        tokens: r.tokens,
        examples: r.examples,
        samples: r.samples,
      },
    };
  });
  return { summary: v.summary, request: v.request, run };
}

/** The Evaluate RPC. */
export const EVALUATE_RPC: JobRpc<EvaluateRequest, ValidatedEvaluate> = {
  kind: "evaluate",
  method: "Evaluate",
  validate: validateEvaluateRequest,
  job: evaluateJob,
};

export function evaluateHandler(ctx: ServiceContext) {
  return jobRpcHandler(ctx, EVALUATE_RPC);
}
