/**
 * Quantize, WatchJob, GetJob, ListJobs and CancelJob over gRPC, with a stand-in quantizer, so
 * the service's job flow is tested apart from the quantizer (quantize_e2e_test.ts uses the real one).
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { status } from "@grpc/grpc-js";
import { CancelledError, QloradError } from "../../src/util/errors.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import {
  call,
  follow,
  healthStatus,
  startTestServer,
  streamCall,
  writeData,
} from "./grpc_client.ts";
import type { Msg, TestServer } from "./grpc_client.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";

const TENSORS = [
  "model.embed_tokens.weight",
  "model.layers.0.self_attn.q_proj.weight",
  "lm_head.weight",
];

interface FakeOptions {
  /** Held after the first tensor until this resolves (or the job is aborted). */
  hold?: Promise<void>;
  /** Thrown after the last tensor. */
  fail?: (o: QuantizeOptions) => unknown;
}

/**
 * Stands in for quantizeModel: reports each tensor, honours the signal, returns a result. The
 * job passes pinned paths (/proc/self/fd/<n>, see src/service/confine.ts); `calls` records the
 * host paths they stand for.
 */
function fakeQuantizer(fake: FakeOptions = {}) {
  const calls: QuantizeOptions[] = [];
  const quantize = async (o: QuantizeOptions): Promise<QuantizeResult> => {
    calls.push({
      ...o,
      modelDir: Deno.realPathSync(o.modelDir),
      outputDir: path.join(
        Deno.realPathSync(path.dirname(o.outputDir)),
        path.basename(o.outputDir),
      ),
    });
    for (let i = 0; i < TENSORS.length; i++) {
      if (o.signal?.aborted) throw new CancelledError();
      o.onProgress?.({
        tensor: TENSORS[i],
        index: i + 1,
        total: TENSORS.length,
        bytesIn: 1000 * (i + 1),
        bytesOut: 300 * (i + 1),
        quantized: i === 1,
      });
      if (i === 0 && fake.hold) {
        await new Promise<void>((resolve, reject) => {
          o.signal?.addEventListener("abort", () => reject(new CancelledError()), { once: true });
          fake.hold!.then(resolve);
        });
      }
    }
    if (fake.fail) throw fake.fail(o);
    return {
      parametersQuantized: 4096,
      tensorsQuantized: 1,
      tensorsKept: 2,
      bitsPerParameter: 4.127,
      bytesIn: 6000,
      bytesOut: 1800,
      meanAbsError: 0.01,
      maxAbsError: 0.05,
      outputDir: o.outputDir,
    };
  };
  return { quantize, calls };
}

function gate() {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => open = resolve);
  return { promise, open };
}

async function withServer(
  fake: ReturnType<typeof fakeQuantizer>,
  fn: (t: TestServer) => Promise<void>,
  maxQueuedJobs?: number,
) {
  const t = await startTestServer({ quantize: fake.quantize, maxQueuedJobs });
  try {
    await makeTinyLlama(path.join(t.dataDir, "models", "tiny"));
    await fn(t);
    assert.equal(await healthStatus(t), "SERVING");
  } finally {
    await t.close();
  }
}

const REQ = { model_path: "models/tiny", output_path: "out/tiny-nf4" };

