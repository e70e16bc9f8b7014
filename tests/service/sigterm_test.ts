/**
 * SIGTERM during training, as Kubernetes sends it: `qlorad serve` stops taking calls, the running
 * Train job finishes its step and writes a checkpoint, the job ends FAILED with a message that
 * says how to resume, and the process exits 0. A new server resumes from that checkpoint to the
 * full step count, and no `.partial-` folder is left anywhere. And in-process: closing refuses new
 * calls at once while the running job's stream stays open until the job stops.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import { startServer } from "../../src/service/server.ts";
import { silentLogger } from "../../src/service/status.ts";
import { CancelledError } from "../../src/util/errors.ts";
import { call, collect, connect, follow, type Msg } from "./grpc_client.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
const MAX_STEPS = 80;

interface Served {
  port: number;
  child: Deno.ChildProcess;
  /** Sends SIGTERM; resolves with the exit code and what the server logged. */
  stop(): Promise<{ code: number; log: string }>;
}

async function serve(dataDir: string): Promise<Served> {
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
      "--shutdown-timeout",
      "120",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let port = 0;
  while (!port) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`serve exited early: ${seen}${await log}`);
    seen += value;
    port = Number(seen.match(/listening on 127\.0\.0\.1:(\d+)/)?.[1] ?? 0);
  }
  return {
    port,
    child,
    async stop() {
      child.kill("SIGTERM");
      const { code } = await child.status;
      await lines.cancel();
      return { code, log: await log };
    },
  };
}

async function walk(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(path.join(dir, rel))) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory) out.push(...await walk(dir, p));
  }
  return out;
}

const TRAIN = {
  base_model_path: "models/tiny-nf4",
  dataset_path: "models/tiny/train.jsonl",
  output_path: "runs/a",
  lora: { r: 4 },
  hyperparameters: {
    max_steps: MAX_STEPS,
    micro_batch_size: 2,
    max_seq_len: 48,
    learning_rate: 1e-3,
    save_steps: 1_000_000, // only the shutdown checkpoint
  },
};

Deno.test({
  name:
    "SIGTERM during Train: checkpoint, resumable FAILED record, exit 0; the next server resumes",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-sigterm-" });
    let first: Served | undefined;
    let second: Served | undefined;
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      first = await serve(dataDir);
      const a = connect(first.port);
      let jobId: string;
      let stopStep: number;
      try {
        const q = await collect(
          a.qlorad.Quantize({ model_path: "models/tiny", output_path: "models/tiny-nf4" }),
        );
        assert.equal(q.code, grpc.status.OK, q.details);

        const train = follow(a.qlorad.Train(TRAIN));
        let metrics = 0;
        const third = await train.until((e) => e.payload === "train_metrics" && ++metrics === 3);
        jobId = third.job_id;
        const stopped = first.stop();
        const out = await train.done;
        const end = await stopped;
        first = undefined;
        assert.equal(end.code, 0, end.log);
        assert.match(end.log, /shutting down/);

        // The stream that started the job ends with the job's error: where to resume.
        assert.equal(out.code, grpc.status.UNAVAILABLE, out.details);
        const m = out.details.match(
          /^server shut down at step (\d+) \(checkpoint (runs\/a\/checkpoints\/step-\d+)\); resume with resume_from="runs\/a"$/,
        );
        assert.ok(m, out.details);
        stopStep = Number(m[1]);
        const steps = out.events.filter((e) => e.payload === "train_metrics");
        assert.ok(stopStep >= 3 && stopStep < MAX_STEPS, `stopped at ${stopStep}`);
        assert.ok(steps.length <= stopStep);
        // The checkpoint is complete, under its final name, at the step the message gives.
        for (const f of ["adapter_model.safetensors", "optimizer.safetensors"]) {
          await Deno.stat(path.join(dataDir, m[2], f));
        }
        assert.ok(m[2].endsWith(String(stopStep)), m[2]);
        await assert.rejects(Deno.stat(path.join(dataDir, "runs/a/adapter_model.safetensors")));
      } finally {
        a.close();
      }

      // The record was written before exit; a new server reports it as it was left.
      second = await serve(dataDir);
      const b = connect(second.port);
      try {
        const job = await call(b.qlorad, "GetJob", { job_id: jobId });
        assert.equal(job.state, "JOB_STATE_FAILED");
        assert.equal(job.error.code, "UNAVAILABLE");
        assert.match(job.error.message, new RegExp(`^server shut down at step ${stopStep} `));
        const log = await collect(b.qlorad.WatchJob({ job_id: jobId }));
        const tail = log.events.slice(-2);
        assert.equal(tail[0].payload, "checkpoint");
        assert.equal(tail[0].checkpoint.step, stopStep);
        assert.equal(tail[1].state, "JOB_STATE_FAILED");
        assert.deepEqual(tail[1].error, job.error);

        const resumed = await collect(b.qlorad.Train({ ...TRAIN, resume_from: "runs/a" }));
        assert.equal(resumed.code, grpc.status.OK, resumed.details);
        const metrics = resumed.events.filter((e) => e.payload === "train_metrics");
        assert.equal(metrics[0].train_metrics.step, stopStep + 1);
        assert.equal(metrics.at(-1)!.train_metrics.step, MAX_STEPS);
        const result = resumed.events.findLast((e: Msg) => e.payload === "train_result")!;
        assert.equal(result.train_result.steps, MAX_STEPS);
        assert.equal(result.train_result.resumed_from_step, stopStep);
        await Deno.stat(path.join(dataDir, "runs/a/adapter_model.safetensors"));
      } finally {
        b.close();
      }
      const end = await second.stop();
      second = undefined;
      assert.equal(end.code, 0, end.log);
      const partial = (await walk(dataDir)).filter((p) => p.includes(".partial-"));
      assert.deepEqual(partial, []);
    } finally {
      for (const s of [first, second]) {
        if (!s) continue;
        try {
          s.child.kill("SIGKILL");
        } catch {
          // already gone
        }
        await s.child.status;
      }
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "close() stops taking calls at once; the running job's stream goes on until it stops",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-sigterm-" });
    // A quantizer that reports one tensor, then works until it is aborted.
    let aborted = false;
    const quantize = (o: QuantizeOptions): Promise<QuantizeResult> => {
      o.onProgress?.({ tensor: "t", index: 1, total: 2, bytesIn: 8, bytesOut: 4, quantized: true });
      return new Promise((_, reject) =>
        o.signal?.addEventListener("abort", () => {
          aborted = true;
          setTimeout(() => reject(new CancelledError()), 200);
        })
      );
    };
    const server = await startServer({ dataDir, port: 0, logger: silentLogger, quantize });
    const a = connect(server.port);
    let b: ReturnType<typeof connect> | undefined;
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      const q = follow(a.qlorad.Quantize({ model_path: "models/tiny", output_path: "out" }));
      await q.until((e) => e.payload === "progress");
      const closing = server.close();
      // A call that arrives now is refused, on a new connection or on the old one.
      b = connect(server.port);
      await assert.rejects(call(b.qlorad, "ListJobs", {}), { code: grpc.status.UNAVAILABLE });
      await assert.rejects(call(a.qlorad, "ListJobs", {}), { code: grpc.status.UNAVAILABLE });
      // The job's own stream stays open until the job has stopped.
      const out = await q.done;
      assert.ok(aborted);
      assert.equal(out.code, grpc.status.UNAVAILABLE, out.details);
      assert.equal(out.details, "the server is shutting down");
      await closing;
    } finally {
      a.close();
      b?.close();
      await server.close();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
