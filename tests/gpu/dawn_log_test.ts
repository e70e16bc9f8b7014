/**
 * Dawn's own notices stay off users' terminals (src/gpu/dawn_log.ts): the sorting of captured
 * native output, the QLORAD_DAWN_LOG switch, and `deno task qlorad eval` run for real on the
 * OpenGL ES adapter (whose Dawn prints two "artificially reduced" warnings at adapter discovery)
 * with and without the switch.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { dawnLogVerbose, sortDawnLog } from "../../src/gpu/dawn_log.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";

Deno.test("sortDawnLog holds Dawn's warnings back and passes errors and foreign text on", () => {
  // Text as Dawn's logger writes it (dawn/common/Log.cpp: "<Severity>: <message>\n", some
  // messages followed by an indented source line and a blank line).
  const captured = [
    "Warning: Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file",
    "    at operator() (/dawn/src/dawn/native/vulkan/BackendVk.cpp:368)",
    "",
    "Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16.",
    "Error: Device lost: something real",
    "    at Lost (/dawn/src/dawn/native/Device.cpp:12)",
    "Info: adapter toggles",
    "mesa: a driver line that is not Dawn's",
    "Debug: x",
    "",
  ].join("\n");
  const r = sortDawnLog(captured);
  assert.equal(
    r.shown,
    "Error: Device lost: something real\n" +
      "    at Lost (/dawn/src/dawn/native/Device.cpp:12)\n" +
      "mesa: a driver line that is not Dawn's\n",
  );
  assert.deepEqual(r.held, [
    "Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file",
    "maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16.",
    "adapter toggles",
    "x",
  ]);
  assert.deepEqual(sortDawnLog(""), { shown: "", held: [] });
  // Text without a final newline is passed on with one.
  assert.equal(sortDawnLog("plain").shown, "plain\n");
});

Deno.test("QLORAD_DAWN_LOG: on, off, and a bad value named", () => {
  const env = (v?: string) => new Map(v === undefined ? [] : [["QLORAD_DAWN_LOG", v]]);
  for (const v of [undefined, "", "0", "false", "OFF"]) assert.equal(dawnLogVerbose(env(v)), false);
  for (const v of ["1", "true", "On"]) assert.equal(dawnLogVerbose(env(v)), true);
  assert.throws(() => dawnLogVerbose(env("loud")), /QLORAD_DAWN_LOG must be .*"loud"/);
});

const root = new URL("../..", import.meta.url).pathname;

Deno.test("quietDawn: native writes to fd 1 and 2 are sorted, the fds restored after", async () => {
  // A child process writes as Dawn does (libc write on fd 2 and 1, inside the call), then
  // prints the held notices and writes once more after the call, which must pass untouched.
  const script = `
    import { quietDawn } from "${new URL("../../src/gpu/dawn_log.ts", import.meta.url).href}";
    const libc = Deno.dlopen("libc.so.6", {
      write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    }).symbols;
    const put = (fd, t) => { const b = new TextEncoder().encode(t); libc.write(fd, b, BigInt(b.length)); };
    const r = quietDawn(() => {
      put(2, "Warning: a notice\\n    at f (x.cpp:1)\\n\\nError: a real error\\nplain stderr\\n");
      put(1, "Info: an info\\nplain stdout\\n");
      return 42;
    });
    put(2, "Warning: after the call\\n");
    console.log(JSON.stringify(r));
    try {
      quietDawn(() => { put(2, "Warning: why it failed\\n"); throw new Error("native failure"); });
    } catch (e) {
      console.log(e.message);
    }
  `;
  const run = async (env: Record<string, string>) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=js", script],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const d = new TextDecoder();
    return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
  };
  const quiet = await run({ QLORAD_DAWN_LOG: "" });
  assert.equal(quiet.code, 0, quiet.err);
  // A call that throws shows all it printed (it may say why), then its error goes on.
  assert.equal(
    quiet.err,
    "Error: a real error\nplain stderr\nWarning: after the call\nWarning: why it failed\n",
  );
  assert.equal(
    quiet.out,
    "plain stdout\n" +
      JSON.stringify({ value: 42, notices: ["an info", "a notice"] }) + "\nnative failure\n",
  );
  const loud = await run({ QLORAD_DAWN_LOG: "1" });
  assert.equal(loud.code, 0, loud.err);
  assert.match(loud.err, /^Warning: a notice\n {4}at f/);
  assert.match(loud.out, /^Info: an info\nplain stdout\n/);
  assert.match(loud.out, /"notices":\[\]/);
});

async function qloradTask(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["task", "qlorad", ...args],
    cwd: root,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, err: new TextDecoder().decode(r.stderr) };
}

Deno.test("deno task qlorad shows Dawn's notices only with QLORAD_DAWN_LOG=1", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = join(dir, "tiny");
    await makeTinyLlama(model, { trainRecords: 8, evalRecords: 3 });
    const args = [
      "eval",
      "--model",
      model,
      "--data",
      join(model, "eval.jsonl"),
      "--max-seq-len",
      "64",
    ];
    const gles = { QLORAD_GPU_BACKEND: "opengles" };
    const quiet = await qloradTask(args, gles);
    assert.equal(quiet.code, 0, quiet.err);
    assert.match(quiet.err, /qlorad: GPU dawn\/opengles/);
    assert.doesNotMatch(quiet.err, /artificially reduced|^Warning:/m);
    const verbose = await qloradTask(args, { ...gles, QLORAD_DAWN_LOG: "1" });
    assert.equal(verbose.code, 0, verbose.err);
    assert.match(verbose.err, /^Warning: maxDynamic\w+ artificially reduced/m);

    // Vulkan without its loader (this machine's system has none; lavapipe's is taken out of the
    // library path): the held notice is the reason in the error, not a stray line.
    const noVulkan = { QLORAD_GPU_BACKEND: "vulkan", LD_LIBRARY_PATH: "", VK_ICD_FILENAMES: "" };
    const told = await qloradTask(args, { ...noVulkan, QLORAD_DAWN_LOG: "1" });
    if (/Couldn't load Vulkan/.test(told.err)) {
      const failed = await qloradTask(args, noVulkan);
      assert.equal(failed.code, 1, failed.err);
      assert.match(failed.err, /dawn vulkan: no adapter \(Dawn: Couldn't load Vulkan: /);
      assert.doesNotMatch(failed.err, /^Warning:/m);
    } else {
      console.log("a system Vulkan loader is installed: the no-loader case is not reachable");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
