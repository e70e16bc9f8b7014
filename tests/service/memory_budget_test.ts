/**
 * A server started with a GPU memory budget refuses Train and Evaluate jobs estimated above it:
 * the job ends RESOURCE_EXHAUSTED naming the setting, before the model reaches the GPU, and the
 * server stays healthy. The same jobs run under a budget they fit.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { healthStatus, startTestServer, streamCall } from "./grpc_client.ts";

const TRAIN = {
  base_model_path: "tiny",
  dataset_path: "tiny/train.jsonl",
  output_path: "adapters/budget",
  lora: { r: 8, alpha: 16 },
  hyperparameters: { max_steps: 1, micro_batch_size: 4, max_seq_len: 64 },
};
const EVALUATE = {
  base_model_path: "tiny",
  dataset_path: "tiny/eval.jsonl",
  max_seq_len: 64,
  batch_size: 4,
};

async function withServer(
  budget: number,
  fn: (t: Awaited<ReturnType<typeof startTestServer>>) => Promise<void>,
) {
  const t = await startTestServer({ server: { gpuMemoryBudgetBytes: budget } });
  try {
    await makeTinyLlama(join(t.dataDir, "tiny"));
    await fn(t);
  } finally {
    await t.close();
  }
}

Deno.test({
  name: "Train and Evaluate over the server's GPU memory budget end RESOURCE_EXHAUSTED naming it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(64 * 1024, async (t) => {
      for (const [method, req] of [["Train", TRAIN], ["Evaluate", EVALUATE]] as const) {
        const r = await streamCall(t.qlorad, method, req);
        assert.equal(r.code, status.RESOURCE_EXHAUSTED, `${method}: ${r.details}`);
        assert.match(r.details, /over the GPU memory budget of 64\.0 KiB/);
        assert.equal(await healthStatus(t), "SERVING");
      }
      await assert.rejects(Deno.stat(join(t.dataDir, "adapters", "budget")));
    });
    await withServer(1024 ** 3, async (t) => {
      const r = await streamCall(t.qlorad, "Train", TRAIN);
      assert.equal(r.code, status.OK, r.details);
    });
  },
});
