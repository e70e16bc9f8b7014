/**
 * Train: checks the request (every field's range, paths inside the data directory, the model's
 * config within bounds and max_seq_len within its positions, tokenizer, datasets and resume
 * checkpoint exist, the output is free and contains no input) before any job exists, then queues
 * a job that runs the training loop and streams its events. The datasets' records are read and
 * checked when the job starts, before any step.
 *
 * The job works through pinned paths (confine.ts): a path swapped for a symlink after the
 * request was checked is refused, never followed. With `overwrite` an existing output is
 * replaced only when the new one is complete: the run writes into a temporary sibling that is
 * renamed into place at the end, and a run that fails or is stopped leaves the old output as it
 * was (and keeps nothing of its own).
 */
import { join } from "node:path";
import { exists, OutputDir } from "../../io/atomic.ts";
import { type JobHooks, runTrainJob, type TrainJobOptions } from "../../train/train_job.ts";
import type { TrainingSummary } from "../../train/trainer.ts";
import { failedPrecondition, invalidArgument, notFound } from "../../util/errors.ts";
import { isInside, normalizeUserPath, resolveDataPath } from "../paths.ts";
import { type JobPayload, shutDownAtCheckpoint } from "../jobs.ts";
import { checkFolderLinks, pinOutput, type Pins } from "../confine.ts";
import type { ServiceContext } from "./jobs.ts";
import { dataRelative, jobBody, type JobRpc, jobRpcHandler, type JobStart } from "./job_rpc.ts";
import { checkFileSize, MAX_TOKENIZER_BYTES, readModelConfig } from "./model_config.ts";
import {
  hyperparametersFromMessage,
  hyperparametersMessage,
  loraFromMessage,
  loraMessage,
} from "./request_settings.ts";
import { checkPathFields } from "./validate.ts";
import { jobTrace } from "../../telemetry/tracing.ts";
import { tracedJob } from "../job_telemetry.ts";
import type { Echoed, TrainRequest } from "../messages.ts";

const PATH_FIELDS: (keyof TrainRequest)[] = [
  "base_model_path",
  "dataset_path",
  "eval_dataset_path",
  "output_path",
  "resume_from",
];

export interface ValidatedTrain {
  /** The request with every default filled in (what GetJob shows). */
  request: Echoed<TrainRequest>;
  options: TrainJobOptions;
  outputPath: string;
  summary: string;
}

/**
 * A base model folder: inside the data directory, no symlink in it leading out, config.json and
 * tokenizer.json present (tokenizer.json at most MAX_TOKENIZER_BYTES: the job reads it whole).
 */
export async function modelFolder(
  dataDir: string,
  userPath: unknown,
  field: string,
): Promise<string> {
  const dir = await resolveDataPath(dataDir, userPath as string, field, { mustExist: true });
  const label = `${field} ${JSON.stringify(userPath)}`;
  if (!(await Deno.stat(dir)).isDirectory) throw invalidArgument(`${label}: not a folder`);
  await checkFolderLinks(dataDir, dir, label);
  for (const f of ["config.json", "tokenizer.json"]) {
    if (!(await exists(join(dir, f)))) throw notFound(`${label}: ${f} not found`);
  }
  await checkFileSize(join(dir, "tokenizer.json"), `${label}: tokenizer.json`, MAX_TOKENIZER_BYTES);
  return dir;
}

async function dataFile(dataDir: string, userPath: unknown, field: string): Promise<string> {
  const file = await resolveDataPath(dataDir, userPath as string, field, { mustExist: true });
  if (!(await Deno.stat(file)).isFile) {
    throw invalidArgument(`${field} ${JSON.stringify(userPath)}: not a file`);
  }
  return file;
}

