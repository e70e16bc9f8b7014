/**
 * The JobStore contract (src/service/jobs/store.ts), written against the interface only, so that
 * every implementation runs the same checks: the local store in job_store_local_test.ts, a shared
 * (Redis) store later. What it checks: records with compare-and-set generations and one job per
 * request id; contiguous logs (no gap, no duplicate seq, even from concurrent appends); reading
 * from any seq and following; the terminal event and record durable before anyone sees them;
 * leases with growing fencing tokens that lock a stale owner out; a reopen after a crash.
 */
import assert from "node:assert/strict";
import { Rng } from "../../src/util/random.ts";
import { endedRecord, isTerminal, StoreConflictError } from "../../src/service/jobs.ts";
import type {
  JobEvent,
  JobKind,
  JobRecord,
  JobState,
  JobStore,
  StoredJob,
} from "../../src/service/jobs.ts";

/** One store to test, and the same data reached again as after a crash. */
export interface StoreHarness {
  store: JobStore;
  /**
   * Leaves `store` as a killed process would (never closed, a write cut short where the
   * implementation can have one) and returns a store opened on the same data.
   */
  crashAndReopen(): Promise<JobStore>;
  /** Closes what is open and removes the data. */
  dispose(): Promise<void>;
}

export interface StoreSubject {
  /** Names the tests: "local", "redis", ... */
  name: string;
  /** A fresh, empty store. */
  fresh(): Promise<StoreHarness>;
}

