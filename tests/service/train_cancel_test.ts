/**
 * CancelJob on a running Train job stops it at a step boundary with a checkpoint; the client
 * that started it may have gone away; resume_from continues to the full step count.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { call, type Msg, startTestServer, streamCall } from "./grpc_client.ts";

Deno.test({
  name: "CancelJob stops training at a step boundary with a checkpoint; resume_from finishes it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const req = {
        base_model_path: "tiny",
        dataset_path: "tiny/train.jsonl",
        output_path: "runs/a",
        lora: { r: 4 },
        hyperparameters: {
          max_steps: 120,
          micro_batch_size: 2,
          max_seq_len: 48,
          learning_rate: 1e-3,
        },
      };
      // Start the job, read a few steps, then hang up: the job goes on without its client.
      const jobId = await new Promise<string>((resolve, reject) => {
        const stream = t.qlorad.Train(req);
        let steps = 0;
        stream.on("data", (ev: Msg) => {
          if (ev.payload === "train_metrics" && ++steps === 3) {
            resolve(ev.job_id);
            stream.cancel();
          }
        });
        stream.on("error", (e: { code: number }) => {
          if (e.code !== status.CANCELLED) reject(e);
        });
      });
      const running = await call(t.qlorad, "GetJob", { job_id: jobId });
      assert.equal(running.state, "JOB_STATE_RUNNING");
      await call(t.qlorad, "CancelJob", { job_id: jobId });
      const watched = await streamCall(t.qlorad, "WatchJob", { job_id: jobId, from_seq: 1 });
      const last = watched.events.at(-1)!;
      assert.equal(last.state, "JOB_STATE_CANCELLED");
      const steps = watched.events.filter((e) => e.payload === "train_metrics");
      const ckpt = watched.events.findLast((e) => e.payload === "checkpoint")!.checkpoint;
      assert.equal(
        ckpt.step,
        steps.at(-1)!.train_metrics.step,
        "checkpoint at the last finished step",
      );
      assert.ok(ckpt.step < 120);
      await Deno.stat(join(t.dataDir, ckpt.path, "optimizer.safetensors"));
      await assert.rejects(Deno.stat(join(t.dataDir, "runs/a/adapter_model.safetensors")));

      const resumed = await streamCall(t.qlorad, "Train", { ...req, resume_from: "runs/a" });
      assert.equal(resumed.code, status.OK, resumed.details);
      const result = resumed.events.findLast((e) => e.payload === "train_result")!.train_result;
      assert.equal(result.steps, 120);
      assert.equal(result.resumed_from_step, ckpt.step);
      const first = resumed.events.find((e) => e.payload === "train_metrics")!.train_metrics;
      assert.equal(first.step, ckpt.step + 1);
    } finally {
      await t.close();
    }
  },
});
