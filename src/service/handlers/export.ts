/**
 * Export: checks the request (fields, format and type, paths confined to the data directory, the
 * base model's config and files, the adapter's files, an output that is no input) before any job
 * exists, then queues a job that writes a GGUF file (exportGguf: merged, or the adapter alone as a
 * GGUF LoRA) or a merged Hugging Face folder (mergeAdapter) through pinned paths (confine.ts),
 * with a Progress event per tensor. It stops between tensors when cancelled, and its output
 * appears only once complete (both writers write under a temporary name and rename).
 */
import { basename, join } from "node:path";
import type { exportGguf, GgufFileType } from "../../export/export_gguf.ts";
import { mergeAdapter } from "../../train/merge.ts";
import {
  type ExportFormat,
  type ExportKey,
  exportSettings,
  type ExportType,
} from "../../train/settings.ts";
import { failedPrecondition, invalidArgument } from "../../util/errors.ts";
import { isInside, normalizeUserPath, resolveDataPath } from "../paths.ts";
import { checkFolderLinks, pinOutput } from "../confine.ts";
import { resolveAdapterFolder } from "./adapter_folder.ts";
import { enumSetting } from "./request_settings.ts";
import type { ServiceContext } from "./jobs.ts";
import { dataRelative, jobBody, type JobRpc, jobRpcHandler, type JobStart } from "./job_rpc.ts";
import { readModelConfig } from "./model_config.ts";
import { modelFolder } from "./train.ts";
import { checkPathFields } from "./validate.ts";
import { jobTrace } from "../../telemetry/tracing.ts";
import type { Echoed, ExportRequest } from "../messages.ts";

/** The ExportFormat enum's names, by format. */
const FORMAT_ENUM = {
  gguf: "EXPORT_FORMAT_GGUF_MERGED",
  "gguf-lora": "EXPORT_FORMAT_GGUF_LORA",
  hf: "EXPORT_FORMAT_HF_MERGED",
} as const satisfies Record<ExportFormat, ExportRequest["format"]>;

/** How a summary names each format. */
const FORMAT_TEXT: Record<ExportFormat, string> = {
  gguf: "GGUF",
  "gguf-lora": "GGUF LoRA",
  hf: "Hugging Face safetensors",
};

type ExportTypeName = `EXPORT_TYPE_${Uppercase<ExportType>}`;

const exportTypeEnum = (t: ExportType) => `EXPORT_TYPE_${t.toUpperCase()}` as ExportTypeName;

/** The format enum as settings.ts's input: UNSPECIFIED is unset, an unknown number stays. */
function formatInput(v: unknown): unknown {
  if (v === "EXPORT_FORMAT_UNSPECIFIED" || v === null || v === undefined) return undefined;
  const found = Object.entries(FORMAT_ENUM).find(([, name]) => name === v);
  return found ? found[0] : v;
}

/** Each setting's request field, as errors name it. */
const FIELDS: Record<ExportKey, string> = { format: "format", type: "type" };

export interface ValidatedExport {
  /** The request as the Job message shows it, defaults filled in. */
  request: Echoed<ExportRequest>;
  format: ExportFormat;
  type: ExportType;
  /** Checked host paths. */
  baseModelDir: string;
  adapterDir?: string;
  outputPath: string;
  summary: string;
}

/** Checks an ExportRequest; throws a QloradError naming the field (and path) on bad input. */
export async function validateExportRequest(
  req: ExportRequest,
  dataDir: string,
): Promise<ValidatedExport> {
  checkPathFields(req, ["base_model_path", "adapter_path", "output_path"]);
  const { format, type } = exportSettings(
    { format: formatInput(req.format), type: enumSetting(req.type, "EXPORT_TYPE_") },
    (k) => FIELDS[k],
  );
  const overwrite = Boolean(req.overwrite);
  const baseModelDir = await modelFolder(dataDir, req.base_model_path, "base_model_path");
  // The config within bounds and of an architecture the exporters know, before a job exists.
  await readModelConfig(dataDir, req.base_model_path, "base_model_path");

  const adapterDir = await resolveAdapterFolder(dataDir, req.adapter_path);
  if (!adapterDir && format !== "gguf") {
    throw invalidArgument(
      `adapter_path: ${FORMAT_ENUM[format]} exports an adapter, and none was given`,
    );
  }

  const outputPath = await resolveDataPath(dataDir, req.output_path, "output_path");
  const outputLabel = `output_path ${JSON.stringify(req.output_path)}`;
  for (
    const [field, input] of [["base_model_path", baseModelDir], ["adapter_path", adapterDir]]
  ) {
    if (input && (isInside(input, outputPath) || isInside(outputPath, input))) {
      throw invalidArgument(
        `${outputLabel}: must not be ${field} (an input), inside it, or contain it`,
      );
    }
  }
  const existing = await Deno.stat(outputPath).catch(() => undefined);
  if (existing) {
    if (!overwrite) {
      throw failedPrecondition(`${outputLabel}: already exists (set overwrite to replace it)`);
    }
    // Overwrite replaces like with like: a GGUF export is a file, a Hugging Face one a folder.
    if (existing.isDirectory !== (format === "hf")) {
      throw invalidArgument(
        `${outputLabel}: is a ${existing.isDirectory ? "folder" : "file"}; ` +
          `${FORMAT_ENUM[format]} writes a ${format === "hf" ? "folder" : "file"}`,
      );
    }
  }

  const labels = {
    base: normalizeUserPath(req.base_model_path),
    adapter: req.adapter_path ? normalizeUserPath(req.adapter_path) : "",
    output: normalizeUserPath(req.output_path),
  };
  return {
    request: {
      base_model_path: labels.base,
      adapter_path: labels.adapter,
      output_path: labels.output,
      format: FORMAT_ENUM[format],
      type: exportTypeEnum(type),
      overwrite,
    },
    format,
    type,
    baseModelDir,
    adapterDir,
    outputPath,
    summary:
      `export ${labels.base}${labels.adapter ? ` + ${labels.adapter}` : ""} -> ${labels.output} ` +
      `(${FORMAT_TEXT[format]}, ${type.toUpperCase()})`,
  };
}

