/**
 * Installs the llama.cpp the GGUF tests run (npm `node-llama-cpp`, pinned with its lock file in
 * this folder) into tests/llama_cpp/node_modules (git-ignored) the first time a test needs it:
 * `npm install --omit=optional --ignore-scripts` takes the pinned versions from the lock and
 * leaves out every optional platform binary (CUDA, Vulkan, macOS, Windows), while the CPU-only
 * `@node-llama-cpp/linux-x64` prebuilt is a direct dependency, so it alone comes down (about
 * 85 MB); no install script runs (node-llama-cpp's would try to download or build llama.cpp).
 * Runs under Node (node-llama-cpp is a Node addon), not Deno.
 */
import { join } from "node:path";

export const LLAMA_CPP_DIR = new URL(".", import.meta.url).pathname;
export const LOGPROBS_SCRIPT = join(LLAMA_CPP_DIR, "logprobs.mjs");
const PINNED = "3.22.1";

/** Why the llama.cpp tests cannot run on this machine, or undefined when they can. */
export function llamaCppUnavailable(): string | undefined {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `node-llama-cpp's CPU prebuilt is installed for linux x86_64 only, not ${Deno.build.os} ${Deno.build.arch}`;
  }
  return undefined;
}

async function installedVersion(pkg: string): Promise<string | undefined> {
  try {
    const text = await Deno.readTextFile(
      join(LLAMA_CPP_DIR, "node_modules", pkg, "package.json"),
    );
    return JSON.parse(text).version;
  } catch {
    return undefined;
  }
}

async function installed(): Promise<boolean> {
  return await installedVersion("node-llama-cpp") === PINNED &&
    await installedVersion("@node-llama-cpp/linux-x64") === PINNED;
}

const LOCK = join(LLAMA_CPP_DIR, ".install-lock");
/** A lock older than this is left over from a killed run. */
const STALE_LOCK_MS = 15 * 60_000;

/**
 * Installs the pinned packages unless they are there already. Test files may run in parallel:
 * one installs (holding a lock folder, mkdir being atomic) while the others wait for it.
 */
export async function ensureLlamaCpp(): Promise<void> {
  for (;;) {
    if (await installed()) return;
    try {
      await Deno.mkdir(LOCK);
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const age = Date.now() - ((await Deno.stat(LOCK).catch(() => null))?.mtime?.getTime() ?? 0);
      if (age > STALE_LOCK_MS) await Deno.remove(LOCK).catch(() => {});
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    if (await installed()) return;
    const out = await new Deno.Command("npm", {
      args: ["install", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"],
      cwd: LLAMA_CPP_DIR,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `npm install in ${LLAMA_CPP_DIR} failed:\n${
          new TextDecoder().decode(out.stderr).slice(-2000)
        }`,
      );
    }
  } finally {
    await Deno.remove(LOCK).catch(() => {});
  }
}

export interface LlamaCppJob {
  model: string;
  lora?: string[];
  tokens: number[];
  text?: string;
  logits?: boolean;
  kvCache?: "F32" | "F16";
  vocabOnly?: boolean;
}

export interface LlamaCppResult {
  logprobs: number[];
  vocab: number;
  tokenized?: number[];
  logits?: number[][];
}

/** Runs the jobs in one Node process (llama.cpp loads once) and returns its results. */
export async function runLlamaCpp(
  jobs: LlamaCppJob[],
  workDir: string,
): Promise<LlamaCppResult[]> {
  await ensureLlamaCpp();
  const jobsPath = join(workDir, "llama_cpp_jobs.json");
  await Deno.writeTextFile(jobsPath, JSON.stringify(jobs));
  const out = await new Deno.Command("node", {
    args: [LOGPROBS_SCRIPT, jobsPath],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `node ${LOGPROBS_SCRIPT} failed:\n${new TextDecoder().decode(out.stderr).slice(-3000)}`,
    );
  }
  return JSON.parse(new TextDecoder().decode(out.stdout));
}
