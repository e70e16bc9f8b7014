/**
 * A fleet (issue 11): Debian's redis-server and three `qlorad serve --replica-id` processes that
 * share one data directory and the Redis job store act as one service. Jobs submitted through
 * replica A with the Python client (clients/python, run by fleet_client.py on Debian's python3)
 * run wherever a GPU is free and are watched through B and C, the Train to be killed with the
 * Python client too; the replica running a
 * Train is SIGKILLed at a checkpoint and another takes the job over from that checkpoint, ending
 * with the same adapter bytes as an uninterrupted run with the same seed; every job's log, read
 * through any replica, is 1..n with no gap and no duplicate; CancelJob through a replica that does
 * not run the job stops it; a replica paused (SIGSTOP) past its lease cannot commit once resumed;
 * a replica stopped gracefully (SIGTERM) hands its job over at a checkpoint. In-process, two
 * fleet-mode managers (each with its BullMQ worker on the fleet queue) check a lapsed lease's
 * commit, a job no replica can take over, that a replica is given a job only while it runs none,
 * and what becomes of the QUEUED jobs of a replica that stopped.
 * Leases are short (a setting) so that takeovers come quickly; no duration is asserted.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { partialPath } from "../../src/io/atomic.ts";
import { findRedisServer, RedisServer } from "../support/redis_server.ts";
import { JobManager } from "../../src/service/jobs.ts";
import type { JobRecord, JobRun, JobStore } from "../../src/service/jobs.ts";
import { RedisJobStore } from "../../src/service/jobs/redis_store.ts";
import { redisStoreSettings } from "../../src/service/jobs/redis_settings.ts";
import { silentLogger } from "../../src/service/status.ts";
import { QloradError } from "../../src/util/errors.ts";
import { call, type Clients, collect, connect, follow, type Msg } from "./grpc_client.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
/** Short, so a dead or paused replica's job is taken over soon (renewed every third). */
const LEASE_TTL_MS = 2500;

interface Replica {
  name: string;
  port: number;
  child: Deno.ChildProcess;
  clients: Clients;
  /** What the server has logged so far (stderr). */
  log(): string;
  alive: boolean;
}

async function startReplica(name: string, dataDir: string, store: string): Promise<Replica> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CLI,
      "serve",
      "--port",
      "0",
      "--data-dir",
      dataDir,
      "--store",
      store,
      "--replica-id",
      name,
      "--lease-ttl-ms",
      String(LEASE_TTL_MS),
    ],
    env: { QLORAD_GPU_BACKEND: Deno.env.get("QLORAD_GPU_BACKEND") ?? "opengles" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
  })().catch(() => {});
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let port = 0;
  while (!port) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`replica ${name} exited early: ${seen}${log}`);
    seen += value;
    port = Number(seen.match(/listening on 127\.0\.0\.1:(\d+)/)?.[1] ?? 0);
  }
  // Keep reading stdout so the child never blocks on a full pipe.
  (async () => {
    while (!(await lines.read()).done) { /* drain */ }
  })().catch(() => {});
  return { name, port, child, clients: connect(port), log: () => log, alive: true };
}

function kill(r: Replica): void {
  if (!r.alive) return;
  r.alive = false;
  r.clients.close();
  try {
    r.child.kill("SIGKILL");
  } catch {
    // gone already
  }
}

const TRAIN = {
  base_model_path: "models/tiny-nf4",
  dataset_path: "models/tiny/train.jsonl",
  lora: { r: 4 },
  hyperparameters: {
    max_steps: 13,
    micro_batch_size: 2,
    max_seq_len: 40,
    learning_rate: 1e-3,
    save_steps: 2,
    seed: 11,
  },
};
const EVALUATE = {
  base_model_path: "models/tiny-nf4",
  dataset_path: "models/tiny/eval.jsonl",
  max_seq_len: 40,
  batch_size: 4,
};

/** Starts a job through `via` and returns its id (from its first event). */
async function submit(via: Replica, method: string, req: Msg): Promise<string> {
  const stream = via.clients.qlorad[method](req);
  const first = await follow(stream).until(() => true);
  // The job lives on without this stream.
  stream.cancel();
  return first.job_id;
}

/** A job's whole log through `via`, once the job has ended. */
async function finalLog(via: Replica, jobId: string): Promise<Msg[]> {
  const out = await collect(via.clients.qlorad.WatchJob({ job_id: jobId }));
  assert.equal(out.code, grpc.status.OK, `${jobId} through ${via.name}: ${out.details}`);
  return out.events;
}

/** The log has seq 1..n, exactly once each, and ends with one terminal event. */
function assertContiguous(events: Msg[], jobId: string): void {
  assert.deepEqual(events.map((e) => Number(e.seq)), events.map((_, i) => i + 1), jobId);
  const terminal = events.filter((e) => !/QUEUED|RUNNING/.test(e.state));
  assert.equal(terminal.length, 1, `${jobId}: ${terminal.length} terminal events`);
  assert.equal(terminal[0], events.at(-1));
}

