/** `qlorad train` and `qlorad eval` as a user runs them: real processes on the tiny fixture. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTinyLlama } from "../scripts/tiny_llama/mod.ts";

const cli = new URL("../src/cli/main.ts", import.meta.url).pathname;

async function qlorad(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

Deno.test("qlorad train writes a PEFT adapter; qlorad eval reports a lower loss with it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = join(dir, "tiny");
    await makeTinyLlama(model);
    const data = ["--data", join(model, "train.jsonl"), "--max-seq-len", "64"];
    const t = await qlorad(
      "train",
      "--model",
      model,
      ...data,
      "--out",
      join(dir, "run"),
      "--steps",
      "12",
      "--batch",
      "8",
      "--lr",
      "5e-3",
    );
    assert.equal(t.code, 0, t.err);
    assert.equal(t.out.match(/^step \d+\/12 loss /gm)?.length, 12);
    await Deno.stat(join(dir, "run", "adapter_model.safetensors"));
    const evalArgs = [
      "eval",
      "--model",
      model,
      "--data",
      join(model, "eval.jsonl"),
      "--max-seq-len",
      "64",
    ];
    const base = await qlorad(...evalArgs);
    const tuned = await qlorad(...evalArgs, "--adapter", join(dir, "run"));
    assert.equal(base.code, 0, base.err);
    assert.equal(tuned.code, 0, tuned.err);
    const b = JSON.parse(base.out.trim().split("\n").at(-1)!);
    const a = JSON.parse(tuned.out.trim().split("\n").at(-1)!);
    assert.equal(a.tokens, b.tokens);
    assert.ok(a.loss < b.loss, `${b.loss} -> ${a.loss}`);
    // A missing flag is a usage error (exit 2); a bad input a failure (exit 1); both named.
    const bad = await qlorad("train", "--model", model);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /train needs --data/);
    const missing = await qlorad(
      "eval",
      "--model",
      join(dir, "nope"),
      "--data",
      join(model, "eval.jsonl"),
    );
    assert.equal(missing.code, 1);
    assert.match(missing.err, /nope/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
