/**
 * The GPU test subset of the GPU check: the kernel tests, the training engine and one RPC end to
 * end, each file a child `deno test` under a hard time limit (scripts/bench/bounded_child.ts), a few
 * at a time. A file that overruns has its stacks captured and is killed; the run goes on with the
 * next file. A run passes when every file passed.
 */
import { runBounded } from "./bounded_child.ts";

/** tests/kernels/*_test.ts, then the engine and one RPC end to end; one small file in small mode. */
export function gpuTestFiles(root: string, small: boolean): string[] {
  if (small) return ["tests/kernels/swiglu_test.ts"];
  const kernels = [...Deno.readDirSync(`${root}/tests/kernels`)]
    .filter((e) => e.isFile && e.name.endsWith("_test.ts"))
    .map((e) => `tests/kernels/${e.name}`)
    .sort();
  return [...kernels, "tests/train/engine_test.ts", "tests/service/train_rpc_test.ts"];
}

export type FileStatus = "passed" | "failed" | "timeout" | "skipped";

export interface TestFileResult {
  file: string;
  status: FileStatus;
  seconds: number;
  /** From deno test's summary line, when it printed one. */
  passedTests?: number;
  failedTests?: number;
  exitCode?: number | null;
  /** The last lines of output of a file that did not pass. */
  tail?: string;
}

export interface TestRun {
  run: number;
  /** Every file passed. */
  passed: boolean;
  /** Some files were not run (no time left). */
  incomplete: boolean;
  seconds: number;
  files: TestFileResult[];
}

export interface TestRunOptions {
  root: string;
  run: number;
  /** Files run at once. */
  jobs: number;
  fileTimeoutMs: number;
  /** Date.now() after which no file starts and running ones are stopped. */
  deadline: number;
  env: Record<string, string>;
  /** Each file's full (bounded) output, for the log. */
  onOutput: (file: string, text: string) => Promise<void> | void;
  /** Stacks of a file that overran. */
  onStacks: (file: string, text: string) => Promise<void> | void;
  onFile?: (r: TestFileResult) => void;
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

export async function runTestSubset(files: string[], o: TestRunOptions): Promise<TestRun> {
  const started = performance.now();
  const results: TestFileResult[] = new Array(files.length);
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const i = next++;
      const file = files[i];
      const left = o.deadline - Date.now();
      if (left < 2000) {
        results[i] = { file, status: "skipped", seconds: 0 };
        continue;
      }
      const r = await runBounded(Deno.execPath(), ["test", "-A", "--no-check", file], {
        timeoutMs: Math.min(o.fileTimeoutMs, left),
        env: { ...o.env, NO_COLOR: "1" },
        cwd: o.root,
      });
      await o.onOutput(file, r.output);
      if (r.stacks) await o.onStacks(file, r.stacks);
      const summary = [...r.output.matchAll(/(\d+) passed[^|\n]*\| (\d+) failed/g)].at(-1);
      const status: FileStatus = r.timedOut ? "timeout" : r.code === 0 ? "passed" : "failed";
      results[i] = {
        file,
        status,
        seconds: r.seconds,
        passedTests: summary ? Number(summary[1]) : undefined,
        failedTests: summary ? Number(summary[2]) : undefined,
        exitCode: r.code,
        tail: status === "passed" ? undefined : lastLines(r.output, 30),
      };
      o.onFile?.(results[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.jobs) }, worker));
  const incomplete = results.some((r) => r.status === "skipped");
  return {
    run: o.run,
    passed: results.every((r) => r.status === "passed"),
    incomplete,
    seconds: (performance.now() - started) / 1000,
    files: results,
  };
}
