/**
 * Generate: checks the request (fields, paths, the model's config, tokenizer and chat template,
 * the prompt's length within max_position_embeddings, the adapter) before any job exists, then
 * queues a generation job, so it waits for the one GPU like every other job. The job streams one
 * GeneratedText event per token and ends with a GenerateResult. Unlike the other jobs, it follows
 * its call: a client that cancels or disconnects cancels the job (it stops at the next token).
 */
import { loadTokenizer } from "../../data/tokenizer.ts";
import { type GenerateJobOptions, runGenerateJob } from "../../train/generate_job.ts";
import {
  type GenerateKey,
  type GenerateSettings,
  generateSettings,
} from "../../train/generate_settings.ts";
import { invalidArgument } from "../../util/errors.ts";
import { normalizeUserPath } from "../paths.ts";
import { checkFolderLinks } from "../confine.ts";
import { resolveAdapterFolder } from "./adapter_folder.ts";
import type { ServiceContext } from "./jobs.ts";
import { dataRelative, jobBody, type JobStart, startJob } from "./job_rpc.ts";
import { readModelConfig } from "./model_config.ts";
import { modelFolder } from "./train.ts";
import { checkPathFields } from "./validate.ts";
import { jobTrace } from "../../telemetry/tracing.ts";
import { tracedJob } from "../job_telemetry.ts";
import type { Echoed, GenerateRequest, JobEventStream } from "../messages.ts";

/** Limits on the prompt: characters of the prompt, turns, characters per turn and role. */
export const MAX_PROMPT_CHARS = 65536;
export const MAX_MESSAGES = 256;
const MAX_ROLE_CHARS = 64;

export interface ValidatedGenerate {
  /** The request with every default filled in (what GetJob shows). */
  request: Echoed<GenerateRequest>;
  options: GenerateJobOptions;
  summary: string;
}

const GENERATE_FIELDS: Record<GenerateKey, string> = {
  maxNewTokens: "max_new_tokens",
  temperature: "temperature",
  topK: "top_k",
  topP: "top_p",
  seed: "seed",
  stop: "stop",
  ignoreEos: "ignore_eos",
};

/** The request's sampling and stopping settings, defaults filled in. */
export function generateSettingsOf(req: GenerateRequest): GenerateSettings {
  return generateSettings({
    // uint32 without presence: 0 is "the default" (128).
    maxNewTokens: req.max_new_tokens === 0 ? undefined : req.max_new_tokens ?? undefined,
    temperature: req.temperature ?? undefined,
    topK: req.top_k ?? undefined,
    topP: req.top_p ?? undefined,
    seed: req.seed ?? undefined,
    stop: req.stop?.length ? req.stop : undefined,
    ignoreEos: req.ignore_eos ?? undefined,
  }, (k) => GENERATE_FIELDS[k]);
}

/** prompt or messages, exactly one, within the limits. */
function promptOf(req: GenerateRequest): Pick<GenerateJobOptions, "prompt" | "messages"> {
  const prompt = req.prompt ?? "";
  const messages = req.messages ?? [];
  if ((prompt === "") === (messages.length === 0)) {
    throw invalidArgument("prompt, messages: set exactly one of them");
  }
  if (prompt !== "") {
    if (prompt.length > MAX_PROMPT_CHARS) {
      throw invalidArgument(`prompt: longer than ${MAX_PROMPT_CHARS} characters`);
    }
    return { prompt };
  }
  if (messages.length > MAX_MESSAGES) {
    throw invalidArgument(`messages: at most ${MAX_MESSAGES} turns, got ${messages.length}`);
  }
  let chars = 0;
  for (const [i, m] of messages.entries()) {
    const role = m.role ?? "";
    if (role.length === 0 || role.length > MAX_ROLE_CHARS) {
      throw invalidArgument(`messages[${i}].role: must be 1..${MAX_ROLE_CHARS} characters`);
    }
    chars += (m.content ?? "").length;
  }
  if (chars > MAX_PROMPT_CHARS) {
    throw invalidArgument(`messages: contents longer than ${MAX_PROMPT_CHARS} characters in all`);
  }
  return { messages: messages.map((m) => ({ role: m.role, content: m.content ?? "" })) };
}

