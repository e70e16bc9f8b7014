/**
 * Quantize: validate the request (fields, paths, the checkpoint's config.json within bounds, its
 * safetensors headers and their agreement with the config, existing output) before any job
 * exists, then queue a job that runs quantizeModel and stream its events. A bad request gets its
 * status at once and leaves nothing behind. The job works through pinned paths (confine.ts), and
 * its output replaces an existing one only once complete (OutputDir).
 */
import { exists } from "../../io/atomic.ts";
import { HfCheckpoint } from "../../io/checkpoint.ts";
import { llamaConfigFromHf } from "../../model/config.ts";
import type { quantizeModel, QuantizeOptions } from "../../quant/quantize_model.ts";
import { QloradError } from "../../util/errors.ts";
import { isInside, normalizeUserPath, resolveDataPath } from "../paths.ts";
import { checkFolderLinks, pinOutput, type Pins } from "../confine.ts";
import type { ServiceContext } from "./jobs.ts";
import { dataRelative, jobBody, type JobRpc, jobRpcHandler, type JobStart } from "./job_rpc.ts";
import { checkTensorsAgainstConfig, readModelConfig } from "./model_config.ts";
import { quantizeSettingsOf, quantTypeEnum } from "./request_settings.ts";
import { checkPathFields } from "./validate.ts";
import type { GpuContext } from "../../gpu/context.ts";
import { gpuQuantizer } from "../../quant/gpu_quantizer.ts";
import { jobTrace } from "../../telemetry/tracing.ts";
import { ATTR, metricsEnabled, recordQuantizedTensor } from "../../telemetry/metrics.ts";
import { gpuTimeAttributes, observeGpu } from "../job_telemetry.ts";
import type { Echoed, QuantizeRequest } from "../messages.ts";

/** A checked request: what the job record keeps, and what quantizeModel gets. */
export interface ValidatedQuantize {
  /** The request as the Job message shows it, defaults filled in. */
  request: Echoed<QuantizeRequest>;
  options: Omit<QuantizeOptions, "signal" | "onProgress">;
  summary: string;
}

/** Checks a QuantizeRequest; throws a QloradError naming the field (and path) on bad input. */
export async function validateQuantizeRequest(
  req: QuantizeRequest,
  dataDir: string,
): Promise<ValidatedQuantize> {
  checkPathFields(req, ["model_path", "output_path"]);
  const { quantType, blocksize, doubleQuant, skipModules: skip } = quantizeSettingsOf(req);
  const overwrite = Boolean(req.overwrite);

  const modelDir = await resolveDataPath(dataDir, req.model_path, "model_path", {
    mustExist: true,
  });
  const modelName = `model_path ${JSON.stringify(req.model_path)}`;
  if (!(await Deno.stat(modelDir)).isDirectory) {
    throw new QloradError("invalid_argument", `${modelName}: not a folder`);
  }
  await checkFolderLinks(dataDir, modelDir, modelName);
  await checkCheckpoint(dataDir, modelDir, req.model_path, modelName);

  const outputDir = await resolveDataPath(dataDir, req.output_path, "output_path");
  const outputName = `output_path ${JSON.stringify(req.output_path)}`;
  if (overlaps(modelDir, outputDir)) {
    throw new QloradError(
      "invalid_argument",
      `${outputName}: must not be ${modelName}, inside it, or contain it`,
    );
  }
  if (!overwrite && await exists(outputDir)) {
    throw new QloradError(
      "failed_precondition",
      `${outputName}: already exists (set overwrite to replace it)`,
    );
  }

  const modelPath = normalizeUserPath(req.model_path);
  const outputPath = normalizeUserPath(req.output_path);
  const typeName = quantType.toUpperCase();
  return {
    request: {
      model_path: modelPath,
      output_path: outputPath,
      quant_type: quantTypeEnum(quantType),
      blocksize,
      double_quant: doubleQuant,
      skip_modules: skip,
      overwrite,
    },
    options: {
      modelDir,
      outputDir,
      quantType,
      blocksize,
      doubleQuant,
      skipModules: skip,
      overwrite,
    },
    summary: `quantize ${modelPath} -> ${outputPath} (${typeName}, blocksize ${blocksize}${
      doubleQuant ? ", double quant" : ""
    })`,
  };
}

/**
 * Opens the checkpoint as the quantizer will (config.json, the safetensors headers and sizes, a
 * shard index) so that a bad model is refused before any job exists; then reads its config.json
 * as a bounded Llama config and checks the tensors against it.
 */