export async function validateTrainRequest(
  req: TrainRequest,
  dataDir: string,
): Promise<ValidatedTrain> {
  checkPathFields(req, PATH_FIELDS);
  const spec = loraFromMessage(req.lora);
  const hp = hyperparametersFromMessage(req.hyperparameters);

  const baseModelDir = await modelFolder(dataDir, req.base_model_path, "base_model_path");
  const { cfg } = await readModelConfig(dataDir, req.base_model_path, "base_model_path");
  if (hp.maxSeqLen > cfg.maxPositions) {
    throw invalidArgument(
      `hyperparameters.max_seq_len ${hp.maxSeqLen} exceeds the model's max_position_embeddings ` +
        `${cfg.maxPositions}`,
    );
  }
  const datasetPath = await dataFile(dataDir, req.dataset_path, "dataset_path");
  const evalDatasetPath = req.eval_dataset_path
    ? await dataFile(dataDir, req.eval_dataset_path, "eval_dataset_path")
    : undefined;
  const outputDir = await resolveDataPath(dataDir, req.output_path, "output_path");
  const outputLabel = `output_path ${JSON.stringify(req.output_path)}`;
  if (isInside(baseModelDir, outputDir) || isInside(outputDir, baseModelDir)) {
    throw invalidArgument(`${outputLabel}: must not be the base model, inside it, or contain it`);
  }
  // The output is written (and with overwrite replaced): it must not hold an input.
  for (
    const [field, input] of [["dataset_path", datasetPath], ["eval_dataset_path", evalDatasetPath]]
  ) {
    if (input && isInside(outputDir, input)) {
      throw invalidArgument(`${outputLabel}: must not be or contain ${field} (an input)`);
    }
  }
  let resumeFrom: string | undefined;
  if (req.resume_from) {
    resumeFrom = await resolveDataPath(dataDir, req.resume_from, "resume_from", {
      mustExist: true,
    });
    await checkFolderLinks(
      dataDir,
      resumeFrom,
      `resume_from ${JSON.stringify(req.resume_from)}`,
      3,
    );
    // Resuming continues in the same output folder; its checkpoints live there.
    if (!isInside(outputDir, resumeFrom)) {
      throw invalidArgument(
        `resume_from ${
          JSON.stringify(req.resume_from)
        }: must be ${outputLabel} or a checkpoint in it`,
      );
    }
  } else if (!req.overwrite && await exists(outputDir)) {
    throw failedPrecondition(`${outputLabel}: already exists (set overwrite, or resume_from it)`);
  }

  const labels = {
    baseModel: normalizeUserPath(req.base_model_path),
    dataset: normalizeUserPath(req.dataset_path),
    evalDataset: req.eval_dataset_path ? normalizeUserPath(req.eval_dataset_path) : undefined,
  };
  const outputPath = normalizeUserPath(req.output_path);
  const options: TrainJobOptions = {
    baseModelDir,
    datasetPath,
    evalDatasetPath,
    outputDir,
    resumeFrom,
    lora: spec,
    hp,
    labels,
  };
  const request: Echoed<TrainRequest> = {
    base_model_path: labels.baseModel,
    dataset_path: labels.dataset,
    eval_dataset_path: labels.evalDataset ?? "",
    output_path: outputPath,
    lora: loraMessage(spec),
    hyperparameters: hyperparametersMessage(hp),
    resume_from: req.resume_from ? normalizeUserPath(req.resume_from) : "",
    overwrite: Boolean(req.overwrite),
  };
  return {
    request,
    options,
    outputPath,
    summary: `train ${labels.baseModel} on ${labels.dataset} -> ${outputPath} (r ${spec.r}${
      resumeFrom ? ", resumed" : ""
    })`,
  };
}

function trainResult(v: ValidatedTrain, s: TrainingSummary): JobPayload {
  return {
    train_result: {
      output_path: v.outputPath,
      steps: s.steps,
      first_loss: s.firstLoss ?? 0,
      final_loss: s.finalLoss,
      eval_loss: s.lastEval?.loss ?? 0,
      eval_perplexity: s.lastEval?.perplexity ?? 0,
      tokens_per_second: s.tokensPerSecond,
      train_seconds: s.trainSeconds,
      peak_memory_bytes: s.peakMemory,
      trainable_parameters: s.parameters,
      resumed_from_step: s.resumedFromStep ?? 0,
    },
  };
}

/** Where a Train job's files are, for the job: pinned paths, and the folder it trains into. */
interface TrainPlaces {
  options: TrainJobOptions;
  /** The folder the trainer writes (the output, or its temporary sibling with overwrite). */
  trainDir: string;
  /** Set when an existing output is being replaced: commit() renames the new one into place. */
  staged?: OutputDir;
}

/**
 * Pins every path of a validated Train request for its job (see confine.ts): each must still be
 * the very file or folder that was checked. The output's parent folder is made and pinned, and
 * the output is addressed through it.
 */
async function placeTrainJob(
  v: ValidatedTrain,
  ctx: ServiceContext,
  pins: Pins,
): Promise<TrainPlaces> {
  const o = v.options;
  const r = v.request;
  const label = (field: keyof Echoed<TrainRequest>) => `${field} ${JSON.stringify(r[field])}`;
  const baseModelDir = await pins.pin(o.baseModelDir, label("base_model_path"), "dir");
  await checkFolderLinks(ctx.dataDir, baseModelDir, label("base_model_path"));
  const datasetPath = await pins.pin(o.datasetPath, label("dataset_path"), "file");
  const evalDatasetPath = o.evalDatasetPath
    ? await pins.pin(o.evalDatasetPath, label("eval_dataset_path"), "file")
    : undefined;
  const resumeFrom = o.resumeFrom
    ? await pins.pin(o.resumeFrom, label("resume_from"), "dir")
    : undefined;
  const outputDir = await pinOutput(
    pins,
    ctx.dataDir,
    v.outputPath,
    o.outputDir,
    label("output_path"),
  );
  let staged: OutputDir | undefined;
  if (r.overwrite && !resumeFrom && await exists(outputDir)) {
    staged = await OutputDir.create(outputDir, { overwrite: true });
  }
  return {
    options: { ...o, baseModelDir, datasetPath, evalDatasetPath, resumeFrom, outputDir },
    trainDir: staged?.path ?? outputDir,
    staged,
  };
}

