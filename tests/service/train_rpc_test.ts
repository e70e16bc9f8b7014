/**
 * Train, Evaluate and EstimateMemory through a real server and gRPC client on the tiny
 * fixture: the whole pipeline, every bad request refused with a clear status before any work,
 * and the server healthy after each.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { call, healthStatus, type Msg, startTestServer, streamCall } from "./grpc_client.ts";

const TRAIN = {
  base_model_path: "tiny-nf4",
  dataset_path: "tiny/train.jsonl",
  eval_dataset_path: "tiny/eval.jsonl",
  output_path: "adapters/run1",
  lora: { r: 8, alpha: 16, dropout: 0.05 },
  hyperparameters: {
    learning_rate: 5e-3,
    lr_scheduler: "LR_SCHEDULER_COSINE",
    warmup_steps: 2,
    max_steps: 12,
    micro_batch_size: 4,
    gradient_accumulation_steps: 2,
    max_seq_len: 64,
    save_steps: 5,
    eval_steps: 6,
  },
};

function final(events: Msg[], payload: string): Msg | undefined {
  return events.findLast((e) => e.payload === payload);
}

Deno.test({
  name: "Quantize -> Evaluate -> Train -> Evaluate through gRPC; bad requests refused",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const q = await streamCall(t.qlorad, "Quantize", {
        model_path: "tiny",
        output_path: "tiny-nf4",
      });
      assert.equal(q.code, status.OK, q.details);

      const evalReq = {
        base_model_path: "tiny-nf4",
        dataset_path: "tiny/eval.jsonl",
        max_seq_len: 64,
        batch_size: 8,
      };
      const before = await streamCall(t.qlorad, "Evaluate", evalReq);
      assert.equal(before.code, status.OK, before.details);
      const baseEval = final(before.events, "eval_result")!.eval_result;
      assert.ok(baseEval.loss > 0 && baseEval.tokens > 0);

      const train = await streamCall(t.qlorad, "Train", TRAIN);
      assert.equal(train.code, status.OK, train.details);
      const metrics = train.events.filter((e) => e.payload === "train_metrics").map((e) =>
        e.train_metrics
      );
      assert.deepEqual(metrics.map((m) => m.step), [...Array(12).keys()].map((i) => i + 1));
      for (const m of metrics) {
        assert.equal(m.total_steps, 12);
        assert.ok(m.loss > 0 && m.tokens_per_second > 0 && m.grad_norm >= 0);
        assert.ok(m.memory_bytes.base_weights > 0 && m.memory_bytes.lora > 0);
      }
      assert.equal(metrics[0].learning_rate, 0); // warmup starts at 0, as transformers does
      const ckpts = train.events.filter((e) => e.payload === "checkpoint").map((e) => e.checkpoint);
      // Checkpoints at 5, 10 and the last step, then one is_final event for the adapter itself
      // at output_path, sent once it is there.
      assert.deepEqual(ckpts.map((c) => [c.step, c.is_final]), [
        [5, false],
        [10, false],
        [12, false],
        [12, true],
      ]);
      assert.ok(ckpts.slice(0, 3).every((c) => c.path.startsWith("adapters/run1/checkpoints/")));
      assert.equal(ckpts[3].path, "adapters/run1");
      assert.ok(train.events.some((e) => e.payload === "eval_result" && e.eval_result.step === 6));
      const result = final(train.events, "train_result")!.train_result;
      assert.equal(result.steps, 12);
      assert.equal(result.output_path, "adapters/run1");
      assert.ok(result.eval_loss > 0 && result.trainable_parameters > 0);
      assert.equal(train.events.at(-1)!.state, "JOB_STATE_SUCCEEDED");
      for (
        const f of ["adapter_config.json", "adapter_model.safetensors", "training_summary.json"]
      ) {
        await Deno.stat(join(t.dataDir, "adapters/run1", f));
      }

      const after = await streamCall(t.qlorad, "Evaluate", {
        ...evalReq,
        adapter_path: "adapters/run1",
        sample_prompts: ["The capital of"],
        max_new_tokens: 4,
      });
      assert.equal(after.code, status.OK, after.details);
      const adapterEval = final(after.events, "eval_result")!.eval_result;
      assert.ok(adapterEval.loss < baseEval.loss, `${baseEval.loss} -> ${adapterEval.loss}`);
      assert.equal(adapterEval.samples.length, 1);
      assert.equal(adapterEval.samples[0].prompt, "The capital of");

      const est = await call(t.qlorad, "EstimateMemory", {
        base_model_path: "tiny-nf4",
        lora: { r: 8 },
        hyperparameters: { micro_batch_size: 4, max_seq_len: 64 },
      });
      assert.ok(est.total_bytes > 0 && est.bytes_by_category.base_weights > 0);

      // Bad requests: each a clear status, no job, nothing written, server still serving.
      await Deno.writeTextFile(join(t.dataDir, "bad.jsonl"), '{"text": "fine"}\n{"text": 3}\n');
      await Deno.writeTextFile(join(t.dataDir, "empty.jsonl"), "\n");
      await Deno.mkdir(join(t.dataDir, "no-tokenizer"));
      await Deno.copyFile(
        join(t.dataDir, "tiny/config.json"),
        join(t.dataDir, "no-tokenizer/config.json"),
      );
      const jobsBefore = (await call(t.qlorad, "ListJobs", {})).jobs.length;
      const refusals: Array<[string, Msg, number, RegExp]> = [
        [
          "Train",
          { ...TRAIN, dataset_path: "bad.jsonl", output_path: "o1" },
          status.INVALID_ARGUMENT,
          /bad\.jsonl:2: "text"/,
        ],
        [
          "Train",
          { ...TRAIN, dataset_path: "empty.jsonl", output_path: "o2" },
          status.INVALID_ARGUMENT,
          /empty\.jsonl/,
        ],
        [
          "Train",
          { ...TRAIN, base_model_path: "no-tokenizer", output_path: "o3" },
          status.NOT_FOUND,
          /tokenizer\.json not found/,
        ],
        ["Train", { ...TRAIN, lora: { r: 5000 } }, status.INVALID_ARGUMENT, /lora\.r/],
        [
          "Train",
          { ...TRAIN, hyperparameters: { learning_rate: -1 } },
          status.INVALID_ARGUMENT,
          /learning_rate/,
        ],
        [
          "Train",
          { ...TRAIN, lora: { target_modules: ["qkv"] } },
          status.INVALID_ARGUMENT,
          /target_modules/,
        ],
        ["Train", TRAIN, status.FAILED_PRECONDITION, /already exists/],
        [
          "Train",
          { ...TRAIN, dataset_path: "../etc/passwd" },
          status.INVALID_ARGUMENT,
          /dataset_path/,
        ],
        ["Evaluate", { ...evalReq, adapter_path: "nope" }, status.NOT_FOUND, /adapter_path/],
        [
          "Evaluate",
          { ...evalReq, adapter_path: "tiny" },
          status.NOT_FOUND,
          /adapter_config\.json not found/,
        ],
      ];
      let jobsMade = 0;
      for (const [rpc, req, code, message] of refusals) {
        const out = await streamCall(t.qlorad, rpc, req);
        assert.equal(out.code, code, `${rpc} ${JSON.stringify(req)}: ${out.details}`);
        assert.match(out.details, message);
        assert.ok(!out.details.includes(t.dataDir), "no host paths in messages");
        // Dataset problems are found by the job before any step (it reads the whole file).
        if (out.events.length > 0) {
          jobsMade++;
          assert.ok(!out.events.some((e) => e.payload === "train_metrics"), "no step ran");
        }
        assert.equal(await healthStatus(t), "SERVING");
      }
      assert.equal((await call(t.qlorad, "ListJobs", {})).jobs.length, jobsBefore + jobsMade);
    } finally {
      await t.close();
    }
  },
});
