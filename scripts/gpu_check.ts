/**
 * `deno task gpu-check --out DIR`: one command that measures a GPU, offline, in a bounded time
 * (a lent machine gives one call of 8 minutes), everything written under DIR:
 *   gpu-check.json  the figures (the issue's fields first), per-stage status, errors and timings
 *   gpu-check.md    the same as Markdown, with the issue's targets
 *   gpu-check.log   every stage's and test file's output
 *   hangs.txt       stacks of anything that overran its limit (/proc, then gdb), if anything did
 * Stages (scripts/bench/gpu_check_plan.ts): the adapter and the kernel ladder's choices; the GPU test
 * subset (three runs: one early, two at the end); NF4 / dense GEMM at M = 4096; NF4 GEMV against a
 * copy kernel; the ~50M model's training; Llama-2-7B-shaped QLoRA training (and paged AdamW when
 * time is left); one Llama-3-8B layer's training at 512, 2,048 and 8,192 tokens; generation
 * (prefill tokens/s, KV-cached decode ms/token) at the Llama-2-7B shape and ~50M. Each stage runs
 * in a child process under a hard time limit, so a stage that hangs in the driver is captured,
 * killed, recorded, and the next one runs; the JSON and Markdown are rewritten after every stage.
 * Exit status 0 when every stage ran and every test passed.
 *
 *   deno task gpu-check --out DIR [--small] [--budget-s N] [--only gemm,gemv,...]
 *                       [--test-jobs N] [--test-timeout-s N]
 * --small runs every stage at tiny shapes (a couple of minutes on a CPU adapter; CI's check).
 */
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { GpuContext } from "../src/gpu/context.ts";
import { writeFileAtomic } from "../src/io/atomic.ts";
import { runBounded } from "./bench/bounded_child.ts";
import { type CheckMode, checkPlan, stageTimeoutS } from "./bench/gpu_check_plan.ts";
import {
  assembleResults,
  renderMarkdown,
  type StageData,
  type StageRecord,
} from "./bench/gpu_check_report.ts";
import { type MeasuringStage, runStage } from "./bench/gpu_check_stages.ts";
import { gpuTestFiles, runTestSubset, type TestRun } from "./bench/test_subset.ts";
import { BENCH_LORA } from "./bench/train_bench.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SELF = fileURLToPath(import.meta.url);

const { values } = parseArgs({
  args: Deno.args,
  options: {
    out: { type: "string" },
    small: { type: "boolean", default: false },
    "budget-s": { type: "string" },
    only: { type: "string" },
    "test-jobs": { type: "string" },
    "test-timeout-s": { type: "string" },
    // A stage's own process (started by this script).
    stage: { type: "string" },
    work: { type: "string" },
    deadline: { type: "string" },
  },
});

function fail(message: string): never {
  console.error(`gpu-check: ${message}`);
  Deno.exit(2);
}

function positive(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) fail(`--${name} must be a positive number, got "${raw}"`);
  return v;
}

const mode: CheckMode = values.small ? "small" : "full";
const plan = checkPlan(mode);
const started = Date.now();
const clock = () => ((Date.now() - started) / 1000).toFixed(0).padStart(3);

if (values.stage) await stageMain(values.stage);
else await checkMain();

/** One measuring stage in this process; what it measured goes to <work>/<stage>.json. */
async function stageMain(name: string): Promise<never> {
  const measuring = [
    "adapter",
    "gemm",
    "gemv",
    "train_50m",
    "train_7b",
    "train_8b_1l",
    "generate",
  ];
  if (!measuring.includes(name)) fail(`--stage ${name} is not one of ${measuring.join(", ")}`);
  if (!values.work) fail("--stage needs --work");
  const deadline = Number(values.deadline ?? Date.now() + 60_000);
  const file = join(values.work, `${name}.json`);
  const log = (line: string) => console.error(`[${name} ${clock()} s] ${line}`);
  // Saves in order: a stage may report again before the previous write finished.
  let last: Record<string, unknown> = {};
  let chain = Promise.resolve();
  let ctx: GpuContext | undefined;
  const save = (data: Record<string, unknown>) => {
    // Every stage names its adapter, so a report without the adapter stage still has one.
    last = { ...data, adapter: ctx?.adapterKey };
    const text = JSON.stringify(last);
    chain = chain.then(() => writeFileAtomic(file, text)).catch((e) =>
      log(`cannot write ${file}: ${(e as Error).message}`)
    );
    return chain;
  };
  let code = 0;
  try {
    ctx = await GpuContext.open({ log });
    await runStage(name as MeasuringStage, { ctx, plan, deadline, save, log });
  } catch (e) {
    code = 1;
    const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    log(`failed: ${e instanceof Error ? e.stack : message}`);
    await save({ ...last, error: message });
  }
  await chain;
  try {
    ctx?.destroy();
  } catch {
    // exiting anyway
  }
  Deno.exit(code);
}

