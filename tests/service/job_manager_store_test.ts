/**
 * How the job manager uses its JobStore (jobs_test.ts covers what it does for its callers): a job
 * runs only under a lease, every store write made while it runs carries the lease's fencing token,
 * the lease is given back at its end, a refused claim fails the job without running it, and a
 * store append that failed is made again with the next one, so a log never has a gap. The store
 * under the manager is the local one, seen through a wrapper that records and injects.
 */
import assert from "node:assert/strict";
import { JobManager, localJobsDir, LocalJobStore } from "../../src/service/jobs.ts";
import type { JobEvent, JobRun, JobStore, Lease } from "../../src/service/jobs.ts";
import { silentLogger } from "../../src/service/status.ts";
import { QloradError } from "../../src/util/errors.ts";

/** A store call as the wrapper saw it. */
interface Call {
  method: string;
  seq?: number;
  fence?: number;
  state?: string;
}

/** `inner` with every write and claim logged to `calls`, failures injected by `hooks`. */
function recording(
  inner: JobStore,
  calls: Call[],
  hooks: {
    failAppend?: (e: JobEvent) => boolean;
    /** Whether this end write finds the store unreachable. */
    failEnd?: () => boolean;
    refuseClaim?: boolean;
  } = {},
): JobStore {
  return {
    location: inner.location,
    create: (r) => (calls.push({ method: "create", state: r.state }), inner.create(r)),
    get: (id) => inner.get(id),
    findRequest: (k, id) => inner.findRequest(k, id),
    list: (f) => inner.list(f),
    put: (r, o) => (calls.push({ method: "put", state: r.state, fence: o.fence }), inner.put(r, o)),
    append: (e, o) => {
      calls.push({ method: "append", seq: e.seq, fence: o?.fence });
      if (hooks.failAppend?.(e)) return Promise.reject(new Error("injected: no space left"));
      return inner.append(e, o);
    },
    end: (e, r, o) => {
      calls.push({ method: "end", seq: e.seq, state: e.state, fence: o.fence });
      if (hooks.failEnd?.()) {
        return Promise.reject(new QloradError("unavailable", "injected: the store is away"));
      }
      return inner.end(e, r, o);
    },
    read: (id, from, o) => inner.read(id, from, o),
    claim: async (id, owner, ttl) => {
      if (hooks.refuseClaim) return (calls.push({ method: "claim refused" }), undefined);
      const lease = await inner.claim(id, owner, ttl);
      calls.push({ method: "claim", fence: lease?.token });
      return lease;
    },
    renew: (l, ttl) => inner.renew(l, ttl),
    release: (l: Lease) => (calls.push({ method: "release", fence: l.token }), inner.release(l)),
    close: () => inner.close(),
  };
}

/** A job that emits `n` progress events and succeeds. */
function steps(n: number, ran?: string[]): JobRun {
  return (ctx) => {
    ran?.push(ctx.jobId);
    for (let i = 1; i <= n; i++) ctx.emit({ progress: { index: i, total: n } });
    return Promise.resolve({ quantize_result: { parameters_quantized: n } });
  };
}

async function drain(m: JobManager, id: string): Promise<JobEvent[]> {
  return await Array.fromAsync(m.watch(id));
}

