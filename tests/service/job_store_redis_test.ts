/**
 * The Redis job store (src/service/jobs/redis_store.ts) on a real `redis-server` started here on a
 * free loopback port, its data in a temporary folder with the append-only file on: the JobStore
 * contract (job_store_contract.ts), whose crash is a SIGKILL of Redis and a restart on the same
 * AOF; then what only a shared store has: a restart of Redis under a live client (nothing ended or
 * acknowledged is lost, calls fail "unavailable" meanwhile and work again by themselves), a lease
 * that expires and passes to another replica with a larger token while the stale owner is fenced
 * off, tokens that keep growing across a restart, AUTH, and the connection settings (no password
 * on a flag). Skipped, saying why, only where no redis-server is installed (scripts/qlorad.sh
 * installs Debian's for the suite).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import { Rng } from "../../src/util/random.ts";
import { QloradError } from "../../src/util/errors.ts";
import {
  endedRecord,
  JobManager,
  localJobsDir,
  StoreConflictError,
} from "../../src/service/jobs.ts";
import type { JobEvent, JobRecord, JobStore, Lease } from "../../src/service/jobs.ts";
import { RedisJobStore } from "../../src/service/jobs/redis_store.ts";
import { redisStoreSettings } from "../../src/service/jobs/redis_settings.ts";
import type { RedisStoreSettings } from "../../src/service/jobs/redis_settings.ts";
import { silentLogger } from "../../src/service/status.ts";
import { jobStoreContract } from "./job_store_contract.ts";
import { call, collect, connect, healthStatus, startTestServer } from "./grpc_client.ts";
import type { Msg } from "./grpc_client.ts";
import { findRedisServer, freePort, RedisServer } from "../support/redis_server.ts";

const binary = findRedisServer();
const WHY_MISSING = "no redis-server installed (apt-get install redis-server; " +
  "scripts/qlorad.sh test installs it with the client toolchains)";
if (!binary) console.log(`job_store_redis_test: SKIPPED, ${WHY_MISSING}`);
const ignore = binary === undefined;

// CI installs redis-server (scripts/qlorad.sh): there a missing one is a failure, not a skip.
Deno.test({
  name: "redis store: redis-server is installed where CI runs",
  ignore: !Deno.env.get("CI"),
  fn() {
    assert.ok(binary, WHY_MISSING);
  },
});

/** Settings for a test server, read the way `qlorad serve` reads them. */
async function settingsFor(url: string, env: Record<string, string> = {}) {
  return (await redisStoreSettings({ flag: url, env: (k) => env[k] }))!;
}

async function openStore(server: RedisServer, password?: string): Promise<RedisJobStore> {
  const settings = await settingsFor(
    server.url,
    password ? { QLORAD_STORE_PASSWORD: password } : {},
  );
  return await RedisJobStore.open(settings, silentLogger, { connectTimeoutMs: 5_000 });
}

if (binary) {
  jobStoreContract({
    name: "redis",
    async fresh() {
      const server = await RedisServer.start(binary);
      const opened: JobStore[] = [await openStore(server)];
      return {
        store: opened[0],
        async crashAndReopen() {
          await server.kill();
          await server.restart();
          const store = await openStore(server);
          opened.push(store);
          return store;
        },
        async dispose() {
          for (const s of opened) await s.close();
          await server.dispose();
        },
      };
    },
  });
}

function record(jobId: string, createdMs: number): JobRecord {
  return {
    job_id: jobId,
    kind: "train",
    state: "QUEUED",
    created_ms: createdMs,
    summary: `train ${jobId}`,
    request: { base_model_path: `models/${jobId}` },
    last_seq: 0,
  };
}

function event(jobId: string, seq: number, rng: Rng): JobEvent {
  return {
    job_id: jobId,
    seq,
    time_ms: 1_000_000 + rng.int(1_000_000),
    state: "RUNNING",
    payload: { train_metrics: { step: seq, loss: rng.int(1000) / 1000 } },
  };
}

const isUnavailable = (err: unknown) => err instanceof QloradError && err.kind === "unavailable";
const isFence = (err: unknown) => err instanceof StoreConflictError && err.reason === "fence";