function gitCommit(): { commit: string | null; source: string | null } {
  const git = (...args: string[]) => {
    const r = new Deno.Command("git", { args: ["-C", ROOT, ...args], stderr: "null" }).outputSync();
    return r.success ? new TextDecoder().decode(r.stdout).trim() : undefined;
  };
  try {
    const head = git("rev-parse", "--short=12", "HEAD");
    if (head) {
      const dirty = git("status", "--porcelain", "--untracked-files=no");
      return { commit: dirty ? `${head}+dirty` : head, source: "git" };
    }
  } catch {
    // no git here (a lent machine gets the tree without .git)
  }
  const env = Deno.env.get("QLORAD_COMMIT");
  return env ? { commit: env, source: "QLORAD_COMMIT" } : { commit: null, source: null };
}

/** One line for a table cell: no newlines or pipes, at most 300 characters. */
function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").replace(/\|/g, "/").trim();
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

async function checkMain(): Promise<never> {
  if (!values.out) fail("--out DIR is required");
  const out = resolve(values.out);
  const budgetS = positive("budget-s", values["budget-s"]) ?? plan.budgetS;
  const jobs = positive("test-jobs", values["test-jobs"]) ?? plan.tests.jobs;
  const fileTimeoutS = positive("test-timeout-s", values["test-timeout-s"]) ??
    plan.tests.fileTimeoutS;
  const only = values.only ? new Set(values.only.split(",").map((s) => s.trim())) : undefined;
  const work = join(out, "work");
  await Deno.mkdir(work, { recursive: true });
  const logPath = join(out, "gpu-check.log");
  const stacksPath = join(out, "hangs.txt");
  await Deno.writeTextFile(logPath, `gpu-check ${mode}, started ${new Date().toISOString()}\n`);
  const append = (path: string, title: string, text: string) =>
    Deno.writeTextFile(path, `\n===== ${title} =====\n${text.trimEnd()}\n`, { append: true });
  const progress = (line: string) => console.error(`[gpu-check ${clock()} s] ${line}`);

  const deadline = started + budgetS * 1000;
  const { commit, source } = gitCommit();
  const files = gpuTestFiles(ROOT, mode === "small");
  const stages: StageRecord[] = [];
  const data: StageData = {};
  const testRuns: TestRun[] = [];
  const date = new Date().toISOString();
  const write = async (pending: string[]) => {
    const results = assembleResults(
      {
        date,
        commit,
        commitSource: source,
        mode,
        budgetS,
        totalS: (Date.now() - started) / 1000,
        deno: Deno.version.deno,
        shapes: {
          gemm_m: plan.gemm.m,
          ...Object.fromEntries(plan.gemm.shapes.map((s) => [s.key, [s.out, s.in]])),
          gemv: [plan.gemv.out, plan.gemv.in],
          train_7b: {
            ...plan.train7b.cfg,
            batch: plan.train7b.batch,
            seq: plan.train7b.seq,
            r: BENCH_LORA.r,
          },
          train_8b_1l: { ...plan.train8b1l.cfg, lengths: plan.train8b1l.lengths, r: BENCH_LORA.r },
          train_50m: {
            name: plan.train50m.name,
            batch: plan.train50m.batch,
            seq: plan.train50m.seq,
          },
          generate: plan.generate.cases.map((c) => ({
            name: c.name,
            hidden: c.cfg.hidden,
            layers: c.cfg.layers,
            kv_heads: c.cfg.kvHeads,
            head_dim: c.cfg.headDim,
            vocab: c.cfg.vocab,
            prompt_tokens: c.promptTokens,
            new_tokens: c.newTokens,
            r: BENCH_LORA.r,
          })),
        },
        pending,
      },
      stages,
      data,
      testRuns,
      files,
    );
    await writeFileAtomic(join(out, "gpu-check.json"), JSON.stringify(results, null, 1) + "\n");
    const md = renderMarkdown(results);
    await writeFileAtomic(join(out, "gpu-check.md"), md + "\n");
    return { results, md };
  };

  const selected = plan.stages.filter((s) =>
    !only || only.has(s.name) || (only.has("tests") && s.name.startsWith("tests-"))
  );
  await write(selected.map((s) => s.name));
  progress(`${mode} check, budget ${budgetS} s, writing to ${out}`);
  for (const [i, st] of selected.entries()) {
    const pending = selected.slice(i + 1).map((s) => s.name);
    const leftS = (deadline - Date.now()) / 1000;
    const timeoutS = Math.floor(stageTimeoutS(selected, i, leftS));
    if (timeoutS < Math.min(10, st.minS)) {
      stages.push({
        name: st.name,
        status: "skipped",
        seconds: 0,
        timeoutS: Math.max(0, timeoutS),
        error: `no time left (${leftS.toFixed(0)} s of the budget)`,
      });
      progress(`${st.name}: skipped, no time left`);
      await write(pending);
      continue;
    }
    progress(`${st.name}: up to ${timeoutS} s`);
    const t0 = Date.now();
    if (st.name.startsWith("tests-")) {
      const run = Number(st.name.slice("tests-".length));
      const r = await runTestSubset(files, {
        root: ROOT,
        run,
        jobs,
        fileTimeoutMs: fileTimeoutS * 1000,
        deadline: t0 + timeoutS * 1000,
        env: {},
        onOutput: (f, text) => append(logPath, `tests run ${run}: ${f}`, text),
        onStacks: (f, text) => append(stacksPath, `tests run ${run}: ${f} overran`, text),
        onFile: (fr) =>
          progress(`  run ${run} ${fr.file}: ${fr.status} (${fr.seconds.toFixed(1)} s)`),
      });
      testRuns.push(r);
      const bad = r.files.filter((f) => f.status === "failed" || f.status === "timeout");
      const skipped = r.files.filter((f) => f.status === "skipped");
      stages.push({
        name: st.name,
        status: bad.some((f) => f.status === "timeout")
          ? "timeout"
          : bad.length
          ? "failed"
          : skipped.length
          ? "skipped"
          : "ok",
        seconds: (Date.now() - t0) / 1000,
        timeoutS,
        error: bad.length || skipped.length
          ? oneLine(
            [
              ...bad.map((f) => `${f.file} ${f.status}`),
              ...(skipped.length ? [`${skipped.length} files not run (no time left)`] : []),
            ].join("; "),
          )
          : undefined,
      });
    } else {
      // The stage plans its own work to end a little before it is killed.
      const marginMs = Math.min(15_000, 0.15 * timeoutS * 1000);
      const r = await runBounded(Deno.execPath(), [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        SELF,
        "--stage",
        st.name,
        "--work",
        work,
        "--deadline",
        String(Math.round(t0 + timeoutS * 1000 - marginMs)),
        ...(mode === "small" ? ["--small"] : []),
      ], { timeoutMs: timeoutS * 1000, cwd: ROOT });
      await append(logPath, `stage ${st.name} (exit ${r.code ?? r.signal})`, r.output);
      if (r.stacks) await append(stacksPath, `stage ${st.name} overran ${timeoutS} s`, r.stacks);
      const file = join(work, `${st.name}.json`);
      let saved: Record<string, unknown> = {};
      try {
        saved = JSON.parse(await Deno.readTextFile(file));
        await Deno.remove(file);
      } catch {
        // the stage saved nothing
      }
      const { error, ...rest } = saved as { error?: string };
      (data as Record<string, unknown>)[st.name] = rest;
      const lastLine = r.output.trimEnd().split("\n").slice(-3).join(" ");
      stages.push({
        name: st.name,
        status: r.timedOut ? "timeout" : r.code === 0 ? "ok" : "failed",
        seconds: r.seconds,
        timeoutS,
        error: r.timedOut
          ? `overran ${timeoutS} s; stacks in hangs.txt${error ? `; ${oneLine(error)}` : ""}`
          : r.code === 0
          ? undefined
          : oneLine(error ?? `exit ${r.code ?? r.signal}: ${lastLine}`),
      });
    }
    const rec = stages.at(-1)!;
    progress(
      `${st.name}: ${rec.status} (${rec.seconds.toFixed(1)} s)${rec.error ? `: ${rec.error}` : ""}`,
    );
    await write(pending);
  }
  await Deno.remove(work, { recursive: true }).catch(() => {});
  const { md } = await write([]);
  console.log(md);
  const ok = stages.every((s) => s.status === "ok");
  Deno.exit(ok ? 0 : 1);
}
