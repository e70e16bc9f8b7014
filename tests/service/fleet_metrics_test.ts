/**
 * The fleet-wide job gauges (issue 11: "queue depth is what an autoscaler watches"): a server on
 * a shared Redis store exports `qlorad.fleet.jobs.queue.depth` and `qlorad.fleet.jobs.running`,
 * counted over every replica's jobs, not only its own. Here server A (a real `startServer` in
 * fleet mode, scraped through the Prometheus endpoint) runs no job at all, while two more
 * replicas (job managers B and C on their own connections to the same Redis) queue and run
 * jobs of a kind no server registers (so A, given one by the fleet queue, hands it back to its
 * submitter). While Redis is down the scrape still answers.
 */
import assert from "node:assert/strict";
import { setupTelemetry } from "../../src/telemetry/setup.ts";
import { startServer } from "../../src/service/server.ts";
import { JobManager } from "../../src/service/jobs.ts";
import type { JobKind, JobRun } from "../../src/service/jobs.ts";
import { RedisJobStore } from "../../src/service/jobs/redis_store.ts";
import { redisStoreSettings } from "../../src/service/jobs/redis_settings.ts";
import { silentLogger } from "../../src/service/status.ts";
import { CancelledError } from "../../src/util/errors.ts";
import { findRedisServer, RedisServer } from "../support/redis_server.ts";

const redisBinary = findRedisServer();
if (!redisBinary) console.log("fleet_metrics_test: SKIPPED, no redis-server installed");

/** Prometheus text: `name{labels} value` lines -> value by bare metric name (no labels here). */
function fleetValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(qlorad_fleet_\w+)(?:\{.*\})? (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

/** A kind no server registers a runner for: only its submitter runs it. */
const GATED = "gated-test" as JobKind;

/** A job that runs until its gate is opened (or it is cancelled or closed). */
function gated(gates: Map<string, () => void>): JobRun {
  return (ctx) =>
    new Promise((resolve, reject) => {
      gates.set(ctx.jobId, () => resolve());
      ctx.signal.addEventListener("abort", () => reject(new CancelledError("stopped")), {
        once: true,
      });
    });
}

Deno.test({
  name: "fleet metrics: queue depth and running jobs count every replica's jobs, from the store",
  ignore: !redisBinary,
  async fn() {
    const redis = await RedisServer.start(redisBinary!);
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-fleet-metrics-" });
    const open = async () => {
      const settings = await redisStoreSettings({ flag: redis.url, env: () => undefined });
      return await RedisJobStore.open(settings!, silentLogger, { connectTimeoutMs: 5_000 });
    };
    const [storeA, storeB, storeC] = [await open(), await open(), await open()];
    const telemetry = await setupTelemetry({
      serviceName: "qlorad-test",
      env: new Map([
        ["QLORAD_PROMETHEUS_PORT", "0"],
        ["QLORAD_PROMETHEUS_HOST", "127.0.0.1"],
      ]),
    });
    const server = await startServer({
      dataDir,
      port: 0,
      logger: silentLogger,
      store: storeA,
      replicaId: "a",
    });
    const manager = (store: RedisJobStore, owner: string) =>
      JobManager.open({
        dataDir,
        store,
        fleet: true,
        owner,
        closeTimeoutMs: 5_000,
        logger: silentLogger,
      });
    const b = await manager(storeB, "b");
    const c = await manager(storeC, "c");
    const gates = new Map<string, () => void>();
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${telemetry.prometheusPort}/metrics`);
      assert.equal(res.status, 200);
      return fleetValues(await res.text());
    };
    /** The QUEUED and RUNNING counts from a scan of every record, or undefined while unreachable. */
    const scanned = async () => {
      try {
        const states = (await storeA.list()).map((j) => j.record.state);
        return [
          states.filter((s) => s === "QUEUED").length,
          states.filter((s) => s === "RUNNING").length,
        ];
      } catch {
        return undefined;
      }
    };
    /**
     * Polls until the scrape shows `queued` and `running` (the claims are asynchronous), and a scan
     * of every record agrees (the gauges read the store's indexes instead).
     */
    const settles = async (queued: number, running: number) => {
      let last = new Map<string, number>();
      let scan: number[] | undefined;
      for (let i = 0; i < 300; i++) {
        last = await scrape();
        scan = await scanned();
        if (
          last.get("qlorad_fleet_jobs_queue_depth") === queued &&
          last.get("qlorad_fleet_jobs_running") === running &&
          scan?.[0] === queued && scan?.[1] === running
        ) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(last.get("qlorad_fleet_jobs_queue_depth"), queued, "queue depth");
      assert.equal(last.get("qlorad_fleet_jobs_running"), running, "running");
      assert.deepEqual(scan, [queued, running], "the records agree");
    };
    try {
      assert.ok(telemetry.prometheusPort, "a scrape endpoint");
      await settles(0, 0);
      // B is sent 3 jobs, C 2: each runs one on its GPU and queues the rest; A runs none (it
      // cannot build this kind), yet A's gauges show all five.
      const submit = (m: JobManager, n: number) =>
        m.submitJob({ kind: GATED, summary: `g${n}`, request: { n }, run: gated(gates) });
      const bJobs = [await submit(b, 1), await submit(b, 2), await submit(b, 3)];
      const cJobs = [await submit(c, 4), await submit(c, 5)];
      await settles(3, 2);
      // B's running job ends: B takes its next one.
      const bRunning = bJobs.find((j) => gates.has(j.job_id));
      assert.ok(bRunning, "one of B's jobs runs");
      gates.get(bRunning.job_id)!();
      await settles(2, 2);
      // A queued job cancelled through B (not its submitter) leaves the queue.
      const cQueued = cJobs.find((j) => !gates.has(j.job_id));
      assert.ok(cQueued, "one of C's jobs waits");
      assert.equal((await b.cancel(cQueued.job_id)).state, "CANCELLED");
      await settles(1, 2);

      // Redis down: the scrape still answers (the store read fails at once, or is cut short),
      // and the fleet gauges observe nothing; the SDK's cumulative export then repeats the last
      // values (an async gauge's last point is kept), never a made-up count. (The leases, 30 s,
      // outlive the outage, so no replica takes a job over meanwhile.)
      await redis.kill();
      for (let i = 0; i < 5; i++) {
        for (const [name, value] of await scrape()) {
          assert.equal(value, name.endsWith("queue_depth") ? 1 : 2, `${name} while Redis is down`);
        }
      }
      await redis.restart();
      // Back with Redis, the gauges read the store again: C's running job ends, and running
      // drops to B's one. (Ended once C's own connection is back: a job that ends while its
      // replica cannot reach the store is not recorded, and is taken over when its lease lapses.)
      await settles(1, 2);
      for (let i = 0; i < 100; i++) {
        if (await storeC.get(cQueued.job_id).then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const cRunning = cJobs.find((j) => j !== cQueued && gates.has(j.job_id));
      assert.ok(cRunning, "C's other job runs");
      gates.get(cRunning.job_id)!();
      await settles(1, 1);
      assert.equal((await storeA.get(cRunning.job_id))?.record.state, "SUCCEEDED");
    } finally {
      for (const open of gates.values()) open();
      await b.close();
      await c.close();
      await server.close();
      for (const s of [storeA, storeB, storeC]) await s.close();
      await telemetry.shutdown();
      await redis.dispose();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