/** Retries `op` until it stops failing "unavailable" (bounded by a count, not by a clock). */
async function untilAvailable<T>(op: () => Promise<T>): Promise<T> {
  for (let attempt = 0;; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (!isUnavailable(err) || attempt >= 400) throw err;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

Deno.test({
  name: "redis store: a Redis restart under a live client loses nothing acknowledged",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    try {
      const rng = new Rng(5);
      const ended = record("ended", 3);
      const open = record("open", 7);
      await store.create(ended);
      await store.create(open);
      const endedLog = [1, 2].map((s) => event("ended", s, rng));
      for (const e of endedLog) await store.append(e);
      const last: JobEvent = { ...event("ended", 3, rng), state: "SUCCEEDED" };
      const final = endedRecord({ ...ended, last_seq: 2 }, last);
      assert.equal(await store.end(last, final, { expectGeneration: 1 }), 2);
      const openLog = [1, 2, 3, 4, 5].map((s) => event("open", s, rng));
      await Promise.all(openLog.map((e) => store.append(e)));
      // A reader following the open job when Redis goes: it gets what was there, then an error.
      const followed: JobEvent[] = [];
      const follower = (async () => {
        for await (const e of store.read("open", 3, { follow: true })) followed.push(e);
      })();
      while (followed.length < 3) await new Promise((resolve) => setTimeout(resolve, 5));

      const followerFailed = assert.rejects(follower, isUnavailable);
      await server.kill();
      await followerFailed;
      assert.deepEqual(followed, openLog.slice(2));
      // While Redis is down: every call fails at once, "unavailable", naming the store.
      await assert.rejects(store.get("ended"), (err: Error) => {
        assert.ok(isUnavailable(err), String(err));
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${server.port}`));
        return true;
      });
      await assert.rejects(store.append(event("open", 6, rng)), isUnavailable);
      await assert.rejects(Array.fromAsync(store.read("open", 1)), isUnavailable);

      await server.restart();
      // The same client reconnects by itself.
      const got = await untilAvailable(() => store.get("ended"));
      assert.deepEqual(got, { record: final, generation: 2 });
      assert.deepEqual(await Array.fromAsync(store.read("ended", 1)), [...endedLog, last]);
      // appendfsync always: every acknowledged append is there, and the log goes on from it.
      assert.deepEqual(await Array.fromAsync(store.read("open", 1)), openLog);
      const next = event("open", 6, rng);
      await store.append(next);
      assert.deepEqual(await Array.fromAsync(store.read("open", 4)), [...openLog.slice(3), next]);
      assert.deepEqual((await store.list()).map((j) => j.record.job_id), ["open", "ended"]);
    } finally {
      await store.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: an expired lease passes to another replica; the stale owner is fenced off",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    // Two replicas: two clients of one Redis.
    const a = await openStore(server);
    const b = await openStore(server);
    try {
      const rng = new Rng(17);
      const r = record("j", 1);
      await a.create(r);
      const leaseA = (await a.claim("j", "replica-a", 150))!;
      assert.ok(leaseA, "a claims the free job");
      await a.append(event("j", 1, rng), { fence: leaseA.token });
      const running = { ...r, state: "RUNNING" as const, last_seq: 1 };
      assert.equal(await a.put(running, { expectGeneration: 1, fence: leaseA.token }), 2);

      // a stops renewing (a paused pod): b polls until the lease has expired and takes the job.
      let leaseB;
      for (let attempt = 0; attempt < 400 && !leaseB; attempt++) {
        leaseB = await b.claim("j", "replica-b", 60_000);
        if (!leaseB) await new Promise((resolve) => setTimeout(resolve, 25));
      }
      assert.ok(leaseB, "b took the job over once a's lease expired");
      assert.equal(leaseB.owner, "replica-b");
      assert.ok(leaseB.token > leaseA.token, `token ${leaseB.token} after ${leaseA.token}`);

      // a wakes up: it cannot renew, append, put or end.
      assert.equal(await a.renew(leaseA, 60_000), undefined);
      await assert.rejects(a.append(event("j", 2, rng), { fence: leaseA.token }), isFence);
      await assert.rejects(
        a.put({ ...running, summary: "stale" }, { expectGeneration: 2, fence: leaseA.token }),
        isFence,
      );
      const last: JobEvent = { ...event("j", 2, rng), state: "FAILED" };
      await assert.rejects(
        a.end(last, endedRecord(running, last), { expectGeneration: 2, fence: leaseA.token }),
        isFence,
      );
      await a.release(leaseA); // changes nothing: b still holds it
      assert.equal(await a.claim("j", "replica-a", 60_000), undefined);

      // b goes on from where a's log stopped, and its writes are the ones that count.
      const second = event("j", 2, rng);
      await b.append(second, { fence: leaseB.token });
      const done: JobEvent = { ...event("j", 3, rng), state: "SUCCEEDED" };
      const final = endedRecord({ ...running, last_seq: 2 }, done);
      assert.equal(await b.end(done, final, { expectGeneration: 2, fence: leaseB.token }), 3);
      assert.deepEqual((await a.get("j"))?.record, final, "a sees b's outcome");
      assert.deepEqual((await Array.fromAsync(a.read("j", 1))).map((e) => e.seq), [1, 2, 3]);

      // Tokens keep growing across a crash and restart of Redis.
      await b.create(record("k", 2));
      await server.kill();
      await server.restart();
      const leaseK = await untilAvailable(() => b.claim("k", "replica-b", 60_000));
      assert.ok(
        leaseK && leaseK.token > leaseB.token,
        `token ${leaseK?.token} after ${leaseB.token}`,
      );
      // Even when the restart lost the counter itself (an AOF fsynced once a second on a host
      // that crashed): the next token still comes after every one handed out before.
      await b.release(leaseK!);
      const raw = new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true });
      try {
        await raw.connect();
        assert.equal(await raw.del("qlorad:fence"), 1);
      } finally {
        raw.disconnect();
      }
      const leaseK2 = (await b.claim("k", "replica-b", 60_000))!;
      assert.ok(leaseK2.token > leaseK!.token, `token ${leaseK2.token} after ${leaseK!.token}`);
    } finally {
      await a.close();
      await b.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: opening an unreachable Redis fails unavailable, naming it without a password",
  ignore,
  async fn() {
    const port = freePort(); // nothing listens there
    const settings = await settingsFor(`redis://127.0.0.1:${port}/2`, {
      QLORAD_STORE_PASSWORD: "s3cret-pw",
    });
    await assert.rejects(
      RedisJobStore.open(settings, silentLogger, { connectTimeoutMs: 2_000 }),
      (err: Error) => {
        assert.ok(isUnavailable(err), String(err));
        assert.match(err.message, new RegExp(`redis://127\\.0\\.0\\.1:${port}/2`));
        assert.doesNotMatch(err.message, /s3cret-pw/);
        return true;
      },
    );
  },
});

Deno.test({
  name: "redis store: AUTH with the password from a file; a wrong one is refused at open",
  ignore,
  async fn() {
    const password = "pw-" + new Rng(3).int(1_000_000);
    const server = await RedisServer.start(binary!, { password });
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(file, password + "\n");
      const settings = await settingsFor(server.url, { QLORAD_STORE_PASSWORD_FILE: file });
      const store = await RedisJobStore.open(settings, silentLogger);
      try {
        assert.equal((await store.create(record("j", 1))).created, true);
        assert.equal((await store.get("j"))?.generation, 1);
      } finally {
        await store.close();
      }
      for (const env of [{}, { QLORAD_STORE_PASSWORD: "wrong" }] as Record<string, string>[]) {
        await assert.rejects(
          RedisJobStore.open(await settingsFor(server.url, env), silentLogger),
          (err: Error) => {
            assert.ok(isUnavailable(err), String(err));
            assert.match(err.message, /NOAUTH|WRONGPASS/);
            return true;
          },
        );
      }
    } finally {
      await Deno.remove(file);
      await server.dispose();
    }
  },
});

Deno.test("redis store settings: URLs, passwords from the environment or a file, never a flag", async () => {
  const files: Record<string, string> = { "/run/pw": "from-file\n", "/run/ca.pem": "PEM" };
  const read = (env: Record<string, string>, flag?: string) =>
    redisStoreSettings({
      flag,
      env: (k) => env[k],
      readTextFile: (p) =>
        p in files ? Promise.resolve(files[p]) : Promise.reject(new Error(`${p}: not found`)),
    });
  const invalid = (pattern: RegExp) => (err: Error) => {
    assert.ok(err instanceof QloradError && err.kind === "invalid_argument", String(err));
    assert.match(err.message, pattern);
    return true;
  };

  assert.equal(await read({}), undefined, "no setting: the local store");
  assert.equal(await read({}, "local"), undefined);
  const plain = (await read({ QLORAD_STORE_PASSWORD: "p1" }, "redis://cache.internal:6380/3"))!;
  assert.deepEqual(
    plain,
    {
      host: "cache.internal",
      port: 6380,
      db: 3,
      password: "p1",
      tls: false,
      location: "redis://cache.internal:6380/3",
    } satisfies RedisStoreSettings,
  );
  // A whole URL with a password may come from the environment; the location hides it.
  const fromEnv = (await read({ QLORAD_STORE_URL: "rediss://svc:p%40ss@redis.example:7000" }))!;
  assert.equal(fromEnv.password, "p@ss");
  assert.equal(fromEnv.username, "svc");
  assert.equal(fromEnv.tls, true);
  assert.equal(fromEnv.location, "rediss://svc@redis.example:7000/0");
  // The flag wins over the variable, and a password file loses its trailing newline.
  const both = (await read(
    { QLORAD_STORE_URL: "redis://other:1", QLORAD_STORE_PASSWORD_FILE: "/run/pw" },
    "redis://[::1]",
  ))!;
  assert.equal(both.host, "::1");
  assert.equal(both.port, 6379);
  assert.equal(both.password, "from-file");
  assert.equal(both.location, "redis://[::1]:6379/0");
  assert.equal((await read({ QLORAD_STORE_CA_FILE: "/run/ca.pem" }, "rediss://h"))!.ca, "PEM");

  await assert.rejects(
    read({}, "redis://:hunter2@h:6379"),
    invalid(/--store must not carry a password.*ps/),
  );
  await assert.rejects(
    read({}, "redis://:hunter2@h:6379"),
    (err: Error) => !/hunter2/.test(err.message),
  );
  await assert.rejects(
    read({}, "http://h:6379"),
    invalid(/--store must be a redis:\/\/ or rediss:\/\//),
  );
  await assert.rejects(read({ QLORAD_STORE_URL: "not a url:pw@" }), invalid(/QLORAD_STORE_URL/));
  await assert.rejects(
    read({ QLORAD_STORE_URL: "redis://:a@h", QLORAD_STORE_PASSWORD: "b" }),
    invalid(/given twice \(QLORAD_STORE_URL and QLORAD_STORE_PASSWORD\)/),
  );
  await assert.rejects(
    read({ QLORAD_STORE_PASSWORD_FILE: "/run/missing" }, "redis://h"),
    invalid(/QLORAD_STORE_PASSWORD_FILE \/run\/missing/),
  );
  await assert.rejects(read({}, "redis://h/x"), invalid(/database/));
  await assert.rejects(
    read({ QLORAD_STORE_CA_FILE: "/run/ca.pem" }, "redis://h"),
    invalid(/QLORAD_STORE_CA_FILE is for TLS/),
  );
});

/** A Quantize stand-in that succeeds at once (the store is under test here, not the quantizer). */
function instantQuantize(o: QuantizeOptions): Promise<QuantizeResult> {
  o.onProgress?.({ tensor: "t", index: 1, total: 1, bytesIn: 3, bytesOut: 1, quantized: true });
  return Promise.resolve({
    parametersQuantized: 3,
    tensorsQuantized: 1,
    tensorsKept: 0,
    bitsPerParameter: 4,
    bytesIn: 3,
    bytesOut: 1,
    meanAbsError: 0,
    maxAbsError: 0,
    outputDir: o.outputDir,
  });
}

Deno.test({
  name: "redis store: a server given the store keeps its jobs there, and a new server finds them",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await RedisServer.start(binary!);
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-redis-serve-" });
    try {
      await makeTinyLlama(join(dataDir, "tiny"));
      let jobId: string;
      let events: Msg[];
      {
        const store = await openStore(server);
        const t = await startTestServer({ dataDir, quantize: instantQuantize, server: { store } });
        try {
          const out = await collect(t.qlorad.Quantize({ model_path: "tiny", output_path: "q" }));
          assert.equal(out.code, grpc.status.OK, out.details);
          events = out.events;
          jobId = events[0].job_id;
          assert.equal(events.at(-1)!.state, "JOB_STATE_SUCCEEDED");
        } finally {
          await t.close();
          await store.close();
        }
      }
      // The job and its log are in Redis, not in the data directory's local store.
      const store = await openStore(server);
      try {
        const job = (await store.get(jobId))!;
        assert.equal(job.record.state, "SUCCEEDED");
        const log = await Array.fromAsync(store.read(jobId, 1));
        assert.deepEqual(log.map((e) => e.seq), events.map((e) => Number(e.seq)));
        assert.equal(job.record.last_seq, log.length);
        const local = await Array.fromAsync(Deno.readDir(localJobsDir(dataDir))).catch(() => []);
        assert.deepEqual(local, [], "nothing in the local store");

        // Another server on the same store (and a fresh data dir lock) sees the job.
        const t = await startTestServer({ dataDir, quantize: instantQuantize, server: { store } });
        try {
          const got = await call(t.qlorad, "GetJob", { job_id: jobId });
          assert.equal(got.state, "JOB_STATE_SUCCEEDED");
          const watched = await collect(t.qlorad.WatchJob({ job_id: jobId, from_seq: 2 }));
          assert.deepEqual(
            watched.events.map((e) => Number(e.seq)),
            log.slice(1).map((e) => e.seq),
          );
        } finally {
          await t.close();
        }
      } finally {
        await store.close();
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: qlorad serve --store, with the password from the environment",
  ignore,
  async fn() {
    const password = "pw-" + new Rng(29).int(1_000_000);
    const server = await RedisServer.start(binary!, { password });
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-redis-cli-" });
    const cli = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
    const serve = (store: string, env: Record<string, string> = {}) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, "serve", "--port", "0", "--data-dir", dataDir, "--store", store],
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    try {
      // A password on the command line is refused before anything connects (exit 2, usage).
      const refused = await serve(`redis://:${password}@127.0.0.1:${server.port}`).output();
      const refusedErr = new TextDecoder().decode(refused.stderr);
      assert.equal(refused.code, 2, refusedErr);
      assert.match(refusedErr, /--store must not carry a password/);
      assert.doesNotMatch(refusedErr, new RegExp(password));

      const child = serve(server.url, { QLORAD_STORE_PASSWORD: password });
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const stderr = new Response(child.stderr).text();
      try {
        let seen = "";
        let port = 0;
        while (!port) {
          const { value, done } = await lines.read();
          if (done) throw new Error(`serve exited early: ${seen}${await stderr}`);
          seen += value;
          port = Number(seen.match(/^qlorad listening on 127\.0\.0\.1:(\d+)$/m)?.[1] ?? 0);
        }
        const clients = connect(port);
        try {
          assert.equal(await healthStatus(clients), "SERVING");
          assert.deepEqual((await call(clients.qlorad, "ListJobs", {})).jobs, []);
        } finally {
          clients.close();
        }
        child.kill("SIGTERM");
        const status = await child.status;
        const err = await stderr;
        assert.equal(status.code, 0, err);
        assert.match(err, new RegExp(`job store: redis://127\\.0\\.0\\.1:${server.port}/0`));
        assert.doesNotMatch(err, new RegExp(password));
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
        await child.status;
        await lines.cancel();
        await stderr;
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: health is NOT_SERVING while Redis is down, SERVING again once it is back",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    const t = await startTestServer({
      quantize: instantQuantize,
      server: { store, watchStore: (listener) => store.watchAvailability(listener) },
    });
    /** Polls health until it reads `want` (bounded by a count, not by a clock). */
    const healthBecomes = async (want: string) => {
      let seen = "";
      for (let attempt = 0; attempt < 400 && seen !== want; attempt++) {
        if (attempt) await new Promise((resolve) => setTimeout(resolve, 25));
        seen = await healthStatus(t);
      }
      return seen;
    };
    try {
      assert.equal(await healthBecomes("SERVING"), "SERVING");
      await server.kill();
      assert.equal(await healthBecomes("NOT_SERVING"), "NOT_SERVING");
      assert.equal(await healthStatus(t, "qlorad.v1.QLoRA"), "NOT_SERVING");
      await server.restart();
      assert.equal(await healthBecomes("SERVING"), "SERVING");
      assert.deepEqual((await call(t.qlorad, "ListJobs", {})).jobs, []);
    } finally {
      await t.close();
      await store.close();
      await server.dispose();
    }
  },
});

/** Runs openssl in `dir`; throws with its stderr when it fails. */
async function openssl(dir: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test({
  name: "redis store: rediss:// with TLS, trusting a private CA from QLORAD_STORE_CA_FILE",
  ignore,
  async fn() {
    // A CA made for this run, and a certificate for 127.0.0.1 that it signed.
    const certs = await Deno.makeTempDir({ prefix: "qlorad-redis-tls-" });
    const days = ["-days", "2"];
    await openssl(
      certs,
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      ...days,
      "-subj",
      "/CN=qlorad test CA",
    );
    await openssl(
      certs,
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "redis.key",
      "-out",
      "redis.csr",
      "-subj",
      "/CN=redis",
    );
    await Deno.writeTextFile(`${certs}/ext`, "subjectAltName=IP:127.0.0.1\n");
    await openssl(
      certs,
      "x509",
      "-req",
      "-in",
      "redis.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "redis.pem",
      ...days,
      "-extfile",
      "ext",
    );
    const password = "tls-pw-" + new Rng(41).int(1_000_000);
    const tls = { cert: `${certs}/redis.pem`, key: `${certs}/redis.key`, ca: `${certs}/ca.pem` };
    const server = await RedisServer.start(binary!, { password, tls });
    try {
      assert.match(server.url, /^rediss:\/\//);
      const env = { QLORAD_STORE_PASSWORD: password, QLORAD_STORE_CA_FILE: tls.ca };
      const settings = await settingsFor(server.url, env);
      assert.equal(settings.tls, true);
      const store = await RedisJobStore.open(settings, silentLogger, { connectTimeoutMs: 5_000 });
      try {
        assert.equal((await store.create(record("j", 1))).created, true);
        await store.append(event("j", 1, new Rng(43)));
        assert.deepEqual((await Array.fromAsync(store.read("j", 1))).map((e) => e.seq), [1]);
      } finally {
        await store.close();
      }
      // Without the CA the server's certificate is not trusted: nothing connects.
      const untrusted = await settingsFor(server.url, { QLORAD_STORE_PASSWORD: password });
      await assert.rejects(
        RedisJobStore.open(untrusted, silentLogger, { connectTimeoutMs: 5_000 }),
        (err: Error) => {
          assert.ok(isUnavailable(err), String(err));
          assert.match(err.message, /certificate|self.signed|issuer/i);
          return true;
        },
      );
    } finally {
      await server.dispose();
      await Deno.remove(certs, { recursive: true });
    }
  },
});

Deno.test({
  name: "fleet queue (BullMQ): a job id is queued once, counted, withdrawn; KEDA's wait list key",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    const queue = store.fleetQueue("r1", 5_000);
    const raw = new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true });
    try {
      await raw.connect();
      const rng = new Rng(53);
      // Five ids, each added 1..3 times (a retried submit, a start-up requeue): queued once each.
      const ids = Array.from({ length: 5 }, (_, i) => `job-${i}-${rng.int(1000)}`);
      for (const [i, id] of ids.entries()) {
        for (let k = 0; k <= i % 3; k++) await queue.add(id, { submitter: "r1" });
      }
      assert.deepEqual(await queue.counts(), { waiting: ids.length, active: 0 });
      // What docs/DEPLOY.md tells KEDA's Redis list scaler to watch: the wait list's length.
      assert.equal(await raw.llen("qlorad:dispatch:wait"), ids.length);
      await queue.withdraw(ids[2]);
      await queue.withdraw("job-never-added");
      assert.deepEqual(await queue.counts(), { waiting: ids.length - 1, active: 0 });
      assert.equal(await raw.llen("qlorad:dispatch:wait"), ids.length - 1);
      // The worker is given them oldest first, one at a time (concurrency 1).
      const taken: string[] = [];
      let holding = 0;
      let most = 0;
      const all = Promise.withResolvers<void>();
      await queue.run(async (id) => {
        most = Math.max(most, ++holding);
        taken.push(id);
        await new Promise((r) => setTimeout(r, 5));
        holding--;
        if (taken.length === ids.length - 1) all.resolve();
        return { done: true };
      });
      await all.promise;
      assert.deepEqual(taken, ids.filter((_, i) => i !== 2));
      assert.equal(most, 1);
      assert.deepEqual([...await queue.liveReplicas()], ["r1"]);
    } finally {
      await queue.close();
      raw.disconnect();
      await store.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name: "fleet queue (BullMQ): close() ends while Redis is away, and none of its clients reconnect",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    const queue = store.fleetQueue("r1", 5_000);
    const raw = new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let closing: Promise<void> | undefined;
    try {
      await queue.run(() => Promise.resolve({ done: true }));
      await server.kill();
      // A close that never ends is the failure; the bound only keeps it from stalling the suite.
      closing = queue.close();
      const closed = await Promise.race([
        closing.then(() => true),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 60_000)),
      ]);
      assert.ok(closed, "close() did not end while Redis was away");
      await store.close();
      // Redis back: only this test's own client connects to it (ioredis retries every 2 s at most).
      await server.restart();
      await raw.connect();
      for (let i = 0; i < 25; i++) {
        const clients = String(await raw.client("LIST")).trim().split("\n");
        assert.equal(clients.length, 1, clients.join("\n"));
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      clearTimeout(timer);
      raw.disconnect();
      if (!closing) await queue.close();
      await store.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name:
    "fleet queue (BullMQ): a Redis that does not answer fails its calls after the store's timeout",
  ignore,
  async fn() {
    // DEBUG SLEEP freezes the server (a partition, a stalled node): connected, never answering.
    const server = await RedisServer.start(binary!, { args: ["--enable-debug-command", "yes"] });
    const settings = await settingsFor(server.url);
    const store = await RedisJobStore.open(settings, silentLogger, { commandTimeoutMs: 300 });
    const queue = store.fleetQueue("r1", 5_000);
    const raw = new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true });
    try {
      await raw.connect();
      assert.deepEqual(await queue.counts(), { waiting: 0, active: 0 });
      const asleep = raw.call("DEBUG", "SLEEP", "3");
      // As the store's own calls do (a submit asks the queue's depth first): not wait it out.
      await assert.rejects(queue.counts(), /timed out/i);
      await asleep;
    } finally {
      raw.disconnect();
      await queue.close();
      await store.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: a log longer than a read page is read whole and from any seq",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    try {
      const rng = new Rng(61);
      await store.create(record("long", 1));
      // More than two pages of 256, an odd count.
      const log = Array.from({ length: 601 }, (_, i) => event("long", i + 1, rng));
      await Promise.all(log.map((e) => store.append(e)));
      assert.deepEqual(await Array.fromAsync(store.read("long", 1)), log);
      for (const from of [256, 257, 513, 601]) {
        assert.deepEqual(await Array.fromAsync(store.read("long", from)), log.slice(from - 1));
      }
    } finally {
      await store.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: an ACL user with only the permissions docs/DEPLOY.md lists",
  ignore,
  async fn() {
    const password = "acl-pw-" + new Rng(67).int(1_000_000);
    // The documented rule, word for word; the default user is switched off.
    const rule = "+@read +@write +@scripting +@connection +info +time";
    const server = await RedisServer.start(binary!, {
      args: [
        "--user",
        "default",
        "off",
        "--user",
        "qlorad",
        "on",
        `>${password}`,
        "~qlorad:*",
        ...rule.split(" "),
      ],
    });
    try {
      const url = `redis://qlorad@127.0.0.1:${server.port}`;
      const store = await RedisJobStore.open(
        await settingsFor(url, { QLORAD_STORE_PASSWORD: password }),
        silentLogger,
      );
      try {
        const rng = new Rng(71);
        const r = record("j", 1);
        await store.create({ ...r, request_id: "k" });
        assert.equal((await store.findRequest("train", "k"))?.record.job_id, "j");
        const lease = (await store.claim("j", "replica-a", 60_000))!;
        await store.append(event("j", 1, rng), { fence: lease.token });
        assert.ok(await store.renew(lease, 60_000));
        const last: JobEvent = { ...event("j", 2, rng), state: "SUCCEEDED" };
        await store.end(last, endedRecord({ ...r, last_seq: 1 }, last), {
          expectGeneration: 1,
          fence: lease.token,
        });
        await store.release(lease);
        assert.equal((await store.list()).length, 1);
        assert.deepEqual((await Array.fromAsync(store.read("j", 1))).map((e) => e.seq), [1, 2]);
        // The fleet queue (BullMQ) works under the same user: queue, take, list the workers.
        const queue = store.fleetQueue("acl-replica", 5_000);
        try {
          await queue.add("j2", { submitter: "acl-replica" });
          const taken = Promise.withResolvers<string>();
          await queue.run((id) => {
            taken.resolve(id);
            return Promise.resolve({ done: true });
          });
          assert.equal(await taken.promise, "j2");
          assert.deepEqual([...await queue.liveReplicas()], ["acl-replica"]);
        } finally {
          await queue.close();
        }
      } finally {
        await store.close();
      }
    } finally {
      await server.dispose();
    }
  },
});

Deno.test({
  name:
    "redis store: a lease that expired while nobody claimed the job is renewed; not once released",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    const raw = new Redis({ host: "127.0.0.1", port: server.port, lazyConnect: true });
    try {
      await raw.connect();
      const rng = new Rng(73);
      await store.create(record("r", 1));
      const lease = (await store.claim("r", "replica-a", 100))!;
      // Wait (bounded by a count) until Redis has expired the lease.
      for (let attempt = 0; attempt < 400 && await raw.exists("qlorad:lease:r"); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      assert.equal(await raw.exists("qlorad:lease:r"), 0, "the lease expired");
      // Expired: a fenced write is refused until the owner renews...
      await assert.rejects(store.append(event("r", 1, rng), { fence: lease.token }), isFence);
      const renewed = (await store.renew(lease, 60_000))!;
      assert.equal(renewed.token, lease.token);
      assert.ok(renewed.expires_ms > lease.expires_ms);
      // ...and then it goes on, and nobody else can claim the job.
      await store.append(event("r", 1, rng), { fence: lease.token });
      assert.equal(await store.claim("r", "replica-b", 60_000), undefined);
      // Released: lost for good, even to a renew.
      await store.release(lease);
      assert.equal(await store.renew(lease, 60_000), undefined);
      assert.equal(await raw.exists("qlorad:lease:r"), 0);
      const next = (await store.claim("r", "replica-b", 60_000))!;
      assert.ok(next.token > lease.token);
    } finally {
      raw.disconnect();
      await store.close();
      await server.dispose();
    }
  },
});

Deno.test({
  name: "redis store: the manager renews a running job's lease, so a job outlives its first lease",
  ignore,
  async fn() {
    const server = await RedisServer.start(binary!);
    const store = await openStore(server);
    const other = await openStore(server);
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-redis-manager-" });
    // The store as the manager sees it, counting renewals.
    let renewals = 0;
    const counted = new Proxy(store, {
      get(target, name) {
        if (name === "renew") {
          return (lease: Lease, ttlMs: number) => (renewals++, target.renew(lease, ttlMs));
        }
        const value = Reflect.get(target, name, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const manager = await JobManager.open({
      dataDir,
      store: counted,
      logger: silentLogger,
      leaseTtlMs: 300,
      owner: "replica-a",
    });
    try {
      let stolen: Lease | undefined;
      // A job that runs until its lease was renewed four times: longer than the lease itself.
      const job = manager.submit({
        kind: "quantize",
        summary: "outlives its lease",
        request: {},
        run: async (ctx) => {
          // It runs under its lease: nobody else can claim the job now.
          stolen = await other.claim(ctx.jobId, "replica-b", 60_000);
          for (let attempt = 0; renewals < 4; attempt++) {
            if (attempt >= 400) throw new Error(`only ${renewals} renewals`);
            await new Promise((resolve) => setTimeout(resolve, 25));
          }
          ctx.emit({ progress: { message: "renewed" } });
          return { quantize_result: { tensors: 1 } };
        },
      });
      const seen = await Array.fromAsync(manager.watch(job.job_id));
      assert.equal(stolen, undefined, "no other claim while the job ran");
      assert.equal(seen.at(-1)?.state, "SUCCEEDED", JSON.stringify(seen.at(-1)));
      // The end was accepted under the renewed lease: the store has the outcome and every event.
      const stored = (await other.get(job.job_id))!;
      assert.equal(stored.record.state, "SUCCEEDED");
      const log = await Array.fromAsync(other.read(job.job_id, 1));
      assert.deepEqual(log.map((e) => e.seq), seen.map((e) => e.seq));
      assert.deepEqual(log.map((e) => e.seq), [1, 2, 3, 4]);
      // Released at its end: the next claim gets it at once, with a larger token.
      await manager.close();
      const after = await other.claim(job.job_id, "replica-b", 60_000);
      assert.ok(after, "released at the end");
    } finally {
      await manager.close();
      await store.close();
      await other.close();
      await server.dispose();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
