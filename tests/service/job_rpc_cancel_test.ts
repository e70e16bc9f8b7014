/**
 * startJob's cancelWithCall (Generate: the job is its call's): a call that ends while its job is
 * being submitted (in a fleet, several Redis round trips) has fired its "cancelled" event before
 * startJob listens for it; the job must be cancelled all the same, not run for nobody. A local
 * manager and a hand-built call (an EventEmitter with grpc-js's fields) stand in for the server.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { JobManager } from "../../src/service/jobs.ts";
import type { JobRun } from "../../src/service/jobs.ts";
import { startJob } from "../../src/service/handlers/job_rpc.ts";
import type { ServiceContext } from "../../src/service/handlers/jobs.ts";
import type { JobEventStream } from "../../src/service/messages.ts";
import { silentLogger } from "../../src/service/status.ts";

/** The few fields of a grpc-js server stream that startJob and streamJob read. */
function fakeCall(): JobEventStream<{ request_id?: string }> & { cancelled: boolean } {
  return Object.assign(new EventEmitter(), {
    request: {},
    cancelled: false,
    getDeadline: () => Infinity,
    getPeer: () => "test",
    write: () => true,
    end: () => {},
  }) as unknown as JobEventStream<{ request_id?: string }> & { cancelled: boolean };
}

Deno.test("startJob cancelWithCall: a call that ended during the submit cancels its job", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-cancel-with-call-" });
  const jobs = await JobManager.open({ dataDir, logger: silentLogger });
  const call = fakeCall();
  // The body runs until it is cancelled, or until the test lets it succeed.
  let succeed: (() => void) | undefined;
  const started = Promise.withResolvers<void>();
  const run: JobRun = (job) =>
    new Promise((resolve, reject) => {
      succeed = () => resolve({ log: { level: "info", message: "ran for nobody" } });
      job.signal.addEventListener("abort", () => reject(job.signal.reason));
      started.resolve();
    });
  // The client goes away while the job is being submitted (after startJob's last check).
  const manager = {
    findRequestAsync: jobs.findRequestAsync.bind(jobs),
    submitJob: async (sub: Parameters<JobManager["submitJob"]>[0]) => {
      const record = await jobs.submitJob(sub);
      call.cancelled = true;
      call.emit("cancelled");
      return record;
    },
    cancel: jobs.cancel.bind(jobs),
    watch: jobs.watch.bind(jobs),
    lookup: jobs.lookup.bind(jobs),
  };
  const ctx = { jobs: manager, dataDir, logger: silentLogger, hostDirs: [dataDir] };
  try {
    await startJob(
      call,
      ctx as unknown as ServiceContext,
      "generate",
      "Generate",
      () => Promise.resolve({ summary: "tokens for a caller", request: {} as never, run }),
      {
        cancelWithCall: true,
      },
    );
    const [record] = jobs.list();
    const ended = (async () => {
      while (!["SUCCEEDED", "CANCELLED", "FAILED"].includes(jobs.get(record.job_id).state)) {
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    // Once its body runs (if it ever does), it would succeed unless it was cancelled.
    await Promise.race([started.promise, ended]);
    succeed?.();
    await ended;
    assert.equal(jobs.get(record.job_id).state, "CANCELLED");
  } finally {
    await jobs.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