async function owner(via: Replica, jobId: string): Promise<string> {
  return (await call(via.clients.qlorad, "GetJob", { job_id: jobId })).owner;
}

/** Polls GetJob through `via` until `ok` holds for the job (no time limit: the test's own). */
async function waitFor(via: Replica, jobId: string, ok: (job: Msg) => boolean): Promise<Msg> {
  while (true) {
    const job = await call(via.clients.qlorad, "GetJob", { job_id: jobId });
    if (ok(job)) return job;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const redisBinary = findRedisServer();

const PYTHON = "/usr/bin/python3";
const PY_CLIENT = fileURLToPath(new URL("./fleet_client.py", import.meta.url));
const PY_SRC = fileURLToPath(new URL("../../clients/python/src", import.meta.url));

/** Whether Debian's python3 imports the Python client (python3-grpcio, python3-protobuf). */
async function pythonClientAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command(PYTHON, {
      args: ["-c", "import qlorad"],
      env: { PYTHONPATH: PY_SRC },
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}
const havePython = await pythonClientAvailable();
if (!havePython) {
  console.log("fleet_test: the 3-replica test SKIPPED, no python3 with grpcio and protobuf");
}

// CI installs python3-grpcio and python3-protobuf with redis-server
// (scripts/install_client_toolchains.sh): there a missing one is a failure, not a skip.
Deno.test({
  name: "fleet: Debian's python3 runs the Python client where CI runs",
  ignore: !Deno.env.get("CI"),
  fn() {
    assert.ok(havePython, `${PYTHON} cannot import qlorad from ${PY_SRC} (python3-grpcio?)`);
  },
});

/** fleet_client.py with `args`: each JSON line it prints goes to `onLine` as it arrives. */
function pythonClient(args: string[], onLine: (msg: Msg) => void) {
  const child = new Deno.Command(PYTHON, {
    args: [PY_CLIENT, ...args],
    env: { PYTHONPATH: PY_SRC },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stdout = (async () => {
    let buffered = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim()) onLine(JSON.parse(line));
      }
    }
  })();
  const done = Promise.all([child.status, stderr, stdout]).then(([status, err]) => ({
    code: status.code,
    stderr: err,
  }));
  return { child, done };
}

/** Starts the jobs in turn through `via` with the Python client; their ids. */
async function pySubmit(via: Replica, jobs: { method: string; request: Msg }[]) {
  const ids: string[] = [];
  const run = pythonClient(
    ["submit", `127.0.0.1:${via.port}`, JSON.stringify(jobs)],
    (m) => ids.push(m.job_id),
  );
  const { code, stderr } = await run.done;
  assert.equal(code, 0, stderr);
  assert.equal(ids.length, jobs.length);
  return ids;
}

/** Follows a job through `via` with the Python client: its events as JSON (proto field names). */
function pyWatch(via: Replica, jobId: string) {
  const events: Msg[] = [];
  let final: string | undefined;
  const waiters: { ok: (e: Msg) => boolean; resolve: (e: Msg) => void }[] = [];
  const run = pythonClient(["watch", `127.0.0.1:${via.port}`, jobId], (m) => {
    if ("final" in m) {
      final = m.final;
      return;
    }
    events.push(m);
    for (const w of waiters.splice(0)) {
      if (w.ok(m)) w.resolve(m);
      else waiters.push(w);
    }
  });
  return {
    /** The first event from now on for which `ok` holds; rejects if the watch ends first. */
    until: (ok: (e: Msg) => boolean) =>
      new Promise<Msg>((resolve, reject) => {
        waiters.push({ ok, resolve });
        run.done.then(({ stderr }) => reject(new Error(`the watch ended first: ${stderr}`)));
      }),
    done: run.done.then((r) => ({ ...r, events, final })),
    kill: () => {
      try {
        run.child.kill("SIGKILL");
      } catch {
        // ended already
      }
    },
  };
}

Deno.test({
  name: "fleet: 3 replicas, one store: takeover after SIGKILL, remote cancel, fenced stale owner",
  ignore: !redisBinary || !havePython,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-fleet-" });
    const redis = await RedisServer.start(redisBinary!);
    const replicas: Replica[] = [];
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      for (const name of ["a", "b", "c"]) {
        replicas.push(await startReplica(name, dataDir, redis.url));
      }
      const [a, b, c] = replicas;
      const byName = (n: string) => replicas.find((r) => r.name === n)!;

      // The base model first: the other jobs' requests name it, and are checked when submitted.
      // Submitted through A and watched through B with the Python client.
      const [quantize] = await pySubmit(a, [{
        method: "Quantize",
        request: { model_path: "models/tiny", output_path: "models/tiny-nf4" },
      }]);
      const qw = await pyWatch(b, quantize).done;
      assert.equal(qw.code, 0, qw.stderr);
      assert.equal(qw.final, "JOB_STATE_SUCCEEDED");
      const jobs = [quantize];
      const [q2, reference, killed, e1, e2] = await pySubmit(a, [
        { method: "Quantize", request: { model_path: "models/tiny", output_path: "q2" } },
        { method: "Train", request: { ...TRAIN, output_path: "runs/reference" } },
        { method: "Train", request: { ...TRAIN, output_path: "runs/killed" } },
        { method: "Evaluate", request: EVALUATE },
        { method: "Evaluate", request: { ...EVALUATE, batch_size: 3 } },
      ]);
      jobs.push(q2, reference, killed, e1, e2);

      // Every replica lists the whole fleet's jobs.
      for (const r of replicas) {
        const listed = (await call(r.clients.qlorad, "ListJobs", {})).jobs.map((j: Msg) =>
          j.job_id
        );
        assert.deepEqual([...listed].sort(), [...jobs].sort(), r.name);
      }

      // Watched through C with the Python client: at the Train's first checkpoint event, its
      // replica is killed.
      const watched = pyWatch(c, killed);
      await watched.until((e) => e.checkpoint !== undefined && !e.checkpoint.is_final);
      const victim = byName(await owner(c, killed));
      kill(victim);
      const survivors = replicas.filter((r) => r.alive);
      // C may be the victim: then its watch broke, and a survivor tells the end.
      if (victim === c) watched.kill();
      const outcome = await watched.done;
      const log = await finalLog(survivors[0], killed);
      if (victim !== c) {
        // The Python client saw the whole log, across the takeover, as every replica shows it.
        assert.equal(outcome.code, 0, outcome.stderr);
        assert.equal(outcome.final, "JOB_STATE_SUCCEEDED");
        assert.deepEqual(outcome.events.map((e) => Number(e.seq)), log.map((e) => Number(e.seq)));
      }

      for (const id of jobs) {
        const logs = await Promise.all(survivors.map((r) => finalLog(r, id)));
        for (const l of logs) assertContiguous(l, id);
        // One log, whichever replica shows it.
        assert.deepEqual(logs[1], logs[0], id);
        assert.equal(
          logs[0].at(-1)!.state,
          "JOB_STATE_SUCCEEDED",
          `${id}: ${JSON.stringify(logs[0].at(-1))}`,
        );
      }
      const takeover = log.find((e) => e.payload === "log" && /taken over/.test(e.log.message));
      assert.ok(takeover, "the killed Train's log says it was taken over");
      assert.match(takeover.log.message, /resuming from checkpoint runs\/killed\//);
      const result = log.findLast((e) => e.payload === "train_result")!.train_result;
      assert.ok(result.resumed_from_step >= 2, `resumed from ${result.resumed_from_step}`);
      assert.notEqual(await owner(survivors[0], killed), victim.name);
      // The reference ran uninterrupted, on one replica.
      const referenceLog = await finalLog(survivors[0], reference);
      assert.ok(
        !referenceLog.some((e) => e.payload === "log" && /taken over/.test(e.log.message)),
        "the reference run was never taken over",
      );
      const adapter = (dir: string) =>
        Deno.readFile(path.join(dataDir, dir, "adapter_model.safetensors"));
      assert.deepEqual(await adapter("runs/killed"), await adapter("runs/reference"));

      // CancelJob through a replica that does not run the job.
      const [s1, s2] = survivors;
      const long = { ...TRAIN, hyperparameters: { ...TRAIN.hyperparameters, max_steps: 400 } };
      const cancelled = await submit(s1, "Train", { ...long, output_path: "runs/cancelled" });
      const cw = follow(s1.clients.qlorad.WatchJob({ job_id: cancelled }));
      await cw.until((e) => e.payload === "train_metrics");
      const runner = await owner(s1, cancelled);
      const other = survivors.find((r) => r.name !== runner)!;
      const answer = await call(other.clients.qlorad, "CancelJob", { job_id: cancelled });
      assert.ok(
        answer.job.cancel_requested || answer.job.state === "JOB_STATE_CANCELLED",
        JSON.stringify(answer.job),
      );
      const cancelLog = (await cw.done).events;
      assertContiguous(cancelLog, cancelled);
      assert.equal(cancelLog.at(-1)!.state, "JOB_STATE_CANCELLED");
      const steps = cancelLog.filter((e) => e.payload === "train_metrics");
      assert.ok(steps.at(-1)!.train_metrics.step < 400);
      assert.ok(!cancelLog.some((e) => e.payload === "train_result"));

      // A stale owner: paused past its lease, the job is taken over; resumed, it cannot commit.
      const stale = await submit(s2, "Train", { ...TRAIN, output_path: "runs/stale" });
      const sw = follow(s2.clients.qlorad.WatchJob({ job_id: stale }));
      await sw.until((e) => e.payload === "checkpoint" && !e.checkpoint.is_final);
      const paused = byName(await owner(s2, stale));
      const watcher = paused === s1 ? s2 : s1;
      paused.child.kill("SIGSTOP");
      try {
        // (Ended first, the pause came too late: a failure, not a hang.)
        const j = await waitFor(
          watcher,
          stale,
          (j) => j.owner !== paused.name || !/QUEUED|RUNNING/.test(j.state),
        );
        assert.notEqual(j.owner, paused.name, `paused too late: ${j.state}`);
      } finally {
        paused.child.kill("SIGCONT");
      }
      await waitFor(watcher, stale, (j) => j.state === "JOB_STATE_SUCCEEDED");
      const staleLog = await finalLog(watcher, stale);
      assertContiguous(staleLog, stale);
      assert.equal(staleLog.filter((e) => e.payload === "train_result").length, 1);
      assert.equal(staleLog.filter((e) => e.checkpoint?.is_final).length, 1);
      assert.deepEqual(await adapter("runs/stale"), await adapter("runs/reference"));
      // The resumed replica learnt it had lost the job (at its renewal or its commit check), and
      // the store refused what it still tried to write under its old fencing token.
      const lost = new RegExp(
        `job ${stale}(?: lost its lease|: this replica.s lease in the job store lapsed)`,
      );
      await waitFor(watcher, stale, () => lost.test(paused.log()));
      // And it still serves.
      assert.equal((await owner(paused, stale)) !== paused.name, true);

      // A graceful stop (SIGTERM, as a rolling update sends it) hands the job over: the replica
      // checkpoints, exits 0, and another resumes from that checkpoint.
      const handed = await submit(s1, "Train", { ...TRAIN, output_path: "runs/handed" });
      const hw = follow(s1.clients.qlorad.WatchJob({ job_id: handed }));
      await hw.until((e) => e.payload === "train_metrics");
      const leaving = byName(await owner(s1, handed));
      const staying = leaving === s1 ? s2 : s1;
      leaving.child.kill("SIGTERM");
      assert.equal((await leaving.child.status).code, 0, leaving.log());
      leaving.alive = false;
      leaving.clients.close();
      const handedJob = await waitFor(staying, handed, (j) => !/QUEUED|RUNNING/.test(j.state));
      assert.equal(handedJob.state, "JOB_STATE_SUCCEEDED", JSON.stringify(handedJob.error));
      assert.equal(handedJob.owner, staying.name);
      const handedLog = await finalLog(staying, handed);
      assertContiguous(handedLog, handed);
      const handedResult = handedLog.findLast((e) => e.payload === "train_result")!.train_result;
      assert.ok(handedResult.resumed_from_step >= 1, JSON.stringify(handedResult));
      assert.deepEqual(await adapter("runs/handed"), await adapter("runs/reference"));
    } finally {
      for (const r of replicas) kill(r);
      for (const r of replicas) await r.child.status;
      await redis.dispose();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "fleet: Redis restarted mid-Train: nothing lost; a Generate runs on the free replica",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-fleet-" });
    const redis = await RedisServer.start(redisBinary!);
    const replicas: Replica[] = [];
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      // A dead replica's temporary file, untouched for two days, and one being written now.
      const stale = partialPath(path.join(dataDir, "models", "gone.safetensors"));
      const fresh = partialPath(path.join(dataDir, "models", "busy.safetensors"));
      await Deno.writeTextFile(stale, "half");
      await Deno.writeTextFile(fresh, "half");
      const twoDaysAgo = new Date(Date.now() - 48 * 3600_000);
      await Deno.utime(stale, twoDaysAgo, twoDaysAgo);
      for (const name of ["a", "b"]) replicas.push(await startReplica(name, dataDir, redis.url));
      // Both replicas swept at start: only what nothing wrote for a day went.
      await assert.rejects(() => Deno.lstat(stale), Deno.errors.NotFound);
      await Deno.lstat(fresh);
      const [a, b] = replicas;
      const q = await submit(a, "Quantize", {
        model_path: "models/tiny",
        output_path: "models/tiny-nf4",
      });
      assert.equal((await finalLog(b, q)).at(-1)!.state, "JOB_STATE_SUCCEEDED");
      const reference = await submit(a, "Train", { ...TRAIN, output_path: "runs/reference" });
      assert.equal((await finalLog(b, reference)).at(-1)!.state, "JOB_STATE_SUCCEEDED");

      const job = await submit(a, "Train", { ...TRAIN, output_path: "runs/outage" });
      await follow(b.clients.qlorad.WatchJob({ job_id: job })).until((e) =>
        e.payload === "checkpoint" && !e.checkpoint.is_final
      );
      await redis.kill();
      for (const r of replicas) await untilHealth(r, "NOT_SERVING");
      await redis.restart();
      for (const r of replicas) await untilHealth(r, "SERVING");
      // Calls made while Redis came back may still fail: ask again until the job has ended.
      while (true) {
        const j = await call(b.clients.qlorad, "GetJob", { job_id: job }).catch(() => undefined);
        if (j && !/QUEUED|RUNNING/.test(j.state)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const r of replicas) {
        const log = await finalLog(r, job);
        assertContiguous(log, job);
        assert.equal(log.at(-1)!.state, "JOB_STATE_SUCCEEDED", JSON.stringify(log.at(-1)));
        // (Steps after the last checkpoint may be logged twice if a lease lapsed meanwhile and
        // another replica resumed the job: the log is one seq order, its content at least once.)
        const result = log.findLast((e) => e.payload === "train_result")!.train_result;
        assert.equal(result.steps, TRAIN.hyperparameters.max_steps);
      }
      const adapter = (dir: string) =>
        Deno.readFile(path.join(dataDir, dir, "adapter_model.safetensors"));
      assert.deepEqual(await adapter("runs/outage"), await adapter("runs/reference"));

      // A Generate sent to a busy replica runs on the free one, rebuilt from its stored request;
      // its caller, on the busy one, gets every token through the shared log.
      const long = { ...TRAIN, hyperparameters: { ...TRAIN.hyperparameters, max_steps: 400 } };
      const busyJob = await submit(a, "Train", { ...long, output_path: "runs/busy" });
      const busy = await waitFor(a, busyJob, (j) => j.state === "JOB_STATE_RUNNING");
      const [x, y] = busy.owner === a.name ? [a, b] : [b, a];
      const g = await collect(x.clients.qlorad.Generate({
        base_model_path: "models/tiny",
        prompt: "The capital of France is",
        max_new_tokens: 5,
        ignore_eos: true,
      }));
      assert.equal(g.code, grpc.status.OK, g.details);
      const genId = g.events[0].job_id;
      assertContiguous(g.events, genId);
      assert.equal(g.events.at(-1)!.state, "JOB_STATE_SUCCEEDED");
      assert.equal(await owner(x, genId), y.name);
      const pieces = g.events.filter((e) => e.payload === "generated_text");
      const generated = g.events.findLast((e) => e.payload === "generate_result")!.generate_result;
      assert.equal(pieces.length, 5);
      assert.deepEqual(pieces.flatMap((e) => e.generated_text.token_ids), generated.token_ids);
      assert.equal(pieces.map((e) => e.generated_text.text).join(""), generated.text);
      assert.equal(await owner(x, busyJob), x.name, "the Train stayed where it ran");
      await call(y.clients.qlorad, "CancelJob", { job_id: busyJob });
      await waitFor(y, busyJob, (j) => j.state === "JOB_STATE_CANCELLED");
    } finally {
      for (const r of replicas) kill(r);
      for (const r of replicas) await r.child.status;
      await redis.dispose();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});

async function untilHealth(r: Replica, want: string): Promise<void> {
  while ((await call(r.clients.health, "Check", { service: "" })).status !== want) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// ------------------------------------------------------------------ in-process, two managers

/** Two fleet-mode managers (replicas "m1", "m2") on one Redis store each, sharing the server. */
async function twoManagers(
  redis: RedisServer,
  wrap: (s: JobStore) => JobStore = (s) => s,
  m2StartsWorker = true,
): Promise<{
  m1: JobManager;
  m2: JobManager;
  /** Closes both managers and stores, stops Redis and removes the data folder. */
  close(): Promise<void>;
}> {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-fleet-m-" });
  const settings = (await redisStoreSettings({ flag: redis.url, env: () => undefined }))!;
  const stores = [
    await RedisJobStore.open(settings, silentLogger),
    await RedisJobStore.open(settings, silentLogger),
  ];
  const open = (i: number) =>
    JobManager.open({
      dataDir,
      logger: silentLogger,
      store: wrap(stores[i]),
      fleet: true,
      owner: `m${i + 1}`,
      leaseTtlMs: LEASE_TTL_MS,
      startFleetWorker: i === 0 || m2StartsWorker,
    });
  const [m1, m2] = [await open(0), await open(1)];
  const close = async () => {
    await m1.close();
    await m2.close();
    for (const s of stores) await s.close();
    await redis.dispose();
    await Deno.remove(dataDir, { recursive: true });
  };
  return { m1, m2, close };
}

/** A job body that opens `started`, then runs until it is aborted (and throws the reason). */
function untilAborted(started: { open(): void }): JobRun {
  return async (ctx) => {
    started.open();
    await new Promise((r) => ctx.signal.addEventListener("abort", r));
    throw ctx.signal.reason;
  };
}

/** A gate: `opened` resolves once `open` is called. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => open = r);
  return { open, opened };
}

Deno.test({
  name: "fleet manager: a job submitted on one replica runs on a free one; remote cancel",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    const { m1, m2, close } = await twoManagers(redis);
    const busy = gate();
    try {
      // m1 cannot run "quantize" jobs it did not receive; m2 rebuilds them from the request.
      const started = gate();
      const cancelSeen = gate();
      m2.useRebuilder({
        has: (kind) => kind === "quantize",
        build: (record) =>
          Promise.resolve({
            run: async (ctx) => {
              assert.deepEqual(record.request, { n: 7 });
              ctx.emit({ progress: { message: "step 1" } });
              started.open();
              await new Promise<void>((resolve) =>
                ctx.signal.addEventListener("abort", () => {
                  cancelSeen.open();
                  resolve();
                })
              );
              throw ctx.signal.reason;
            },
          }),
      });
      m1.useRebuilder({ has: () => false, build: () => Promise.resolve(undefined) });
      // m1 runs what it is given itself when free: keep it busy with a job of its own first.
      const own = await m1.submitJob({
        kind: "evaluate",
        summary: "m1's own",
        request: {},
        run: async () => {
          await busy.opened;
        },
      });
      await waitForState(m1, own.job_id, "RUNNING");
      const job = await m1.submitJob({
        kind: "quantize",
        summary: "rebuilt elsewhere",
        request: { n: 7 },
        run: () => Promise.reject(new Error("m1 is busy: never runs here")),
      });
      await started.opened;
      // (Its RUNNING record is stored behind the body's start.)
      await waitForState(m1, job.job_id, "RUNNING");
      assert.equal((await m1.lookup(job.job_id)).owner, "m2");
      // Both are held by a worker of the fleet queue, none waits.
      assert.deepEqual(await m1.fleetCounts(), { waiting: 0, active: 2 });
      // m1 does not run it: CancelJob through m1 marks it, m2 sees it at a lease renewal.
      const marked = await m1.cancel(job.job_id);
      assert.equal(marked.cancel_requested, true);
      await cancelSeen.opened;
      const ended = await waitForState(m1, job.job_id, "CANCELLED");
      assert.equal(ended.owner, "m2");
      const events = await Array.fromAsync(m1.watch(job.job_id, 1));
      assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
      assert.deepEqual(events.map((e) => e.state), [
        "QUEUED",
        "RUNNING",
        "RUNNING",
        "CANCELLED",
      ]);
      busy.open();
      await waitForState(m2, own.job_id, "SUCCEEDED");
      assert.equal((await m2.lookup(own.job_id)).owner, "m1");
      assert.deepEqual(await m2.fleetCounts(), { waiting: 0, active: 0 });
      // Both replicas list both jobs.
      for (const m of [m1, m2]) {
        assert.deepEqual(
          (await m.listJobs()).map((r) => r.job_id).sort(),
          [
            job.job_id,
            own.job_id,
          ].sort(),
        );
      }
    } finally {
      busy.open();
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a lease that lapsed (renewals not answered) refuses commit() and the end",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    // Renewals never answer: as for a replica paused past its lease.
    const { m1, m2, close } = await twoManagers(redis, (s) =>
      new Proxy(s, {
        get: (t, k) =>
          k === "renew"
            ? () => new Promise(() => {})
            : typeof t[k as keyof JobStore] === "function"
            ? (t[k as keyof JobStore] as (...a: unknown[]) => unknown).bind(t)
            : t[k as keyof JobStore],
      }));
    try {
      m2.useRebuilder({ has: () => false, build: () => Promise.resolve(undefined) });
      let refused: unknown;
      const done = gate();
      const job = await m1.submitJob({
        kind: "export",
        summary: "commits late",
        request: {},
        run: async (ctx) => {
          // Past the lease's end by the clock the store gave it (its expiry, renewed never).
          await new Promise((r) => setTimeout(r, LEASE_TTL_MS + 200));
          try {
            ctx.commit();
          } catch (err) {
            refused = err;
          }
          done.open();
          throw refused ?? new Error("commit() passed");
        },
      });
      await done.opened;
      assert.ok(refused instanceof QloradError, String(refused));
      assert.equal(refused.kind, "unavailable");
      assert.match(refused.message, /lease in the job store lapsed before the job could commit/);
      // Its end (CANCELLED, by the lease's abort) was refused by the store's fence too: the job
      // stayed RUNNING there, so m1 put it back in the fleet queue rather than completing it, and
      // the replica given it next, which cannot rebuild it, ended it FAILED.
      const ended = await waitForState(m2, job.job_id, "FAILED");
      assert.match(ended.error!.message, /cannot be taken over/);
      const events = await Array.fromAsync(m2.watch(job.job_id, 1));
      assert.deepEqual(events.map((e) => e.state), ["QUEUED", "RUNNING", "FAILED"]);
    } finally {
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a job no replica can rebuild, left RUNNING by a stopped one, ends FAILED",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    const { m1, m2, close } = await twoManagers(redis);
    try {
      const none = { has: () => false, build: () => Promise.resolve(undefined) };
      m1.useRebuilder(none);
      m2.useRebuilder(none);
      // Only m2 holds this Generate's body; m1 (busy) cannot take it.
      const busy = gate();
      await m1.submitJob({
        kind: "evaluate",
        summary: "keeps m1 busy",
        request: {},
        run: () => busy.opened,
      });
      const started = gate();
      const job = await m2.submitJob({
        kind: "generate",
        summary: "lives on m2",
        request: {},
        run: untilAborted(started),
      });
      await started.opened;
      await waitForState(m1, job.job_id, "RUNNING");
      // m2 stops: the job is left RUNNING with its lease released; m1, once free, ends it.
      await m2.close();
      busy.open();
      const ended = await waitForState(m1, job.job_id, "FAILED");
      assert.equal(ended.error?.kind, "unavailable");
      assert.match(ended.error!.message, /cannot be taken over; submit it again/);
      const events = await Array.fromAsync(m1.watch(job.job_id, 1));
      assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
      assert.deepEqual(events.map((e) => e.state), ["QUEUED", "RUNNING", "FAILED"]);
    } finally {
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a job whose request no longer holds where it is rebuilt ends FAILED",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    const { m1, m2, close } = await twoManagers(redis);
    const busy = gate();
    try {
      m1.useRebuilder({ has: () => false, build: () => Promise.resolve(undefined) });
      let builds = 0;
      m2.useRebuilder({
        has: (kind) => kind === "evaluate",
        build: () => {
          builds++;
          return Promise.reject(
            new QloradError("not_found", 'dataset_path "gone.jsonl": no such file'),
          );
        },
      });
      const own = await m1.submitJob({
        kind: "export",
        summary: "busy",
        request: {},
        run: () => busy.opened,
      });
      await waitForState(m1, own.job_id, "RUNNING");
      const job = await m1.submitJob({
        kind: "evaluate",
        summary: "its input is gone",
        request: { dataset_path: "gone.jsonl" },
        run: () => Promise.reject(new Error("m1 is busy: never runs here")),
      });
      const ended = await waitForState(m1, job.job_id, "FAILED");
      assert.deepEqual(ended.error, {
        kind: "not_found",
        message: 'dataset_path "gone.jsonl": no such file',
      });
      // Tried once, not by every poll of every replica.
      assert.equal(builds, 1);
      const events = await Array.fromAsync(m1.watch(job.job_id, 1));
      assert.deepEqual(events.map((e) => e.state), ["QUEUED", "FAILED"]);
    } finally {
      busy.open();
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a replica is given a job only while it runs none (2 replicas, 3 jobs)",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    const { m1, m2, close } = await twoManagers(redis);
    // Bodies running now on each replica, and the most ever seen at once.
    const running = { m1: 0, m2: 0 };
    let most = 0;
    const gates = new Map<string, () => void>();
    const body = (replica: "m1" | "m2") => async (ctx: { jobId: string }) => {
      most = Math.max(most, ++running[replica]);
      try {
        await new Promise<void>((resolve) => gates.set(ctx.jobId, resolve));
      } finally {
        running[replica]--;
      }
    };
    try {
      // Both can run every job: m1 its own bodies or rebuilt ones, m2 rebuilt ones.
      m1.useRebuilder({ has: () => true, build: () => Promise.resolve({ run: body("m1") }) });
      m2.useRebuilder({ has: () => true, build: () => Promise.resolve({ run: body("m2") }) });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const job = await m1.submitJob({
          kind: "evaluate",
          summary: `job ${i}`,
          request: { i },
          run: body("m1"),
        });
        ids.push(job.job_id);
      }
      const ended = new Set<string>();
      while (ended.size < ids.length) {
        const records = await m1.listJobs();
        // Never two RUNNING on one replica, by the store's records and by the bodies.
        for (const owner of ["m1", "m2"]) {
          const mine = records.filter((r) => r.state === "RUNNING" && r.owner === owner);
          assert.ok(mine.length <= 1, `${owner} runs ${mine.map((r) => r.job_id)}`);
        }
        assert.ok(running.m1 <= 1 && running.m2 <= 1, JSON.stringify(running));
        for (const r of records) if (r.state === "SUCCEEDED") ended.add(r.job_id);
        // Two replicas, so two run and one waits; end one of the running ones at a time.
        const open = records.find((r) => r.state === "RUNNING" && gates.has(r.job_id));
        if (open && records.filter((r) => r.state === "QUEUED").length === 0) {
          gates.get(open.job_id)!();
          gates.delete(open.job_id);
        } else if (open && records.filter((r) => r.state === "RUNNING").length === 2) {
          gates.get(open.job_id)!();
          gates.delete(open.job_id);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(most, 1);
      for (const id of ids) assert.equal((await m2.lookup(id)).state, "SUCCEEDED");
    } finally {
      for (const open of gates.values()) open();
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a replica opened with startFleetWorker false takes jobs only once started",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // What a server relies on: its worker starts after the handlers registered their runners,
    // so a job it takes can be rebuilt (a taken-over Train would otherwise end FAILED).
    const redis = await RedisServer.start(redisBinary!);
    const { m1, m2, close } = await twoManagers(redis, undefined, false);
    const busy = gate();
    try {
      m1.useRebuilder({ has: () => false, build: () => Promise.resolve(undefined) });
      const rebuilt: string[] = [];
      m2.useRebuilder({
        has: () => true,
        build: (record) => {
          rebuilt.push(record.job_id);
          return Promise.resolve({ run: () => Promise.resolve() });
        },
      });
      const a = await m1.submitJob({
        kind: "evaluate",
        summary: "holds m1",
        request: {},
        run: () => busy.opened,
      });
      await waitForState(m1, a.job_id, "RUNNING");
      const b = await m1.submitJob({
        kind: "evaluate",
        summary: "waits for m2",
        request: {},
        run: () => Promise.resolve(),
      });
      // m1 is busy and m2's worker has not started: b waits in the queue.
      while (true) {
        const state = (await m1.lookup(b.job_id)).state;
        assert.equal(state, "QUEUED", "taken before m2's worker started");
        if ((await m1.fleetCounts()).waiting === 1) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(rebuilt, []);
      await m2.startFleetWorker();
      const done = await waitForState(m2, b.job_id, "SUCCEEDED");
      assert.equal(done.owner, "m2");
      assert.deepEqual(rebuilt, [b.job_id]);
    } finally {
      busy.open();
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: QUEUED jobs of a stopped replica: a Generate runs elsewhere, others FAILED",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    const { m1, m2, close } = await twoManagers(redis);
    const busy = gate();
    try {
      // m1 rebuilds Generate jobs from their request (as a server does); nothing else.
      const built: string[] = [];
      m1.useRebuilder({
        has: (kind) => kind === "generate",
        build: (record) => {
          built.push(record.job_id);
          return Promise.resolve({
            run: () => Promise.resolve({ log: { level: "info", message: "ok" } }),
          });
        },
      });
      m2.useRebuilder({ has: () => false, build: () => Promise.resolve(undefined) });
      // Both replicas busy, so m2's two submissions wait in the queue.
      const m1Busy = await m1.submitJob({
        kind: "evaluate",
        summary: "keeps m1 busy",
        request: {},
        run: () => busy.opened,
      });
      const m2Started = gate();
      await m2.submitJob({
        kind: "train",
        summary: "keeps m2 busy",
        request: {},
        run: untilAborted(m2Started),
      });
      await m2Started.opened;
      await waitForState(m1, m1Busy.job_id, "RUNNING");
      const never = () => Promise.reject(new Error("m2 is busy: never runs there"));
      const generate = await m2.submitJob({
        kind: "generate",
        summary: "queued on m2",
        request: { prompt: "x" },
        run: never,
      });
      const quantize = await m2.submitJob({
        kind: "quantize",
        summary: "queued on m2, only m2 can run it",
        request: {},
        run: never,
      });
      // m2 stops for good; m1 is freed.
      await m2.close();
      busy.open();
      const g = await waitForState(m1, generate.job_id, "SUCCEEDED");
      assert.equal(g.owner, "m1");
      assert.deepEqual(built, [generate.job_id]);
      const q = await waitForState(m1, quantize.job_id, "FAILED");
      assert.equal(q.error?.kind, "unavailable");
      assert.match(q.error!.message, /the replica m2 that received this job stopped before it ran/);
      for (const id of [generate.job_id, quantize.job_id]) {
        const events = await Array.fromAsync(m1.watch(id, 1));
        assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
      }
    } finally {
      busy.open();
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a job stored but not queued (the queue failed) ends FAILED, UNAVAILABLE",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    // The fleet queue refuses export jobs' adds, as when Redis goes between the two writes.
    const { m1, m2, close } = await twoManagers(redis, (s) =>
      new Proxy(s, {
        get: (t, k) => {
          if (k !== "fleetQueue") {
            const v = t[k as keyof JobStore];
            return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(t) : v;
          }
          return (replica: string, lockMs: number) => {
            const queue = t.fleetQueue!(replica, lockMs);
            const add = queue.add.bind(queue);
            queue.add = (id, data) =>
              id.startsWith("export-")
                ? Promise.reject(new Error("Connection is closed."))
                : add(id, data);
            return queue;
          };
        },
      }));
    try {
      await assert.rejects(
        m1.submitJob({ kind: "export", summary: "never queued", request: {}, run: async () => {} }),
        (err: unknown) =>
          err instanceof QloradError && err.kind === "unavailable" &&
          /fleet queue .* is unreachable \(Connection is closed\.\)/.test(err.message),
      );
      const [stored] = await m2.listJobs();
      assert.equal(stored.state, "FAILED");
      assert.match(stored.error!.message, /could not be queued \(Connection is closed\.\)/);
      // Other kinds still go through.
      const ok = await m1.submitJob({
        kind: "evaluate",
        summary: "queued",
        request: {},
        run: async () => {},
      });
      await waitForState(m2, ok.job_id, "SUCCEEDED");
    } finally {
      await close();
    }
  },
});

Deno.test({
  name: "fleet manager: a submit while Redis is down is UNAVAILABLE, naming the store",
  ignore: !redisBinary,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const redis = await RedisServer.start(redisBinary!);
    const { m1, close } = await twoManagers(redis);
    try {
      await redis.kill();
      // No request_id: the first thing submit asks Redis is the fleet queue's depth.
      await assert.rejects(
        m1.submitJob({ kind: "evaluate", summary: "outage", request: {}, run: async () => {} }),
        (err: unknown) =>
          err instanceof QloradError && err.kind === "unavailable" &&
          err.message.includes(`127.0.0.1:${redis.port}`),
      );
    } finally {
      await close();
    }
  },
});

async function waitForState(m: JobManager, id: string, state: string): Promise<JobRecord> {
  while (true) {
    const r = await m.lookup(id);
    if (r.state === state) return r;
    await new Promise((r) => setTimeout(r, 20));
  }
}
