/**
 * Prints qlorad's evaluation of a model (+ adapter) on a dataset as JSON; the counterpart of
 * scripts/check_llama_torch.py for the outside check of the loss.
 *   deno run -A scripts/eval_loss.ts MODEL_DIR DATA.jsonl [ADAPTER_DIR]
 */
import { resolve } from "node:path";
import { GpuContext } from "../src/gpu/context.ts";
import { runEvaluateJob } from "../src/train/evaluate_job.ts";

const [model, data, adapter] = Deno.args;
const ctx = await GpuContext.open({ log: () => {} });
try {
  const r = await runEvaluateJob(() => Promise.resolve(ctx), {
    baseModelDir: resolve(model),
    adapterDir: adapter ? resolve(adapter) : undefined,
    datasetPath: resolve(data),
    maxSeqLen: 256,
    batchSize: 4,
    samplePrompts: [],
    maxNewTokens: 1,
    labels: { baseModel: model, dataset: data, adapter },
  }, {});
  console.log(JSON.stringify({ loss: r.loss, tokens: r.tokens }));
} finally {
  ctx.destroy();
}