async function checkCheckpoint(
  dataDir: string,
  modelDir: string,
  userPath: string,
  modelName: string,
): Promise<void> {
  let ckpt: HfCheckpoint;
  try {
    ckpt = await HfCheckpoint.open(modelDir);
  } catch (err) {
    if (err instanceof QloradError) {
      throw new QloradError(err.kind, `${modelName}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  try {
    // An architecture or config field we do not implement is refused before a job exists.
    llamaConfigFromHf(ckpt.config, `${modelName}: config.json`);
    if (ckpt.config.quantization_config !== undefined) return; // refused by the job, as before
    const { cfg } = await readModelConfig(dataDir, userPath, "model_path");
    checkTensorsAgainstConfig(ckpt, cfg, modelName);
  } finally {
    ckpt.close();
  }
}

function overlaps(a: string, b: string): boolean {
  return isInside(a, b) || isInside(b, a);
}

/**
 * The job body: quantizeModel with its progress mapped to Progress events. Made inside the RPC, so
 * its trace (a `quantize tensor` span per tensor, then `write output`) joins the caller's. The
 * last tensor's report is the point of no return: a cancel before it stops the job, one after it
 * is refused while the output is written. Without `dataDir` (tests) the paths are not pinned.
 */
export function quantizeJob(
  v: ValidatedQuantize,
  quantize: typeof quantizeModel,
  gpu?: () => Promise<GpuContext>,
  dataDir?: string,
): JobStart {
  const spans = jobTrace("quantize", {
    "qlorad.model": v.request.model_path,
    "qlorad.output": v.request.output_path,
    "qlorad.quant_type": v.request.quant_type,
    "qlorad.blocksize": v.request.blocksize,
  });
  const run = jobBody(
    spans,
    () => ({ userPath: dataRelative(dataDir), output: v.request.output_path }),
    async ({ signal, emit, commit }, pins) => {
      const options = dataDir ? await placeQuantizeJob(v, dataDir, pins) : v.options;
      const device = gpu ? await gpu() : undefined;
      const timing = device && (spans.recording || metricsEnabled())
        ? observeGpu(device)
        : undefined;
      spans.mark();
      const r = await quantize({
        ...options,
        // The GPU kernel when a device is there; the byte-identical CPU path otherwise.
        quantizer: device ? gpuQuantizer(device) : undefined,
        signal,
        onProgress: (p) => {
          // Each report ends a tensor; the previous report ended the tensor before it.
          spans.phase("quantize tensor", {
            "qlorad.tensor": p.tensor,
            "qlorad.tensor.index": p.index,
            "qlorad.tensor.total": p.total,
            "qlorad.bytes_in": p.bytesIn,
            "qlorad.bytes_out": p.bytesOut,
            [ATTR.quantized]: p.quantized,
            ...gpuTimeAttributes(timing?.timer),
          });
          recordQuantizedTensor(p.quantized, p.bytesOut);
          emit({
            progress: {
              message: `${p.quantized ? "quantized" : "kept"} ${p.tensor}`,
              tensor: p.tensor,
              index: p.index,
              total: p.total,
              bytes_in: p.bytesIn,
              bytes_out: p.bytesOut,
              quantized: p.quantized,
            },
          });
          if (p.index === p.total) commit();
        },
      }).finally(() => timing?.detach());
      return finishQuantize(v, spans, r);
    },
  );
  return { summary: v.summary, request: v.request, run };
}

/** The model folder and the output's parent, pinned; the output addressed through its parent. */
async function placeQuantizeJob(
  v: ValidatedQuantize,
  dataDir: string,
  pins: Pins,
): Promise<ValidatedQuantize["options"]> {
  const o = v.options;
  const modelLabel = `model_path ${JSON.stringify(v.request.model_path)}`;
  const outputLabel = `output_path ${JSON.stringify(v.request.output_path)}`;
  const modelDir = await pins.pin(o.modelDir, modelLabel, "dir");
  await checkFolderLinks(dataDir, modelDir, modelLabel);
  const outputDir = await pinOutput(pins, dataDir, v.request.output_path, o.outputDir, outputLabel);
  return { ...o, modelDir, outputDir };
}

function finishQuantize(
  v: ValidatedQuantize,
  spans: ReturnType<typeof jobTrace>,
  r: Awaited<ReturnType<typeof quantizeModel>>,
) {
  spans.phase("write output", { "qlorad.bytes_out": r.bytesOut });
  spans.set({
    "qlorad.tensors_quantized": r.tensorsQuantized,
    "qlorad.parameters_quantized": r.parametersQuantized,
  });
  return {
    quantize_result: {
      parameters_quantized: r.parametersQuantized,
      tensors_quantized: r.tensorsQuantized,
      tensors_kept: r.tensorsKept,
      bits_per_parameter: r.bitsPerParameter,
      bytes_in: r.bytesIn,
      bytes_out: r.bytesOut,
      mean_abs_error: r.meanAbsError,
      max_abs_error: r.maxAbsError,
      // The user's path, never the host's.
      output_path: v.request.output_path,
    },
  };
}

/** The Quantize RPC. */
export const QUANTIZE_RPC: JobRpc<QuantizeRequest, ValidatedQuantize> = {
  kind: "quantize",
  method: "Quantize",
  validate: validateQuantizeRequest,
  job: (v, ctx) => quantizeJob(v, ctx.quantize, ctx.gpu, ctx.dataDir),
};

export function quantizeHandler(ctx: ServiceContext) {
  return jobRpcHandler(ctx, QUANTIZE_RPC);
}
