/** The house rules a green suite must keep: `deno fmt`, `deno lint` and `deno check` clean. */
import assert from "node:assert/strict";

const root = new URL("..", import.meta.url).pathname;

async function deno(...args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, output: text.slice(-4000) };
}

Deno.test("deno fmt --check is clean", async () => {
  const r = await deno("fmt", "--check");
  assert.equal(r.code, 0, r.output);
});

Deno.test("deno lint is clean", async () => {
  const r = await deno("lint");
  assert.equal(r.code, 0, r.output);
});

Deno.test("deno check is clean for src, scripts and tests", async () => {
  const r = await deno("check", "src", "scripts", "tests");
  assert.equal(r.code, 0, r.output);
});