export async function validateGenerateRequest(
  req: GenerateRequest,
  dataDir: string,
): Promise<ValidatedGenerate> {
  checkPathFields(req, ["base_model_path", "adapter_path"]);
  const settings = generateSettingsOf(req);
  const text = promptOf(req);
  const baseModelDir = await modelFolder(dataDir, req.base_model_path, "base_model_path");
  const { cfg } = await readModelConfig(dataDir, req.base_model_path, "base_model_path");
  const tokenizer = await loadTokenizer(baseModelDir);
  if (text.messages && !tokenizer.hasChatTemplate) {
    throw invalidArgument(
      `messages: base_model_path ${JSON.stringify(req.base_model_path)} has no chat template ` +
        `(send a prompt instead)`,
    );
  }
  const ids = text.messages
    ? tokenizer.encode(tokenizer.applyChatTemplate(text.messages, { addGenerationPrompt: true }), {
      addSpecialTokens: false,
    })
    : tokenizer.encode(text.prompt!, { addSpecialTokens: true });
  const field = text.messages ? "messages" : "prompt";
  if (ids.length >= cfg.maxPositions) {
    throw invalidArgument(
      `${field}: ${ids.length} tokens leave no room for new ones within the model's ` +
        `max_position_embeddings ${cfg.maxPositions}`,
    );
  }
  const adapterDir = await resolveAdapterFolder(dataDir, req.adapter_path);
  const labels = {
    baseModel: normalizeUserPath(req.base_model_path),
    adapter: req.adapter_path ? normalizeUserPath(req.adapter_path) : undefined,
  };
  return {
    request: {
      base_model_path: labels.baseModel,
      adapter_path: labels.adapter ?? "",
      prompt: text.prompt ?? "",
      messages: text.messages ?? [],
      max_new_tokens: settings.maxNewTokens,
      temperature: settings.temperature,
      top_k: settings.topK,
      top_p: settings.topP,
      seed: settings.seed,
      stop: settings.stop,
      ignore_eos: settings.ignoreEos,
    },
    options: { baseModelDir, adapterDir, ...text, settings, labels },
    summary: `generate ${settings.maxNewTokens} tokens with ${labels.baseModel}${
      labels.adapter ? ` + ${labels.adapter}` : ""
    } (${settings.temperature === 0 ? "greedy" : `temperature ${settings.temperature}`})`,
  };
}

const FINISH_REASONS = {
  eos: "FINISH_REASON_EOS",
  stop: "FINISH_REASON_STOP",
  length: "FINISH_REASON_LENGTH",
};

/** The job of a checked request (cancelled with its call: startJob's cancelWithCall). */
export function generateJob(v: ValidatedGenerate, ctx: ServiceContext): JobStart {
  const spans = jobTrace("generate", {
    "qlorad.model": v.request.base_model_path,
    "qlorad.adapter": v.request.adapter_path,
  });
  let traced: ReturnType<typeof tracedJob>;
  const run = jobBody(spans, ({ emit }) => {
    traced = tracedJob(spans, {
      progress: (message, index, total) => emit({ progress: { message, index, total } }),
      log: (level, message) => emit({ log: { level, message } }),
    }, ctx.gpu);
    return { userPath: dataRelative(ctx.dataDir), finish: () => traced.finish() };
  }, async (job, pins) => {
    const o = v.options;
    const label = (field: "base_model_path" | "adapter_path") =>
      `${field} ${JSON.stringify(v.request[field])}`;
    const baseModelDir = await pins.pin(o.baseModelDir, label("base_model_path"), "dir");
    await checkFolderLinks(ctx.dataDir, baseModelDir, label("base_model_path"));
    const adapterDir = o.adapterDir
      ? await pins.pin(o.adapterDir, label("adapter_path"), "dir")
      : undefined;
    if (adapterDir) await checkFolderLinks(ctx.dataDir, adapterDir, label("adapter_path"));
    const r = await runGenerateJob(traced.gpu, {
      ...o,
      baseModelDir,
      adapterDir,
      gpuMemoryBudgetBytes: ctx.gpuMemoryBudgetBytes,
    }, {
      ...traced.hooks,
      token: (id, text) => job.emit({ generated_text: { text, token_ids: [id] } }),
    }, job.signal);
    spans.set({ "qlorad.generated_tokens": r.tokenIds.length });
    return {
      generate_result: {
        text: r.text,
        finish_reason: FINISH_REASONS[r.finishReason],
        prompt_tokens: r.promptTokens,
        generated_tokens: r.tokenIds.length,
        token_ids: r.tokenIds,
        prefill_tokens_per_second: r.prefillTokensPerSecond,
        decode_tokens_per_second: r.decodeTokensPerSecond,
      },
    };
  });
  return { summary: v.summary, request: v.request, run };
}

/** The Generate RPC: validate, submit, stream (job_rpc.ts's startJob), tied to its call. */
export function generateHandler(ctx: ServiceContext) {
  // A Generate submitted on another replica of a fleet (and still QUEUED) runs here from its
  // stored request; its tokens reach its caller through the shared log, and its call's end
  // cancels it wherever it runs (startJob's cancelWithCall).
  ctx.runners?.set(
    "generate",
    async (request) =>
      generateJob(await validateGenerateRequest(request as GenerateRequest, ctx.dataDir), ctx),
  );
  return (call: JobEventStream<GenerateRequest>) =>
    startJob(call, ctx, "generate", "Generate", async () => {
      const v = await validateGenerateRequest(call.request, ctx.dataDir);
      return generateJob(v, ctx);
    }, { cancelWithCall: true });
}
