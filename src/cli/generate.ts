/**
 * `qlorad generate`: the Generate job on local folders (no server), printing the text as the
 * tokens come, for trying out a model or an adapter right after training. Its settings, defaults
 * and ranges are the Generate RPC's (src/train/generate_settings.ts); an error names the flag.
 */
import { resolve } from "node:path";
import { GpuContext } from "../gpu/context.ts";
import type { ChatMessage } from "../data/tokenizer.ts";
import { type GenerateJobResult, runGenerateJob } from "../train/generate_job.ts";
import {
  GENERATE_DEFAULTS as D,
  type GenerateKey,
  type GenerateSettings,
  generateSettings,
} from "../train/generate_settings.ts";
import { type Command, type CommandIo, interruptible, parseFlags, usageError } from "./command.ts";

/** Each setting's flag, as errors name it. */
const FLAGS: Record<GenerateKey, string> = {
  maxNewTokens: "--max-new-tokens",
  temperature: "--temperature",
  topK: "--top-k",
  topP: "--top-p",
  seed: "--seed",
  stop: "--stop",
  ignoreEos: "--ignore-eos",
};

export const GENERATE: Command = {
  name: "generate",
  usage: `  qlorad generate --base DIR [--adapter DIR] (--prompt TEXT | --messages FILE.json)
                  [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
                  [--stop TEXT ...] [--ignore-eos]
      Generate text from a prompt, or from chat messages (a JSON list of {"role", "content"}
      rendered with the model's chat template), with a local model folder and optionally an
      adapter; the text is printed as it comes, a summary goes to stderr. The Generate RPC's
      defaults: --max-new-tokens ${D.maxNewTokens}, --temperature ${D.temperature} (greedy),` +
    ` --top-k ${D.topK} (no limit),
      --top-p ${D.topP}, --seed ${D.seed}; --stop may be repeated.`,
  run: (args, io) =>
    interruptible(async (signal) => {
      await generate(args, io, writeStdout, signal);
      return 0;
    }),
};

const encoder = new TextEncoder();

/** Text to stdout as it comes, without a newline. */
function writeStdout(text: string): void {
  if (text !== "") Deno.stdout.writeSync(encoder.encode(text));
}

/** The settings `qlorad generate`'s flags give (a SettingError naming the flag when one is bad). */
export function generateSettingsOfFlags(v: {
  "max-new-tokens"?: string;
  temperature?: string;
  "top-k"?: string;
  "top-p"?: string;
  seed?: string;
  stop?: string[];
  "ignore-eos"?: boolean;
}): GenerateSettings {
  return generateSettings({
    maxNewTokens: v["max-new-tokens"],
    temperature: v.temperature,
    topK: v["top-k"],
    topP: v["top-p"],
    seed: v.seed,
    stop: v.stop,
    ignoreEos: v["ignore-eos"],
  }, (k) => FLAGS[k]);
}

/** The chat of a --messages file: a JSON list of {role, content}; a UsageError names the flag. */
export async function readMessages(file: string): Promise<ChatMessage[]> {
  const where = `--messages ${JSON.stringify(file)}`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    usageError(`${where}: cannot read it (${err instanceof Error ? err.message : err})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    usageError(`${where}: not JSON (${err instanceof Error ? err.message : err})`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) {
    usageError(`${where}: must be a non-empty JSON list of {"role", "content"} objects`);
  }
  return parsed.map((m, i) => {
    const ok = typeof m === "object" && m !== null && typeof m.role === "string" &&
      m.role !== "" && typeof m.content === "string";
    if (!ok) usageError(`${where}: entry ${i} is not {"role": TEXT, "content": TEXT}`);
    return { role: m.role, content: m.content };
  });
}

/**
 * Runs `qlorad generate ARGS`: the text goes to `write` piece by piece as the tokens come, then
 * a newline; the summary goes to `io.printError`. Resolves to the job's result.
 */
export async function generate(
  args: string[],
  io: CommandIo,
  write: (text: string) => void,
  signal?: AbortSignal,
): Promise<GenerateJobResult> {
  const v = parseFlags(args, {
    base: { type: "string" },
    adapter: { type: "string" },
    prompt: { type: "string" },
    messages: { type: "string" },
    "max-new-tokens": { type: "string" },
    temperature: { type: "string" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    seed: { type: "string" },
    stop: { type: "string", multiple: true },
    "ignore-eos": { type: "boolean" },
  });
  const base = v.base ?? usageError("generate needs --base DIR");
  if ((v.prompt === undefined) === (v.messages === undefined)) {
    usageError("generate needs exactly one of --prompt TEXT and --messages FILE.json");
  }
  if (v.prompt === "") usageError("--prompt: must not be empty");
  const settings = generateSettingsOfFlags(v);
  const messages = v.messages === undefined ? undefined : await readMessages(v.messages);
  const ctx = await GpuContext.open();
  try {
    const r = await runGenerateJob(() => Promise.resolve(ctx), {
      baseModelDir: resolve(base),
      adapterDir: v.adapter ? resolve(v.adapter) : undefined,
      prompt: v.prompt,
      messages,
      settings,
      labels: { baseModel: base, adapter: v.adapter },
    }, {
      log: (level, message) => io.printError(`${level}: ${message}`),
      token: (_id, text) => write(text),
    }, signal);
    write("\n");
    io.printError(
      `[${r.finishReason}: ${r.promptTokens} prompt tokens, ${r.tokenIds.length} generated; ` +
        `prefill ${r.prefillTokensPerSecond.toFixed(1)} tok/s, decode ${
          r.decodeTokensPerSecond.toFixed(1)
        } tok/s]`,
    );
    return r;
  } finally {
    ctx.destroy();
  }
}