/** Registers the contract's tests for `subject`. */
export function jobStoreContract(subject: StoreSubject): void {
  const test = (name: string, fn: (h: StoreHarness) => Promise<void>) =>
    Deno.test(`job store contract (${subject.name}): ${name}`, async () => {
      const h = await subject.fresh();
      try {
        await fn(h);
      } finally {
        await h.dispose();
      }
    });

  test("records: create at generation 1, get a copy, list newest first with filters", async (h) => {
    const { store } = h;
    const rng = new Rng(11);
    // An odd count, kinds and states drawn at random.
    const kinds: JobKind[] = ["quantize", "train", "evaluate"];
    const states: JobState[] = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
    const made: JobRecord[] = [];
    for (let i = 0; i < 7; i++) {
      // Distinct times (a tie is ordered by job id), in a different order than created.
      const r = record(`j${i}`, kinds[rng.int(3)], 1000 + ((i * 5 + 3) % 7) * 100 + rng.int(100));
      r.state = states[rng.int(states.length)];
      made.push(r);
      const { created, job } = await store.create(r);
      assert.equal(created, true);
      assert.deepEqual(job, { record: r, generation: 1 });
    }
    const got = (await store.get("j3"))!;
    assert.deepEqual(got, { record: made[3], generation: 1 });
    got.record.summary = "changed by the caller";
    assert.equal((await store.get("j3"))!.record.summary, made[3].summary, "get returns a copy");
    assert.equal(await store.get("nope"), undefined);

    // Newest first, computed here independently of selectRecords.
    const byAge = [...made].sort((a, b) => b.created_ms - a.created_ms);
    const ids = (jobs: StoredJob[]) => jobs.map((j) => j.record.job_id);
    assert.deepEqual(ids(await store.list()), byAge.map((r) => r.job_id));
    assert.deepEqual(ids(await store.list({ limit: 3 })), byAge.slice(0, 3).map((r) => r.job_id));
    for (const kind of kinds) {
      assert.deepEqual(
        ids(await store.list({ kind })),
        byAge.filter((r) => r.kind === kind).map((r) => r.job_id),
      );
    }
    const ended = byAge.filter((r) => isTerminal(r.state)).map((r) => r.job_id);
    assert.deepEqual(
      ids(await store.list({ states: ["SUCCEEDED", "FAILED", "CANCELLED"] })),
      ended,
    );

    await assert.rejects(store.create(made[0]), isConflict("generation"));
  });

  test("one job per (kind, request_id): create returns the first, findRequest finds it", async (h) => {
    const { store } = h;
    const first = { ...record("a", "train", 5), request_id: "k1", fingerprint: "f1" };
    assert.equal((await store.create(first)).created, true);
    const again = await store.create({ ...record("b", "train", 6), request_id: "k1" });
    assert.equal(again.created, false);
    assert.equal(again.job.record.job_id, "a");
    assert.equal(await store.get("b"), undefined, "the second record is not stored");
    // The key is per kind.
    assert.equal(
      (await store.create({ ...record("c", "evaluate", 7), request_id: "k1" })).created,
      true,
    );
    assert.equal((await store.findRequest("train", "k1"))?.record.job_id, "a");
    assert.equal((await store.findRequest("evaluate", "k1"))?.record.job_id, "c");
    assert.equal(await store.findRequest("quantize", "k1"), undefined);
    // Two creates racing for one key: exactly one job.
    const racing = await Promise.all(
      ["r1", "r2", "r3"].map((id, i) =>
        store.create({ ...record(id, "quantize", 10 + i), request_id: "race" })
      ),
    );
    assert.equal(racing.filter((r) => r.created).length, 1);
    assert.equal(new Set(racing.map((r) => r.job.record.job_id)).size, 1);
  });

  test("put is a compare-and-set on the generation", async (h) => {
    const { store } = h;
    const r = record("j", "train", 1);
    await store.create(r);
    const running = { ...r, state: "RUNNING" as const, started_ms: 2 };
    assert.equal(await store.put(running, { expectGeneration: 1 }), 2);
    // A writer that still holds generation 1 lost the race.
    await assert.rejects(
      store.put({ ...r, state: "CANCELLED" }, { expectGeneration: 1 }),
      isConflict("generation"),
    );
    assert.deepEqual(await store.get("j"), { record: running, generation: 2 });
    // Three writers that all saw generation 2: exactly one wins.
    const outcomes = await Promise.allSettled(
      [3, 4, 5].map((t) => store.put({ ...running, summary: `w${t}` }, { expectGeneration: 2 })),
    );
    const won = outcomes.filter((o) => o.status === "fulfilled");
    assert.equal(won.length, 1);
    assert.deepEqual(won.map((o) => (o as PromiseFulfilledResult<number>).value), [3]);
    for (const o of outcomes) {
      if (o.status === "rejected") assert.ok(isConflict("generation")(o.reason), String(o.reason));
    }
    await assert.rejects(
      store.put(record("nope", "train", 1), { expectGeneration: 1 }),
      (e: { kind?: string }) => e.kind === "not_found",
    );
  });

  test("appends are contiguous; a gap or a repeated seq is refused; read from any seq", async (h) => {
    const { store } = h;
    const rng = new Rng(23);
    const r = record("j", "quantize", 1);
    await store.create(r);
    const n = 9;
    const events = Array.from({ length: n }, (_, i) => event("j", i + 1, rng));
    // Issued without awaiting: applied in call order.
    await Promise.all(events.map((e) => store.append(e)));
    assert.deepEqual(await Array.fromAsync(store.read("j", 1)), events);
    assert.deepEqual(await Array.fromAsync(store.read("j", 4)), events.slice(3));
    assert.deepEqual(await Array.fromAsync(store.read("j", n)), events.slice(n - 1));
    assert.deepEqual(await Array.fromAsync(store.read("j", n + 1)), []);
    assert.deepEqual(await Array.fromAsync(store.read("nope", 1)), []);

    await assert.rejects(store.append(event("j", n + 2, rng)), isConflict("seq"));
    await assert.rejects(store.append(event("j", n, rng)), isConflict("seq"));
    await assert.rejects(store.append(event("j", 1, rng)), isConflict("seq"));
    // Five writers racing for the same next seq: exactly one is appended.
    const racers = Array.from({ length: 5 }, () => event("j", n + 1, rng));
    const outcomes = await Promise.allSettled(racers.map((e) => store.append(e)));
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1);
    for (const o of outcomes) {
      if (o.status === "rejected") assert.ok(isConflict("seq")(o.reason), String(o.reason));
    }
    const log = await Array.fromAsync(store.read("j", 1));
    assert.deepEqual(log.map((e) => e.seq), Array.from({ length: n + 1 }, (_, i) => i + 1));
    const winner = racers[outcomes.findIndex((o) => o.status === "fulfilled")];
    assert.deepEqual(log.at(-1), winner);
    await assert.rejects(
      store.append(event("nope", 1, rng)),
      (e: { kind?: string }) => e.kind === "not_found",
    );
  });

  test("end: the terminal event and the final record together; the log is then closed", async (h) => {
    const { store } = h;
    const rng = new Rng(31);
    const r = record("j", "train", 1);
    await store.create(r);
    const events = [1, 2, 3].map((s) => event("j", s, rng));
    for (const e of events) await store.append(e);
    const last = terminal("j", 4, "SUCCEEDED");
    const final = endedRecord({ ...r, last_seq: 3 }, last);
    // The terminal event takes the end() path, and end() takes only a terminal event.
    await assert.rejects(store.append(last));
    await assert.rejects(store.end(event("j", 4, rng), final, { expectGeneration: 1 }));
    // A stale generation ends nothing.
    await assert.rejects(store.end(last, final, { expectGeneration: 7 }), isConflict("generation"));
    assert.equal(await store.end(last, final, { expectGeneration: 1 }), 2);
    assert.deepEqual(await store.get("j"), { record: final, generation: 2 });
    assert.deepEqual(await Array.fromAsync(store.read("j", 1)), [...events, last]);
    await assert.rejects(store.append(event("j", 5, rng)), isConflict("seq"));
    await assert.rejects(
      store.end(terminal("j", 5, "FAILED"), final, { expectGeneration: 2 }),
      isConflict("seq"),
    );
  });

  test("follow: stored events, then live ones, until the terminal event or the signal", async (h) => {
    const { store } = h;
    const rng = new Rng(43);
    const r = record("j", "evaluate", 1);
    await store.create(r);
    const early = [1, 2, 3].map((s) => event("j", s, rng));
    for (const e of early) await store.append(e);
    const seen: JobEvent[] = [];
    const following = (async () => {
      for await (const e of store.read("j", 2, { follow: true })) seen.push(e);
    })();
    const stopper = new AbortController();
    const stopped: JobEvent[] = [];
    const aborted = (async () => {
      for await (const e of store.read("j", 1, { follow: true, signal: stopper.signal })) {
        stopped.push(e);
      }
    })();
    const late = [4, 5].map((s) => event("j", s, rng));
    for (const e of late) await store.append(e);
    // Wait (bounded by the test runner, not by a timer) until the aborted reader has caught up.
    while (stopped.length < 5) await new Promise((res) => setTimeout(res, 1));
    stopper.abort();
    await aborted;
    assert.deepEqual(stopped, [...early, ...late]);
    const last = terminal("j", 6, "CANCELLED");
    await store.end(last, endedRecord({ ...r, last_seq: 5 }, last), { expectGeneration: 1 });
    await following;
    assert.deepEqual(seen, [...early.slice(1), ...late, last]);
  });

  test("leases: one owner at a time, growing tokens, a stale owner is fenced off", async (h) => {
    const { store } = h;
    const rng = new Rng(59);
    const r = record("j", "train", 1);
    await store.create(r);
    const a = (await store.claim("j", "replica-a", 60_000))!;
    assert.equal(a.owner, "replica-a");
    assert.equal(a.job_id, "j");
    assert.ok(a.expires_ms > Date.now());
    assert.equal(await store.claim("j", "replica-b", 60_000), undefined, "held by a");
    await store.append(event("j", 1, rng), { fence: a.token });
    const running = { ...r, state: "RUNNING" as const, last_seq: 1 };
    assert.equal(await store.put(running, { expectGeneration: 1, fence: a.token }), 2);
    assert.equal((await store.renew(a, 60_000))?.token, a.token);

    // a loses its lease (released here; expired in a shared store) and b takes the job over.
    await store.release(a);
    const b = (await store.claim("j", "replica-b", 60_000))!;
    assert.ok(b.token > a.token, `token ${b.token} after ${a.token}`);
    assert.equal(await store.renew(a, 60_000), undefined);
    await assert.rejects(store.append(event("j", 2, rng), { fence: a.token }), isConflict("fence"));
    await assert.rejects(
      store.put(running, { expectGeneration: 2, fence: a.token }),
      isConflict("fence"),
    );
    const last = terminal("j", 2, "SUCCEEDED");
    const final = endedRecord(running, last);
    await assert.rejects(
      store.end(last, final, { expectGeneration: 2, fence: a.token }),
      isConflict("fence"),
    );
    // a's release of a lease it lost changes nothing.
    await store.release(a);
    assert.equal(await store.end(last, final, { expectGeneration: 2, fence: b.token }), 3);
    assert.deepEqual((await Array.fromAsync(store.read("j", 1))).map((e) => e.seq), [1, 2]);
    await store.release(b);
    assert.equal(await store.claim("nope", "replica-a", 1).catch(() => undefined), undefined);
  });

  test("a reopen after a crash keeps every ended job and a contiguous prefix of the others", async (h) => {
    const rng = new Rng(71);
    const { store } = h;
    const ended = record("ended", "quantize", 1);
    const open = record("open", "train", 2);
    await store.create(ended);
    await store.create(open);
    const endedLog = [1, 2, 3].map((s) => event("ended", s, rng));
    for (const e of endedLog) await store.append(e);
    const openLog = [1, 2, 3, 4, 5].map((s) => event("open", s, rng));
    for (const e of openLog) await store.append(e);
    const last = terminal("ended", 4, "FAILED");
    const final = endedRecord({ ...ended, last_seq: 3 }, last);

    // The crash comes the moment a follower sees the terminal event: it must already be durable.
    let reopened: JobStore | undefined;
    const watcher = (async () => {
      for await (const e of store.read("ended", 1, { follow: true })) {
        if (isTerminal(e.state)) reopened = await h.crashAndReopen();
      }
    })();
    await store.end(last, final, { expectGeneration: 1 });
    await watcher;
    const again = reopened!;
    assert.deepEqual(await again.get("ended"), { record: final, generation: 2 });
    assert.deepEqual(await Array.fromAsync(again.read("ended", 1)), [...endedLog, last]);

    // The unended job: its record, and its log up to some seq without a gap (the tail of a log
    // that was never ended may be lost); appends go on from there.
    assert.deepEqual(await again.get("open"), { record: open, generation: 1 });
    const kept = await Array.fromAsync(again.read("open", 1));
    assert.deepEqual(kept, openLog.slice(0, kept.length));
    const next = event("open", kept.length + 1, rng);
    await again.append(next);
    assert.deepEqual(await Array.fromAsync(again.read("open", 1)), [...kept, next]);
    assert.deepEqual(
      (await again.list()).map((j) => j.record.job_id),
      ["open", "ended"],
    );
    // No lease survived the crash.
    assert.ok(await again.claim("open", "replica-c", 60_000));
  });
}

// ---------------------------------------------------------------- makers

function record(jobId: string, kind: JobKind, createdMs: number): JobRecord {
  return {
    job_id: jobId,
    kind,
    state: "QUEUED",
    created_ms: createdMs,
    summary: `${kind} ${jobId}`,
    request: { base_model_path: `models/${jobId}`, r: 8 },
    last_seq: 0,
  };
}

/** A RUNNING progress event with random contents. */
function event(jobId: string, seq: number, rng: Rng): JobEvent {
  return {
    job_id: jobId,
    seq,
    time_ms: 1_000_000 + rng.int(1_000_000),
    state: "RUNNING",
    payload: { progress: { index: rng.int(1000), total: 1000, tensor: `t${rng.int(97)}` } },
  };
}

function terminal(jobId: string, seq: number, state: JobState): JobEvent {
  return {
    job_id: jobId,
    seq,
    time_ms: 2_000_000 + seq,
    state,
    ...(state === "SUCCEEDED"
      ? { payload: { train_result: { steps: seq } } }
      : { payload: { error: { kind: "cancelled" as const, message: `ended at ${seq}` } } }),
  };
}

function isConflict(reason: string): (err: unknown) => boolean {
  return (err) => err instanceof StoreConflictError && err.reason === reason;
}