/** The job body: the training loop, its hooks mapped to JobEvents. */
export function trainJob(v: ValidatedTrain, ctx: ServiceContext): JobStart {
  // Made inside the RPC: the job's spans join the caller's trace (src/service/job_telemetry.ts).
  const spans = jobTrace("train", {
    "qlorad.model": v.request.base_model_path,
    "qlorad.dataset": v.request.dataset_path,
    "qlorad.output": v.outputPath,
    "qlorad.lora.r": v.options.lora.r,
    "qlorad.max_steps": v.options.hp.maxSteps,
  });
  // The newest checkpoint a stopped run can be resumed from (none when replacing an output).
  let resumable: { step: number; path: string } | undefined;
  let places: TrainPlaces | undefined;
  let traced: ReturnType<typeof tracedJob>;
  let finalStep: number | undefined;
  // Host paths of the job (pinned, temporary) as the user named them.
  const userPath = (p: string) => {
    const dir = places?.trainDir;
    if (dir && (p === dir || p.startsWith(dir + "/"))) return v.outputPath + p.slice(dir.length);
    return dataRelative(ctx.dataDir)(p);
  };
  const run = jobBody(spans, ({ emit, commit }) => {
    traced = tracedJob(
      spans,
      trainHooks(emit, (path, step, isFinal) => {
        const shown = userPath(path);
        // Every checkpoint is reported as one; "final" is said once the adapter is in place.
        emit({ checkpoint: { path: shown, step, is_final: false } });
        if (!places?.staged) resumable = { step, path: shown };
        if (isFinal) {
          // The point of no return: a cancel that came first ends the job here, at this
          // checkpoint; after it, the job writes its adapter and succeeds.
          commit();
          finalStep = step;
        }
      }),
      ctx.gpu,
    );
    return {
      userPath,
      output: v.outputPath,
      rewrite: (m) => places?.trainDir ? m.split(places.trainDir).join(v.outputPath) : m,
      onError: () => places?.staged?.abort(),
      finish: () => traced.finish(),
    };
  }, async ({ signal, emit }, pins) => {
    places = await placeTrainJob(v, ctx, pins);
    const summary = await runTrainJob(
      traced.gpu,
      {
        ...places.options,
        outputDir: places.trainDir,
        gpuMemoryBudgetBytes: ctx.gpuMemoryBudgetBytes,
      },
      traced.hooks,
      signal,
    );
    spans.phase("write adapter");
    await places.staged?.commit();
    emit({ checkpoint: { path: v.outputPath, step: finalStep ?? summary.steps, is_final: true } });
    return trainResult(v, summary);
  });
  return {
    summary: v.summary,
    request: v.request,
    run,
    resumeHint: () =>
      resumable ? shutDownAtCheckpoint(resumable.step, resumable.path, v.outputPath) : undefined,
  };
}

/** The training loop's events as JobEvents; `checkpoint` handles the Checkpoint ones. */
function trainHooks(
  emit: (payload: JobPayload) => void,
  checkpoint: JobHooks["checkpoint"],
): JobHooks {
  return {
    progress: (message, index, total) => emit({ progress: { message, index, total } }),
    log: (level, message) => emit({ log: { level, message } }),
    metrics: (m) =>
      emit({
        train_metrics: {
          step: m.step,
          total_steps: m.totalSteps,
          epoch: m.epoch,
          loss: m.loss,
          learning_rate: m.learningRate,
          grad_norm: m.gradNorm,
          tokens_per_second: m.tokensPerSecond,
          memory_bytes: m.memory,
          eta_seconds: m.etaSeconds,
          paged_bytes_in: m.pagedInBytes,
          paged_bytes_out: m.pagedOutBytes,
          tokens: m.tokens,
        },
      }),
    eval: (e) =>
      emit({
        eval_result: {
          loss: e.loss,
          perplexity: e.perplexity,
          token_accuracy: e.tokenAccuracy,
          tokens: e.tokens,
          step: e.step,
        },
      }),
    checkpoint,
  };
}

/** The Train RPC. */
export const TRAIN_RPC: JobRpc<TrainRequest, ValidatedTrain> = {
  kind: "train",
  method: "Train",
  validate: validateTrainRequest,
  job: trainJob,
};

export function trainHandler(ctx: ServiceContext) {
  return jobRpcHandler(ctx, TRAIN_RPC);
}
