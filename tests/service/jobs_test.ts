import assert from "node:assert/strict";
import * as path from "node:path";
import { CancelledError, QloradError } from "../../src/util/errors.ts";
import {
  JobManager,
  RESTARTED_WHILE_QUEUED,
  RESTARTED_WHILE_RUNNING,
} from "../../src/service/jobs.ts";
import type { JobContext, JobEvent, JobManagerOptions, JobRun } from "../../src/service/jobs.ts";
import { INTERNAL_MESSAGE, silentLogger } from "../../src/service/status.ts";

/** A promise the test resolves by hand. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => open = resolve);
  return { promise, open };
}

/** Resolves when `signal` aborts; rejects with the abort reason (as a real job would). */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

async function withManager(
  fn: (m: JobManager, dataDir: string) => Promise<void>,
  opts: Partial<JobManagerOptions> = {},
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-jobs-" });
  const m = await JobManager.open({ dataDir, logger: silentLogger, ...opts });
  try {
    await fn(m, dataDir);
  } finally {
    await m.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Every event of a job until it ends. */
async function drain(m: JobManager, id: string, fromSeq = 1): Promise<JobEvent[]> {
  const out: JobEvent[] = [];
  for await (const ev of m.watch(id, fromSeq)) out.push(ev);
  return out;
}

/** A job that emits `n` progress events, then waits for `until` (if given), then succeeds. */
function steps(n: number, until?: Promise<void>, log?: string[], name = "job"): JobRun {
  return async (ctx: JobContext) => {
    log?.push(`start ${name}`);
    for (let i = 1; i <= n; i++) ctx.emit({ progress: { index: i, total: n, tensor: `t${i}` } });
    if (until) await Promise.race([until, untilAborted(ctx.signal)]);
    log?.push(`end ${name}`);
    return { quantize_result: { parameters_quantized: n } };
  };
}

Deno.test("a job's log: QUEUED, RUNNING, its events, then SUCCEEDED with the result", async () => {
  await withManager(async (m) => {
    const rec = m.submit({ kind: "quantize", summary: "s", request: { a: 1 }, run: steps(3) });
    assert.match(rec.job_id, /^quantize-/);
    const events = await drain(m, rec.job_id);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(
      events.map((e) => e.state),
      ["QUEUED", "RUNNING", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"],
    );
    assert.equal(events[0].payload, undefined);
    assert.deepEqual(events[3].payload, { progress: { index: 2, total: 3, tensor: "t2" } });
    assert.deepEqual(events[5].payload, { quantize_result: { parameters_quantized: 3 } });
    const done = m.get(rec.job_id);
    assert.equal(done.state, "SUCCEEDED");
    assert.equal(done.last_seq, 6);
    assert.deepEqual(done.request, { a: 1 });
    assert.ok(done.started_ms! >= done.created_ms && done.finished_ms! >= done.started_ms!);
    assert.equal(done.error, undefined);
  });
});

Deno.test("jobs run one at a time, in submission order", async () => {
  await withManager(async (m) => {
    const log: string[] = [];
    const gates = [gate(), gate(), gate()];
    const ids = gates.map((g, i) =>
      m.submit({
        kind: "quantize",
        summary: "",
        request: {},
        run: steps(1, g.promise, log, `${i}`),
      })
        .job_id
    );
    await Promise.resolve();
    assert.deepEqual(ids.map((id) => m.get(id).state), ["RUNNING", "QUEUED", "QUEUED"]);
    // Release them out of order: the queue order still decides who runs.
    gates[2].open();
    gates[1].open();
    await Promise.resolve();
    assert.deepEqual(ids.map((id) => m.get(id).state), ["RUNNING", "QUEUED", "QUEUED"]);
    gates[0].open();
    for (const id of ids) await drain(m, id);
    assert.deepEqual(log, ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]);
    assert.deepEqual(ids.map((id) => m.get(id).state), ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]);
    // Newest first.
    assert.deepEqual(m.list().map((r) => r.job_id), [...ids].reverse());
    assert.deepEqual(m.list({ limit: 1 }).map((r) => r.job_id), [ids[2]]);
    assert.deepEqual(m.list({ kind: "train" }), []);
    assert.deepEqual(m.list({ states: ["FAILED"] }), []);
  });
});

Deno.test("the queue is bounded: past maxQueued, submit is resource_exhausted", async () => {
  await withManager(async (m) => {
    const g = gate();
    const sub = () =>
      m.submit({ kind: "train", summary: "", request: {}, run: steps(0, g.promise) });
    const running = sub();
    const waiting = [sub(), sub()];
    assert.throws(sub, (err: QloradError) => {
      assert.equal(err.kind, "resource_exhausted");
      assert.match(err.message, /queue is full \(2 waiting/);
      return true;
    });
    assert.equal(m.list().length, 3, "a refused job leaves no record");
    g.open();
    for (const r of [running, ...waiting]) await drain(m, r.job_id);
    sub(); // room again
  }, { maxQueued: 2 });
});

Deno.test("cancel: a queued job ends at once, a running one through its signal", async () => {
  await withManager(async (m) => {
    const log: string[] = [];
    let sawSignal: AbortSignal | undefined;
    const running = m.submit({
      kind: "quantize",
      summary: "",
      request: {},
      run: (ctx) => {
        sawSignal = ctx.signal;
        ctx.emit({ progress: { index: 1, total: 2 } });
        return untilAborted(ctx.signal);
      },
    });
    const queued = m.submit({
      kind: "quantize",
      summary: "",
      request: {},
      run: steps(1, undefined, log),
    });

    const q = await m.cancel(queued.job_id);
    assert.equal(q.state, "CANCELLED");
    assert.deepEqual(q.error, { kind: "cancelled", message: "cancelled before it started" });
    const qEvents = await drain(m, queued.job_id);
    assert.deepEqual(qEvents.map((e) => e.state), ["QUEUED", "CANCELLED"]);

    const r = await m.cancel(running.job_id);
    assert.equal(r.state, "RUNNING", "a running job ends when it stops");
    assert.equal(sawSignal?.aborted, true);
    const rEvents = await drain(m, running.job_id);
    const last = rEvents.at(-1)!;
    assert.equal(last.state, "CANCELLED");
    assert.deepEqual(last.payload, {
      error: { kind: "cancelled", message: "cancelled by CancelJob" },
    });
    assert.equal(m.get(running.job_id).state, "CANCELLED");
    assert.equal(
      (await m.cancel(running.job_id)).state,
      "CANCELLED",
      "cancelling an ended job changes nothing",
    );
    assert.equal(m.get(running.job_id).last_seq, last.seq);
    assert.deepEqual(log, [], "the cancelled queued job never ran");

    // The next job still runs.
    const next = m.submit({ kind: "quantize", summary: "", request: {}, run: steps(1) });
    assert.equal((await drain(m, next.job_id)).at(-1)!.state, "SUCCEEDED");
  });
});

Deno.test("a job that throws ends FAILED: its QloradError, or a generic internal error", async () => {
  await withManager(async (m, dataDir) => {
    const bad = m.submit({
      kind: "quantize",
      summary: "",
      request: {},
      run: () => {
        throw new QloradError(
          "invalid_argument",
          `${dataDir}/m/model.safetensors: truncated header`,
        );
      },
    });
    const badLast = (await drain(m, bad.job_id)).at(-1)!;
    assert.equal(badLast.state, "FAILED");
    // The host path is replaced by the path relative to the data directory.
    assert.deepEqual(badLast.payload, {
      error: { kind: "invalid_argument", message: "m/model.safetensors: truncated header" },
    });
    assert.equal(m.get(bad.job_id).error?.kind, "invalid_argument");

    const bug = m.submit({
      kind: "quantize",
      summary: "",
      request: {},
      run: () => Promise.reject(new TypeError(`x is undefined at ${dataDir}/secret`)),
    });
    const bugLast = (await drain(m, bug.job_id)).at(-1)!;
    assert.deepEqual(bugLast.payload, { error: { kind: "internal", message: INTERNAL_MESSAGE } });

    // A CancelledError thrown without CancelJob is a failure of kind "cancelled", not a cancel.
    const odd = m.submit({
      kind: "quantize",
      summary: "",
      request: {},
      run: () => Promise.reject(new CancelledError("stopped by itself")),
    });
    assert.equal((await drain(m, odd.job_id)).at(-1)!.state, "FAILED");
  });
});

Deno.test("watch replays from any seq, then follows live events", async () => {
  await withManager(async (m) => {
    const g = gate();
    const job = m.submit({ kind: "quantize", summary: "", request: {}, run: steps(4, g.promise) });
    // Live: a watcher that starts before the job has finished.
    const live = drain(m, job.job_id);
    await Promise.resolve();
    g.open();
    const all = await live;
    assert.deepEqual(all.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual((await drain(m, job.job_id, 4)).map((e) => e.seq), [4, 5, 6, 7]);
    assert.deepEqual((await drain(m, job.job_id, 0)).map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(await drain(m, job.job_id, 99), []);
    assert.deepEqual(await m.events(job.job_id), all);
    assert.throws(() => m.watch("nope"), (err: QloradError) => err.kind === "not_found");
    assert.throws(() => m.get("nope"), (err: QloradError) => err.kind === "not_found");
    await assert.rejects(m.cancel("nope"), (err: QloradError) => err.kind === "not_found");
  });
});

Deno.test("a watcher that disconnects leaves the job running to the end", async () => {
  await withManager(async (m) => {
    const g = gate();
    const job = m.submit({ kind: "quantize", summary: "", request: {}, run: steps(2, g.promise) });
    const disconnect = new AbortController();
    const seen: number[] = [];
    const watcher = (async () => {
      for await (const ev of m.watch(job.job_id, 1, disconnect.signal)) seen.push(ev.seq);
    })();
    // Wait until the watcher has caught up with the emitted events, then drop it.
    while (seen.length < 4) await new Promise((r) => setTimeout(r, 1));
    disconnect.abort();
    await watcher;
    assert.equal(m.get(job.job_id).state, "RUNNING");
    g.open();
    const replay = await drain(m, job.job_id);
    assert.equal(replay.at(-1)!.state, "SUCCEEDED");
    assert.deepEqual(seen, [1, 2, 3, 4]);
  });
});

Deno.test("records persist; a restart marks jobs left RUNNING or QUEUED as FAILED", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-jobs-" });
  const jobsDir = path.join(dataDir, ".qlorad", "jobs");
  try {
    const a = await JobManager.open({ dataDir, logger: silentLogger });
    const done = a.submit({ kind: "quantize", summary: "done", request: { x: 1 }, run: steps(2) });
    await drain(a, done.job_id);
    const g = gate();
    const running = a.submit({
      kind: "quantize",
      summary: "running",
      request: {},
      run: steps(2, g.promise),
    });
    const queued = a.submit({ kind: "train", summary: "queued", request: {}, run: steps(1) });
    while (a.get(running.job_id).last_seq < 4) await new Promise((r) => setTimeout(r, 1));
    const doneEvents = await a.events(done.job_id);
    // The server dies: close() aborts the running job but records no outcome for it.
    await a.close();
    assert.equal(
      JSON.parse(await Deno.readTextFile(path.join(jobsDir, `${running.job_id}.json`))).state,
      "RUNNING",
    );
    // And a crash mid-append left a torn line.
    await Deno.writeTextFile(
      path.join(jobsDir, `${running.job_id}.events.jsonl`),
      '{"seq": 5, "sta',
      {
        append: true,
      },
    );

    const b = await JobManager.open({ dataDir, logger: silentLogger });
    try {
      const d = b.get(done.job_id);
      assert.equal(d.state, "SUCCEEDED");
      assert.equal(d.summary, "done");
      assert.deepEqual(d.request, { x: 1 });
      assert.deepEqual(await drain(b, done.job_id), doneEvents);
      assert.deepEqual((await drain(b, done.job_id, 3)).map((e) => e.seq), [3, 4, 5]);

      const r = b.get(running.job_id);
      assert.equal(r.state, "FAILED");
      assert.deepEqual(r.error, { kind: "unavailable", message: RESTARTED_WHILE_RUNNING });
      const rEvents = await drain(b, running.job_id);
      assert.deepEqual(rEvents.map((e) => e.seq), [1, 2, 3, 4, 5]);
      assert.deepEqual(
        rEvents.map((e) => e.state),
        ["QUEUED", "RUNNING", "RUNNING", "RUNNING", "FAILED"],
      );
      assert.equal(r.last_seq, 5);
      assert.deepEqual(r.last_event, rEvents[4]);

      const q = b.get(queued.job_id);
      assert.equal(q.state, "FAILED");
      assert.equal(q.error?.message, RESTARTED_WHILE_QUEUED);
      assert.deepEqual(b.list().map((x) => x.job_id), [queued.job_id, running.job_id, done.job_id]);

      // The store is consistent: no temp files, and the next job runs.
      for await (const e of Deno.readDir(jobsDir)) assert.ok(!e.name.includes(".partial-"), e.name);
      const next = b.submit({ kind: "quantize", summary: "", request: {}, run: steps(1) });
      assert.equal((await drain(b, next.job_id)).at(-1)!.state, "SUCCEEDED");
    } finally {
      await b.close();
    }

    // A third start finds everything ended and changes nothing.
    const c = await JobManager.open({ dataDir, logger: silentLogger });
    try {
      assert.equal(c.get(running.job_id).last_seq, 5);
      assert.deepEqual((await drain(c, running.job_id)).map((e) => e.seq), [1, 2, 3, 4, 5]);
    } finally {
      await c.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("after close, submit is unavailable and watches end", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-jobs-" });
  try {
    const m = await JobManager.open({ dataDir, logger: silentLogger });
    const job = m.submit({
      kind: "quantize",
      summary: "",
      request: {},
      run: steps(0, gate().promise),
    });
    const watching = drain(m, job.job_id);
    await m.close();
    assert.deepEqual((await watching).map((e) => e.state), ["QUEUED", "RUNNING"]);
    assert.throws(
      () => m.submit({ kind: "quantize", summary: "", request: {}, run: steps(0) }),
      (err: QloradError) => err.kind === "unavailable",
    );
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
