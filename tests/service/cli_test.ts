/** `qlorad serve` and `qlorad quantize` as a user runs them: a real process, signals, exit codes. */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { connect, healthStatus } from "./grpc_client.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

function qlorad(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function run(args: string[]) {
  const out = await qlorad(args).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("cli: usage errors print the usage and exit 2", async () => {
  for (
    const args of [
      [],
      ["frobnicate"],
      ["serve"],
      ["serve", "--data-dir", "x", "--port", "http"],
      ["serve", "--data-dir", "x", "--bogus"],
      ["serve", "--data-dir", "x", "--gpu-memory-budget", "lots"],
      ["serve", "--data-dir", "x", "--gpu-memory-budget", "0GiB"],
      ["quantize", "--model", "m"],
      ["quantize", "--model", "m", "--out", "o", "--type", "int8"],
      ["quantize", "--model", "m", "--out", "o", "--blocksize", "100"],
    ]
  ) {
    const r = await run(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    // A command's error shows its own usage; no command or an unknown one, all of them.
    const shown = args[0] === "quantize" ? "quantize" : "serve";
    assert.match(r.stderr, new RegExp(`usage:\n {2}qlorad ${shown}`), args.join(" "));
  }
});

Deno.test("cli: serve announces its port, serves, and stops on SIGTERM", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-cli-" });
  const child = qlorad(["serve", "--port", "0", "--data-dir", dataDir]);
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  try {
    let seen = "";
    let port = 0;
    while (!port) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`serve exited early: ${seen}${await stderr}`);
      seen += value;
      const m = seen.match(/^qlorad listening on 127\.0\.0\.1:(\d+)$/m);
      if (m) port = Number(m[1]);
    }
    const clients = connect(port);
    try {
      assert.equal(await healthStatus(clients), "SERVING");
    } finally {
      clients.close();
    }
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0, await stderr);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await lines.cancel();
    await stderr;
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("cli: quantize writes the 4-bit folder with progress lines (not a terminal)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-cli-" });
  try {
    await makeTinyLlama(path.join(dir, "tiny"));
    const out = path.join(dir, "tiny-fp4");
    const r = await run([
      "quantize",
      "--model",
      path.join(dir, "tiny"),
      "--out",
      out,
      "--type",
      "fp4",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^quantized 14 of 21 tensors \(\d+ parameters\), kept 7 in their dtype; 4\.1\d\d bits\/parameter/,
    );
    // Progress counts the same 21 tensors, a line per 10% off a terminal, ending with the split.
    assert.match(r.stderr, /^tensors 21\/21 \(14 quantized, 7 kept\) /m);
    assert.equal(r.stderr.match(/^tensors +\d+\/21 /gm)?.length, 10);
    assert.doesNotMatch(r.stderr, /\r/);
    const config = JSON.parse(await Deno.readTextFile(path.join(out, "config.json")));
    assert.equal(config.quantization_config.bnb_4bit_quant_type, "fp4");

    // Again: the output exists, so it is refused (exit 1) and left as it was.
    const again = await run(["quantize", "--model", path.join(dir, "tiny"), "--out", out]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
