/**
 * CancelJob against the end of a training run, through a real server (issue 14, item 11). The
 * trainer looked at its signal only before each step, so a cancel during the last step or while
 * the final adapter was written was accepted (RUNNING) and then lost (SUCCEEDED). Now the job has
 * a point of no return: a cancel before it always ends CANCELLED; one after it is refused with
 * FAILED_PRECONDITION and the job SUCCEEDS. Whatever the timing, the answer and the outcome agree.
 * And resuming from a finished run's checkpoint reports that run's final loss, not NaN.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { call, collect, type Msg, startTestServer } from "./grpc_client.ts";

const STEPS = 3;
const TRAIN = {
  base_model_path: "tiny",
  dataset_path: "tiny/train.jsonl",
  // A larger adapter makes the final checkpoint and adapter writes take a while: the window.
  lora: { r: 64 },
  hyperparameters: { max_steps: STEPS, micro_batch_size: 2, max_seq_len: 32 },
};

Deno.test({
  name: "CancelJob at the last step: the answer and the job's outcome always agree",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const seen: string[] = [];
      for (const [attempt, trigger] of [[1, "last step"], [2, "last step"], [3, "checkpoint"]]) {
        // Cancel the moment the client sees the last step's metrics (or the last checkpoint).
        const answer = await new Promise<{ state?: string; code?: number }>((resolve) => {
          const stream = t.qlorad.Train({ ...TRAIN, output_path: `runs/${attempt}` });
          let sent = false;
          stream.on("data", (ev: Msg) => {
            const last = trigger === "last step"
              ? ev.payload === "train_metrics" && ev.train_metrics.step === STEPS
              : ev.payload === "checkpoint" && ev.checkpoint.step === STEPS;
            if (!last || sent) return;
            sent = true;
            call(t.qlorad, "CancelJob", { job_id: ev.job_id }).then(
              (r) => resolve({ state: r.job.state }),
              (e: grpc.ServiceError) => resolve({ code: e.code }),
            );
          });
          stream.on("error", () => {});
        });
        const jobs = (await call(t.qlorad, "ListJobs", {})).jobs;
        const jobId = jobs[0].job_id;
        const log = await collect(t.qlorad.WatchJob({ job_id: jobId }));
        const final = log.events.at(-1)!.state;
        const said = answer.state ?? status[answer.code!];
        seen.push(`${trigger}: ${said} -> ${final}`);
        if (answer.state === "JOB_STATE_RUNNING") {
          assert.equal(final, "JOB_STATE_CANCELLED", `attempt ${attempt}: accepted, then ${final}`);
          // Stopped at the final checkpoint: nothing was made final.
          assert.ok(!log.events.some((e) => e.payload === "checkpoint" && e.checkpoint.is_final));
          await assert.rejects(
            Deno.stat(join(t.dataDir, `runs/${attempt}/adapter_model.safetensors`)),
          );
        } else if (answer.code === status.FAILED_PRECONDITION) {
          assert.equal(final, "JOB_STATE_SUCCEEDED", `attempt ${attempt}: refused, then ${final}`);
        } else {
          assert.equal(answer.state, final, `attempt ${attempt}: ${JSON.stringify(answer)}`);
        }
      }
      // Informative when it fails; the outcomes depend on timing, the agreement does not.
      assert.equal(seen.length, 3, seen.join("; "));
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "resuming from a finished run's final checkpoint reports its final loss, not NaN",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const req = { ...TRAIN, lora: { r: 2 }, output_path: "runs/done" };
      const first = await collect(t.qlorad.Train(req));
      assert.equal(first.code, status.OK, first.details);
      const done = first.events.at(-1)!.train_result;
      const again = await collect(t.qlorad.Train({ ...req, resume_from: "runs/done" }));
      assert.equal(again.code, status.OK, again.details);
      const result = again.events.at(-1)!.train_result;
      assert.equal(result.steps, STEPS);
      assert.equal(result.resumed_from_step, STEPS);
      assert.ok(Number.isFinite(result.final_loss), `final_loss ${result.final_loss}`);
      assert.equal(result.final_loss, done.final_loss);
      assert.ok(!again.events.some((e) => e.payload === "train_metrics"), "no step was run");
    } finally {
      await t.close();
    }
  },
});