async function withStore(
  fn: (dataDir: string, inner: LocalJobStore) => Promise<void>,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-jobs-store-" });
  const inner = await LocalJobStore.open(localJobsDir(dataDir), silentLogger);
  try {
    await fn(dataDir, inner);
  } finally {
    await inner.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test("a job runs under a lease: its writes carry the token, released at its end", async () => {
  await withStore(async (dataDir, inner) => {
    const calls: Call[] = [];
    const m = await JobManager.open({
      dataDir,
      logger: silentLogger,
      store: recording(inner, calls),
    });
    const job = m.submit({ kind: "quantize", summary: "", request: {}, run: steps(3) });
    const events = await drain(m, job.job_id);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
    await m.close();
    const token = calls.find((c) => c.method === "claim")!.fence!;
    assert.ok(Number.isInteger(token));
    assert.deepEqual(calls, [
      // Submitted: not claimed yet, so no fence.
      { method: "create", state: "QUEUED" },
      { method: "append", seq: 1, fence: undefined },
      // Started: claimed first, then everything under the lease.
      { method: "claim", fence: token },
      { method: "append", seq: 2, fence: token },
      { method: "put", state: "RUNNING", fence: token },
      { method: "append", seq: 3, fence: token },
      { method: "append", seq: 4, fence: token },
      { method: "append", seq: 5, fence: token },
      { method: "end", seq: 6, state: "SUCCEEDED", fence: token },
      { method: "release", fence: token },
    ]);
    // A store given to the manager stays open after close(): it is the caller's.
    assert.equal((await inner.get(job.job_id))?.record.state, "SUCCEEDED");
  });
});

Deno.test("a refused claim fails the job without running it; the next job runs", async () => {
  await withStore(async (dataDir, inner) => {
    const calls: Call[] = [];
    const hooks = { refuseClaim: true };
    const m = await JobManager.open({
      dataDir,
      logger: silentLogger,
      store: recording(inner, calls, hooks),
    });
    try {
      const ran: string[] = [];
      const refused = m.submit({ kind: "train", summary: "", request: {}, run: steps(2, ran) });
      const last = (await drain(m, refused.job_id)).at(-1)!;
      assert.equal(last.state, "FAILED");
      assert.deepEqual(last.payload, {
        error: {
          kind: "unavailable",
          message: "this server could not claim the job in the job store",
        },
      });
      assert.deepEqual(ran, []);
      assert.ok(!calls.some((c) => c.method === "release"), "no lease, nothing released");
      hooks.refuseClaim = false;
      const next = m.submit({ kind: "train", summary: "", request: {}, run: steps(1, ran) });
      assert.equal((await drain(m, next.job_id)).at(-1)!.state, "SUCCEEDED");
      assert.deepEqual(ran, [next.job_id]);
    } finally {
      await m.close();
    }
  });
});

Deno.test("an append that failed is made again with the next one: the log has no gap", async () => {
  await withStore(async (dataDir, inner) => {
    const calls: Call[] = [];
    // The disk is full once, when seq 4 is first written.
    let failed = false;
    const failAppend = (e: JobEvent) => !failed && e.seq === 4 && (failed = true);
    const m = await JobManager.open({
      dataDir,
      logger: silentLogger,
      store: recording(inner, calls, { failAppend }),
    });
    const job = m.submit({ kind: "quantize", summary: "", request: {}, run: steps(5) });
    const live = await drain(m, job.job_id);
    await m.close();
    assert.ok(failed);
    assert.deepEqual(live.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
    // seq 4 was tried twice: alone (failed), then before 5.
    assert.deepEqual(
      calls.filter((c) => c.method === "append").map((c) => c.seq),
      [1, 2, 3, 4, 4, 5, 6, 7],
    );
    // What the store kept, read back through a fresh store on the same folder.
    const again = await LocalJobStore.open(localJobsDir(dataDir), silentLogger);
    try {
      assert.deepEqual(await Array.fromAsync(again.read(job.job_id, 1)), live);
      assert.equal((await again.get(job.job_id))?.record.state, "SUCCEEDED");
    } finally {
      await again.close();
    }
  });
});

Deno.test("an end write that finds the store away is made again while the lease holds", async () => {
  await withStore(async (dataDir, inner) => {
    const calls: Call[] = [];
    // The store is unreachable for the job's first three tries to end.
    let outage = 3;
    const failEnd = () => outage-- > 0;
    const m = await JobManager.open({
      dataDir,
      logger: silentLogger,
      store: recording(inner, calls, { failEnd }),
    });
    const job = m.submit({ kind: "quantize", summary: "", request: {}, run: steps(2) });
    const live = await drain(m, job.job_id);
    await m.close();
    assert.equal(live.at(-1)?.state, "SUCCEEDED");
    const ends = calls.filter((c) => c.method === "end");
    assert.equal(ends.length, 4);
    assert.ok(ends.every((c) => c.state === "SUCCEEDED" && c.seq === live.at(-1)?.seq));
    // The lease is given up only after the end is in the store.
    const order = calls.map((c) => c.method);
    assert.ok(order.lastIndexOf("end") < order.indexOf("release"));
    const again = await LocalJobStore.open(localJobsDir(dataDir), silentLogger);
    try {
      assert.equal((await again.get(job.job_id))?.record.state, "SUCCEEDED");
      assert.deepEqual(await Array.fromAsync(again.read(job.job_id, 1)), live);
    } finally {
      await again.close();
    }
  });
});
