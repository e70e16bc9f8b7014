/**
 * The GPU check's guard against hangs (scripts/bench/bounded_child.ts): a child that ends is
 * reported with its exit status and output; one that overruns its limit has its stacks captured
 * (/proc, and gdb where there is one) and is killed with everything it started.
 */
import assert from "node:assert/strict";
import { runBounded } from "../../scripts/bench/bounded_child.ts";

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X"; // a zombie is dead, only not yet reaped
  } catch {
    return false;
  }
}

Deno.test("a child that ends: exit status and output, no capture", async () => {
  const r = await runBounded("sh", ["-c", "echo out; echo err >&2; exit 3"], { timeoutMs: 60_000 });
  assert.equal(r.code, 3);
  assert.equal(r.timedOut, false);
  assert.equal(r.stacks, undefined);
  assert.match(r.output, /out/);
  assert.match(r.output, /err/);
});

Deno.test("a child that overruns: stacks captured, it and its own child killed", async () => {
  // The shell starts a background sleeper (a grandchild), then waits on a second one.
  const r = await runBounded("sh", ["-c", "sleep 300 & echo started; sleep 301"], {
    timeoutMs: 1500,
  });
  assert.equal(r.timedOut, true);
  assert.equal(r.signal, "SIGKILL");
  assert.match(r.output, /started/);
  const stacks = r.stacks ?? "";
  assert.match(stacks, new RegExp(`process ${r.pid}: .*sleep 301`));
  const sleepers = [...stacks.matchAll(/process (\d+): sleep 30[01]/g)].map((m) => Number(m[1]));
  assert.equal(sleepers.length, 2, stacks);
  assert.match(stacks, /tid \d+ sleep state S/);
  // A debugger's report or the note that there is none: which one depends on the machine.
  assert.match(stacks, /thread apply all bt|no debugger/);
  for (const pid of [r.pid, ...sleepers]) assert.equal(alive(pid), false, `${pid} still runs`);
});

Deno.test("output is kept to its head and tail", async () => {
  const r = await runBounded("sh", ["-c", "yes line | head -n 100000"], {
    timeoutMs: 60_000,
    headBytes: 100,
    tailBytes: 200,
  });
  assert.equal(r.code, 0);
  assert.ok(r.output.length < 400, `${r.output.length} chars kept`);
  assert.match(r.output, /chars cut/);
});
