/**
 * The test command (`bash scripts/qlorad.sh test`, which CI runs): the whole suite on the default
 * adapter (Vulkan, on lavapipe where there is no GPU), then a smoke run on the OpenGL ES
 * fallback (the kernel tests and one RPC end to end), and one plain summary line over both runs
 * that CI reads: "tests: N passed, N failed". Exits non-zero when either run fails.
 *   deno task test                    # both runs
 *   deno task test tests/kernels/     # just these paths, on the default adapter
 * Kernel variants come from each kernel's prior (QLORAD_LADDER=prior), so no result depends on
 * a timing race; tests/kernels/ladder_test.ts tests the timing itself.
 */

/**
 * The kernel tests and one RPC end to end. The ladder's tests are left out: adapter-independent
 * logic, and its one real timing compiles every variant again; the whole suite has them.
 */
function glesSmokePaths(): string[] {
  const dir = new URL("../tests/kernels/", import.meta.url);
  const kernels = [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => n.endsWith("_test.ts") && n !== "ladder_test.ts")
    .sort()
    .map((n) => `tests/kernels/${n}`);
  return [...kernels, "tests/service/train_rpc_test.ts"];
}

interface RunResult {
  passed: number;
  failed: number;
  ok: boolean;
}

/** Runs deno test on `paths`, echoing its output, and reads its summary line. */
async function run(title: string, paths: string[], env: Record<string, string>) {
  console.log(`\n=== ${title}: deno test ${paths.join(" ")}`);
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-check=remote", ...paths],
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let tail = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    tail = (tail + decoder.decode(chunk, { stream: true })).slice(-4096);
  }
  const status = await child.status;
  const seconds = ((performance.now() - started) / 1000).toFixed(0);
  const summary = [...tail.matchAll(/(\d+) passed.*?\| (\d+) failed/g)].at(-1);
  const result: RunResult = summary
    ? { passed: Number(summary[1]), failed: Number(summary[2]), ok: status.success }
    : { passed: 0, failed: 1, ok: false }; // it died before its summary: count the run as failed
  if (!status.success && result.failed === 0) result.failed = 1;
  console.log(
    `=== ${title}: ${result.passed} passed, ${result.failed} failed in ${seconds} s` +
      (summary ? "" : " (no summary: the run died)"),
  );
  return result;
}

/** The adapter a run with this environment gets, or undefined when none opens. */
async function probe(env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("probe_gpu.ts", import.meta.url).pathname, "--json"],
    env,
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return undefined;
  return JSON.parse(new TextDecoder().decode(out.stdout)) as { software: boolean; adapter: string };
}

const ladder = { QLORAD_LADDER: Deno.env.get("QLORAD_LADDER") || "prior" };
const results: RunResult[] = [];
const main = await probe({});
console.log(`default adapter: ${main?.adapter ?? "none"}`);
results.push(
  Deno.args.length > 0
    ? await run("tests", Deno.args, ladder)
    : await run("whole suite", ["tests/"], ladder),
);

if (Deno.args.length === 0) {
  const gles = { ...ladder, QLORAD_GPU_BACKEND: "opengles" };
  const fallback = await probe(gles);
  if (fallback) {
    console.log(`OpenGL ES adapter: ${fallback.adapter}`);
    results.push(await run("OpenGL ES smoke run", glesSmokePaths(), gles));
  } else if (main && !main.software) {
    // A GPU machine without EGL: the fallback is for CPU-only machines, which always have it.
    console.log("OpenGL ES smoke run skipped: no OpenGL ES adapter on this GPU machine");
  } else {
    console.log("OpenGL ES smoke run: no OpenGL ES adapter (scripts/qlorad.sh installs Mesa)");
    results.push({ passed: 0, failed: 1, ok: false });
  }
}

const passed = results.reduce((s, r) => s + r.passed, 0);
const failed = results.reduce((s, r) => s + r.failed, 0);
console.log(`\ntests: ${passed} passed, ${failed} failed`);
Deno.exit(results.every((r) => r.ok) ? 0 : 1);
