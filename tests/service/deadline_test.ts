/**
 * Client deadlines and retries, through a real server (issue 14, item 10): a Quantize whose
 * deadline has passed by the time its request is valid creates no job; a request_id makes a
 * retry return the job the first attempt created (its events from the first), across a restart;
 * the same request_id with a different request is refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import type { Logger } from "../../src/service/status.ts";
import { call, collect, startTestServer } from "./grpc_client.ts";

/** A Quantize stand-in that succeeds at once, counting its calls. */
function countingQuantizer() {
  const calls: QuantizeOptions[] = [];
  const quantize = (o: QuantizeOptions): Promise<QuantizeResult> => {
    calls.push(o);
    o.onProgress?.({ tensor: "t", index: 1, total: 1, bytesIn: 1, bytesOut: 1, quantized: true });
    return Promise.resolve({
      parametersQuantized: 1,
      tensorsQuantized: 1,
      tensorsKept: 0,
      bitsPerParameter: 4,
      bytesIn: 1,
      bytesOut: 1,
      meanAbsError: 0,
      maxAbsError: 0,
      outputDir: o.outputDir,
    });
  };
  return { quantize, calls };
}

Deno.test({
  name: "a call whose deadline passed during validation creates no job",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const infos: string[] = [];
    let deadline = 0;
    const logger: Logger = {
      info: (m) => infos.push(m),
      warn() {},
      error() {},
      // The server has the request and starts validating it: hold it right there (the event
      // loop is shared, so a busy wait holds the server) until the client's deadline has passed.
      debug: (m) => {
        if (m.startsWith("Quantize: validating")) {
          while (Date.now() <= deadline + 5) {
            /* hold */
          }
        }
      },
    };
    const fake = countingQuantizer();
    const t = await startTestServer({ quantize: fake.quantize, server: { logger } });
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      deadline = Date.now() + 2000;
      const out = await collect(
        t.qlorad.Quantize({ model_path: "tiny", output_path: "q" }, new grpc.Metadata(), {
          deadline,
        }),
      );
      assert.equal(out.code, status.DEADLINE_EXCEEDED, out.details);
      // Wait for the server to be done with the call: it either says so, or a job appears.
      let jobs: unknown[] = [];
      for (let i = 0; i < 600; i++) {
        jobs = (await call(t.qlorad, "ListJobs", {})).jobs;
        if (jobs.length || infos.some((m) => m.includes("no job"))) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(jobs, [], "no job for a call that had already ended");
      assert.ok(infos.some((m) => /^Quantize: the call ended before its job was created/.test(m)));
      assert.equal(fake.calls.length, 0);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "request_id: a retry returns the job the first attempt created, even after a restart",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-idem-" });
    const fake = countingQuantizer();
    try {
      await makeTinyLlama(join(dataDir, "tiny"));
      const req = { model_path: "tiny", output_path: "q", request_id: "retry-me-1" };
      let t = await startTestServer({ dataDir, quantize: fake.quantize });
      let jobId: string;
      try {
        const first = await collect(t.qlorad.Quantize(req));
        assert.equal(first.code, status.OK, first.details);
        jobId = first.events[0].job_id;
        const retry = await collect(t.qlorad.Quantize(req));
        assert.equal(retry.code, status.OK, retry.details);
        assert.deepEqual(retry.events, first.events, "the same job, its events from the first");
        const job = await call(t.qlorad, "GetJob", { job_id: jobId });
        assert.equal(job.quantize.request_id, "retry-me-1");
        // The same key for another request: refused, naming the job it belongs to.
        const other = await collect(t.qlorad.Quantize({ ...req, output_path: "q-other" }));
        assert.equal(other.code, status.FAILED_PRECONDITION, other.details);
        assert.match(
          other.details,
          new RegExp(`request_id "retry-me-1" was used for job ${jobId}`),
        );
        // A key that is not one.
        const bad = await collect(t.qlorad.Quantize({ ...req, request_id: "has space" }));
        assert.equal(bad.code, status.INVALID_ARGUMENT, bad.details);
        assert.match(bad.details, /^request_id: /);
      } finally {
        await t.close();
      }
      t = await startTestServer({ dataDir, quantize: fake.quantize });
      try {
        const afterRestart = await collect(t.qlorad.Quantize(req));
        assert.equal(afterRestart.code, status.OK, afterRestart.details);
        assert.equal(afterRestart.events[0].job_id, jobId);
        assert.equal((await call(t.qlorad, "ListJobs", {})).jobs.length, 1);
        assert.equal(fake.calls.length, 1, "the job ran once");
      } finally {
        await t.close();
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