Deno.test("Quantize streams QUEUED, RUNNING, a Progress per tensor, then the result", async () => {
  const fake = fakeQuantizer();
  await withServer(fake, async (t) => {
    const before = Date.now();
    const out = await streamCall(t.qlorad, "Quantize", REQ);
    assert.equal(out.code, status.OK, out.details);
    const ev = out.events;
    assert.deepEqual(ev.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(ev.map((e) => e.state), [
      "JOB_STATE_QUEUED",
      "JOB_STATE_RUNNING",
      "JOB_STATE_RUNNING",
      "JOB_STATE_RUNNING",
      "JOB_STATE_RUNNING",
      "JOB_STATE_SUCCEEDED",
    ]);
    const jobId = ev[0].job_id;
    assert.ok(ev.every((e) => e.job_id === jobId));
    assert.ok(ev.every((e) => e.time.seconds * 1000 + e.time.nanos / 1e6 >= before - 1000));
    assert.equal(ev[0].payload, undefined);
    assert.deepEqual(ev.slice(2, 5).map((e) => e.payload), ["progress", "progress", "progress"]);
    assert.deepEqual(ev[3].progress, {
      message: `quantized ${TENSORS[1]}`,
      tensor: TENSORS[1],
      index: 2,
      total: 3,
      bytes_in: 2000,
      bytes_out: 600,
      quantized: true,
    });
    assert.equal(ev[5].payload, "quantize_result");
    assert.deepEqual(ev[5].quantize_result, {
      parameters_quantized: 4096,
      tensors_quantized: 1,
      tensors_kept: 2,
      bits_per_parameter: 4.127,
      bytes_in: 6000,
      bytes_out: 1800,
      mean_abs_error: 0.01,
      max_abs_error: 0.05,
      output_path: "out/tiny-nf4", // the user's path, not the host's
    });

    // The quantizer got host paths inside the data dir, and the defaults.
    const real = await Deno.realPath(t.dataDir);
    const o = fake.calls[0];
    assert.equal(o.modelDir, path.join(real, "models", "tiny"));
    assert.equal(o.outputDir, path.join(real, "out", "tiny-nf4"));
    assert.deepEqual(
      [o.quantType, o.blocksize, o.doubleQuant, o.skipModules, o.overwrite],
      ["nf4", 64, true, ["lm_head"], false],
    );

    const job = await call(t.qlorad, "GetJob", { job_id: jobId });
    assert.equal(job.kind, "JOB_KIND_QUANTIZE");
    assert.equal(job.state, "JOB_STATE_SUCCEEDED");
    assert.equal(job.last_seq, 6);
    assert.equal(job.request, "quantize");
    assert.deepEqual(job.quantize, {
      model_path: "models/tiny",
      output_path: "out/tiny-nf4",
      quant_type: "QUANT_TYPE_NF4",
      blocksize: 64,
      double_quant: true,
      _double_quant: "double_quant",
      skip_modules: ["lm_head"],
      overwrite: false,
      request_id: "",
    });
    assert.match(job.summary, /^quantize models\/tiny -> out\/tiny-nf4 \(NF4, blocksize 64/);
    assert.ok(job.created_time && job.started_time && job.finished_time);
    assert.equal(job.error, null);
    assert.deepEqual(job.last_event, ev[5]);

    const list = await call(t.qlorad, "ListJobs", { kind: "JOB_KIND_QUANTIZE" });
    assert.deepEqual(list.jobs.map((j: Msg) => j.job_id), [jobId]);
    const none = await call(t.qlorad, "ListJobs", { states: ["JOB_STATE_FAILED"] });
    assert.deepEqual(none.jobs, []);
  });
});

Deno.test("Quantize passes explicit options through", async () => {
  const fake = fakeQuantizer();
  await withServer(fake, async (t) => {
    await writeData(t.dataDir, "out/existing/old.txt", "old");
    const out = await streamCall(t.qlorad, "Quantize", {
      model_path: "./models/tiny/",
      output_path: "out/existing",
      quant_type: "QUANT_TYPE_FP4",
      blocksize: 128,
      double_quant: false,
      skip_modules: ["lm_head", "embed_tokens"],
      overwrite: true,
    });
    assert.equal(out.code, status.OK, out.details);
    const o = fake.calls[0];
    assert.deepEqual(
      [o.quantType, o.blocksize, o.doubleQuant, o.skipModules, o.overwrite],
      ["fp4", 128, false, ["lm_head", "embed_tokens"], true],
    );
    const job = await call(t.qlorad, "GetJob", { job_id: out.events[0].job_id });
    assert.equal(job.quantize.model_path, "models/tiny");
    assert.equal(job.quantize.quant_type, "QUANT_TYPE_FP4");
  });
});

Deno.test("a client that disconnects leaves the job running; WatchJob replays it", async () => {
  const hold = gate();
  const fake = fakeQuantizer({ hold: hold.promise });
  await withServer(fake, async (t) => {
    const first = follow(t.qlorad.Quantize(REQ));
    const progress = await first.until((e) => e.payload === "progress");
    const jobId = progress.job_id;
    first.stream.cancel();
    assert.equal((await first.done).code, status.CANCELLED);

    // Reconnect while it is still running, from seq 2: RUNNING, the first tensor, then live.
    const second = follow(t.qlorad.WatchJob({ job_id: jobId, from_seq: 2 }));
    await second.until((e) => e.seq === 3);
    assert.equal((await call(t.qlorad, "GetJob", { job_id: jobId })).state, "JOB_STATE_RUNNING");
    hold.open();
    const watched = await second.done;
    assert.equal(watched.code, status.OK);
    assert.deepEqual(watched.events.map((e) => e.seq), [2, 3, 4, 5, 6]);
    assert.equal(watched.events.at(-1)!.state, "JOB_STATE_SUCCEEDED");

    // After the end: a full replay, or from any seq.
    const all = await streamCall(t.qlorad, "WatchJob", { job_id: jobId });
    assert.deepEqual(all.events.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(all.events.slice(1), watched.events);
    const tail = await streamCall(t.qlorad, "WatchJob", { job_id: jobId, from_seq: 6 });
    assert.deepEqual(tail.events.map((e) => e.payload), ["quantize_result"]);
  });
});

Deno.test("CancelJob stops a running Quantize: CANCELLED event and status", async () => {
  const fake = fakeQuantizer({ hold: new Promise(() => {}) });
  await withServer(fake, async (t) => {
    const q = follow(t.qlorad.Quantize(REQ));
    const jobId = (await q.until((e) => e.payload === "progress")).job_id;
    const res = await call(t.qlorad, "CancelJob", { job_id: jobId });
    assert.equal(res.job.job_id, jobId);
    const out = await q.done;
    assert.equal(out.code, status.CANCELLED, out.details);
    assert.equal(out.details, "cancelled by CancelJob");
    // The log, in full (a grpc-js client may drop events that come with an error status).
    const last = (await streamCall(t.qlorad, "WatchJob", { job_id: jobId })).events.at(-1)!;
    assert.equal(last.state, "JOB_STATE_CANCELLED");
    assert.deepEqual(last.error, { code: "CANCELLED", message: "cancelled by CancelJob" });
    const job = await call(t.qlorad, "GetJob", { job_id: jobId });
    assert.equal(job.state, "JOB_STATE_CANCELLED");
    assert.equal(job.error.code, "CANCELLED");
    // Again: nothing changes.
    const again = await call(t.qlorad, "CancelJob", { job_id: jobId });
    assert.equal(again.job.state, "JOB_STATE_CANCELLED");
    assert.equal(again.job.last_seq, last.seq);
  });
});

Deno.test("a failing quantizer: the stream ends with its status, host paths removed", async () => {
  const fake = fakeQuantizer({
    fail: (o) =>
      new QloradError(
        "invalid_argument",
        `${
          path.join(o.modelDir, "model.safetensors")
        }: truncated (header says 800 bytes, file has 20)`,
      ),
  });
  await withServer(fake, async (t) => {
    const out = await streamCall(t.qlorad, "Quantize", REQ);
    assert.equal(out.code, status.INVALID_ARGUMENT);
    assert.equal(
      out.details,
      "models/tiny/model.safetensors: truncated (header says 800 bytes, file has 20)",
    );
    // WatchJob ends OK (the watch worked; the job's outcome is in its events), with the full log.
    const watched = await streamCall(t.qlorad, "WatchJob", { job_id: out.events[0].job_id });
    assert.equal(watched.code, status.OK);
    const last = watched.events.at(-1)!;
    assert.equal(last.state, "JOB_STATE_FAILED");
    assert.deepEqual(last.error, { code: "INVALID_ARGUMENT", message: out.details });
    const job = await call(t.qlorad, "GetJob", { job_id: last.job_id });
    assert.deepEqual(job.error, last.error);
  });
});

Deno.test("a quantizer bug is INTERNAL with a generic message", async () => {
  const fake = fakeQuantizer({ fail: (o) => new TypeError(`undefined at ${o.modelDir}`) });
  await withServer(fake, async (t) => {
    const out = await streamCall(t.qlorad, "Quantize", REQ);
    assert.equal(out.code, status.INTERNAL);
    assert.ok(!out.details.includes(t.dataDir) && !out.details.includes("undefined"), out.details);
    const job = await call(t.qlorad, "GetJob", { job_id: out.events[0].job_id });
    assert.equal(job.state, "JOB_STATE_FAILED");
    assert.deepEqual(job.error, { code: "INTERNAL", message: out.details });
  });
});

Deno.test("one job at a time; a full queue is RESOURCE_EXHAUSTED; a queued job cancels at once", async () => {
  const hold = gate();
  const fake = fakeQuantizer({ hold: hold.promise });
  await withServer(fake, async (t) => {
    const a = follow(t.qlorad.Quantize(REQ));
    const aId = (await a.until((e) => e.payload === "progress")).job_id;
    const b = follow(t.qlorad.Quantize({ ...REQ, output_path: "out/b" }));
    const bId = (await b.until((e) => e.state === "JOB_STATE_QUEUED")).job_id;
    const c = await streamCall(t.qlorad, "Quantize", { ...REQ, output_path: "out/c" });
    assert.equal(c.code, status.RESOURCE_EXHAUSTED, c.details);
    assert.equal(c.events.length, 0);

    const running = await call(t.qlorad, "ListJobs", { states: ["JOB_STATE_RUNNING"] });
    assert.deepEqual(running.jobs.map((j: Msg) => j.job_id), [aId]);
    const cancelled = await call(t.qlorad, "CancelJob", { job_id: bId });
    assert.equal(cancelled.job.state, "JOB_STATE_CANCELLED");
    assert.equal((await b.done).code, status.CANCELLED);
    const bLog = await streamCall(t.qlorad, "WatchJob", { job_id: bId });
    assert.deepEqual(bLog.events.map((e) => e.state), ["JOB_STATE_QUEUED", "JOB_STATE_CANCELLED"]);

    hold.open();
    assert.equal((await a.done).code, status.OK);
    assert.equal(fake.calls.length, 1, "the cancelled job never ran");
    const all = await call(t.qlorad, "ListJobs", {});
    assert.deepEqual(all.jobs.map((j: Msg) => j.job_id), [bId, aId]);
    assert.equal((await call(t.qlorad, "ListJobs", { limit: 1 })).jobs.length, 1);
  }, 1);
});

Deno.test("a restarted server reports the job it was running as FAILED", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "qlorad-test-" });
  try {
    const fake = fakeQuantizer({ hold: new Promise(() => {}) });
    const a = await startTestServer({ dataDir, quantize: fake.quantize });
    let jobId: string;
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      const q = follow(a.qlorad.Quantize(REQ));
      jobId = (await q.until((e) => e.payload === "progress")).job_id;
      await a.server.close();
      const out = await q.done;
      assert.equal(out.code, status.UNAVAILABLE, out.details);
    } finally {
      await a.close();
    }

    const b = await startTestServer({ dataDir, quantize: fakeQuantizer().quantize });
    try {
      const job = await call(b.qlorad, "GetJob", { job_id: jobId });
      assert.equal(job.state, "JOB_STATE_FAILED");
      assert.deepEqual(job.error, {
        code: "UNAVAILABLE",
        message: "server restarted while the job was running",
      });
      const log = await streamCall(b.qlorad, "WatchJob", { job_id: jobId });
      assert.deepEqual(log.events.map((e) => e.state), [
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_FAILED",
      ]);
      assert.deepEqual(log.events.at(-1), job.last_event);
      // The restarted server runs new jobs.
      assert.equal((await streamCall(b.qlorad, "Quantize", REQ)).code, status.OK);
    } finally {
      await b.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
