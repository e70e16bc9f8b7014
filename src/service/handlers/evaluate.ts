/**
 * Evaluate: checks the request (fields, paths, the model's config within bounds and max_seq_len
 * within its positions, tokenizer, adapter) before any job exists, then queues an evaluation job
 * that works through pinned paths (confine.ts). The dataset's records are checked when the job
 * starts.
 */
import type { ServerWritableStream } from "@grpc/grpc-js";
import { join } from "node:path";
import { exists } from "../../io/atomic.ts";
import { type EvaluateJobOptions, runEvaluateJob } from "../../train/evaluate_job.ts";
import { invalidArgument, notFound } from "../../util/errors.ts";
import { normalizeUserPath, resolveDataPath } from "../paths.ts";
import type { JobRun } from "../jobs.ts";
import { checkFolderLinks, Pins } from "../confine.ts";
import { type JobStart, type ServiceContext, startJob } from "./jobs.ts";
import { readModelConfig } from "./model_config.ts";
import { jobError, modelFolder } from "./train.ts";
import { checkPathFields, intIn } from "./validate.ts";
import { jobTrace } from "../../telemetry/tracing.ts";
import { tracedJob } from "../job_telemetry.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

export interface ValidatedEvaluate {
  request: Msg;
  options: EvaluateJobOptions;
  summary: string;
}

export async function validateEvaluateRequest(
  req: Msg,
  dataDir: string,
): Promise<ValidatedEvaluate> {
  checkPathFields(req, ["base_model_path", "dataset_path", "adapter_path"]);
  const maxSeqLen = intIn(req.max_seq_len, "max_seq_len", 2, 131072, 512);
  const batchSize = intIn(req.batch_size, "batch_size", 1, 1024, 1);
  const maxNewTokens = intIn(req.max_new_tokens, "max_new_tokens", 1, 4096, 64);
  const prompts: string[] = [...(req.sample_prompts ?? [])];
  if (prompts.length > 64) {
    throw invalidArgument(`sample_prompts: at most 64, got ${prompts.length}`);
  }
  if (prompts.some((p) => typeof p !== "string" || p.length === 0 || p.length > 16384)) {
    throw invalidArgument("sample_prompts: each prompt must be 1..16384 characters");
  }
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
  let adapterDir: string | undefined;
  if (req.adapter_path) {
    adapterDir = await resolveDataPath(dataDir, req.adapter_path, "adapter_path", {
      mustExist: true,
    });
    await checkFolderLinks(dataDir, adapterDir, `adapter_path ${JSON.stringify(req.adapter_path)}`);
    for (const f of ["adapter_config.json", "adapter_model.safetensors"]) {
      if (!(await exists(join(adapterDir, f)))) {
        throw notFound(`adapter_path ${JSON.stringify(req.adapter_path)}: ${f} not found`);
      }
    }
  }
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
  const body: JobRun = async ({ signal, emit }) => {
    const pins = new Pins();
    const userPath = (p: string) =>
      p.startsWith(ctx.dataDir + "/") ? p.slice(ctx.dataDir.length + 1) : p;
    const traced = tracedJob(spans, {
      progress: (message, index, total) => emit({ progress: { message, index, total } }),
      log: (level, message) => emit({ log: { level, message } }),
    }, ctx.gpu);
    let r;
    try {
      const o = v.options;
      const label = (field: string) => `${field} ${JSON.stringify(v.request[field])}`;
      const baseModelDir = await pins.pin(o.baseModelDir, label("base_model_path"), "dir");
      await checkFolderLinks(ctx.dataDir, baseModelDir, label("base_model_path"));
      const datasetPath = await pins.pin(o.datasetPath, label("dataset_path"), "file");
      const adapterDir = o.adapterDir
        ? await pins.pin(o.adapterDir, label("adapter_path"), "dir")
        : undefined;
      if (adapterDir) await checkFolderLinks(ctx.dataDir, adapterDir, label("adapter_path"));
      r = await runEvaluateJob(
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
    } catch (err) {
      throw jobError(err, (m) => pins.rename(m, userPath));
    } finally {
      await traced.finish();
      await pins.close();
    }
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
  };
  return {
    summary: v.summary,
    request: v.request,
    run: (job) => spans.run(job.jobId, () => body(job), job.signal),
  };
}

export function evaluateHandler(ctx: ServiceContext) {
  return (call: ServerWritableStream<Msg, Msg>) =>
    startJob(call, ctx, "evaluate", "Evaluate", async () => {
      const v = await validateEvaluateRequest(call.request, ctx.dataDir);
      return evaluateJob(v, ctx);
    });
}