/** Bytes of a file, or of the files in a folder (a Hugging Face export). */
async function bytesOf(p: string): Promise<number> {
  const s = await Deno.stat(p);
  if (!s.isDirectory) return s.size;
  let total = 0;
  for await (const e of Deno.readDir(p)) {
    if (e.isFile) total += (await Deno.stat(join(p, e.name))).size;
  }
  return total;
}

/**
 * The job body: the inputs and the output's parent pinned, then the exporter with its progress
 * mapped to Progress events. The last tensor's report is the point of no return (as Quantize's):
 * a cancel before it stops the job between tensors, one after it is refused while the output is
 * completed and renamed into place.
 */
export function exportJob(
  v: ValidatedExport,
  ctx: ServiceContext,
  gguf: typeof exportGguf,
): JobStart {
  const spans = jobTrace("export", {
    "qlorad.model": v.request.base_model_path,
    "qlorad.adapter": v.request.adapter_path,
    "qlorad.output": v.request.output_path,
    "qlorad.export.format": v.request.format,
    "qlorad.export.type": v.request.type,
  });
  const run = jobBody(
    spans,
    () => ({ userPath: dataRelative(ctx.dataDir), output: v.request.output_path }),
    async ({ signal, emit, commit }, pins) => {
      const label = (field: "base_model_path" | "adapter_path" | "output_path") =>
        `${field} ${JSON.stringify(v.request[field])}`;
      const baseModelDir = await pins.pin(v.baseModelDir, label("base_model_path"), "dir");
      await checkFolderLinks(ctx.dataDir, baseModelDir, label("base_model_path"));
      const adapterDir = v.adapterDir
        ? await pins.pin(v.adapterDir, label("adapter_path"), "dir")
        : undefined;
      if (adapterDir) await checkFolderLinks(ctx.dataDir, adapterDir, label("adapter_path"));
      const output = await pinOutput(
        pins,
        ctx.dataDir,
        v.request.output_path,
        v.outputPath,
        label("output_path"),
      );
      spans.mark();
      const onProgress = (tensor: string, index: number, total: number) => {
        spans.phase("export tensor", {
          "qlorad.tensor": tensor,
          "qlorad.tensor.index": index,
          "qlorad.tensor.total": total,
        });
        emit({ progress: { message: `writing ${tensor}`, tensor, index, total } });
        if (index === total) commit();
      };
      let tensors: number;
      let merged: number;
      let fallbacks: string[] = [];
      if (v.format === "hf") {
        const r = await mergeAdapter({
          baseModelDir,
          adapterDir: adapterDir!,
          outputDir: output,
          dtype: v.type.toUpperCase() as "BF16" | "F16" | "F32",
          overwrite: v.request.overwrite,
          signal,
          onProgress,
        });
        ({ tensors, merged } = r);
      } else {
        const lora = v.format === "gguf-lora";
        const r = await gguf({
          baseModelDir,
          adapterDir,
          mode: lora ? "lora" : "merged",
          outputPath: output,
          type: v.type.toUpperCase() as GgufFileType,
          overwrite: v.request.overwrite,
          // The base folder's name as the user gave it (the job sees a pinned /proc/self/fd path).
          name: lora ? undefined : basename(v.request.base_model_path),
          signal,
          onProgress,
        });
        ({ tensors, merged, fallbacks } = r);
      }
      const bytes = await bytesOf(output);
      spans.phase("write output", { "qlorad.bytes_out": bytes });
      return {
        export_result: {
          // The user's path, never the host's.
          output_path: v.request.output_path,
          format: v.request.format,
          type: v.request.type,
          tensors,
          merged_linears: merged,
          f16_fallbacks: fallbacks,
          bytes,
        },
      };
    },
  );
  return { summary: v.summary, request: v.request, run };
}

/** The Export RPC with `gguf` as its GGUF writer (exportGguf; tests wrap it). */
export function exportRpc(gguf: typeof exportGguf): JobRpc<ExportRequest, ValidatedExport> {
  return {
    kind: "export",
    method: "Export",
    validate: validateExportRequest,
    job: (v, ctx) => exportJob(v, ctx, gguf),
  };
}

export function exportHandler(ctx: ServiceContext, gguf: typeof exportGguf) {
  return jobRpcHandler(ctx, exportRpc(gguf));
}
