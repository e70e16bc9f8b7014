/**
 * Train and Evaluate jobs on the tiny fixture, without the service: eval loss falls with the
 * trained adapter, and a run killed with SIGKILL and resumed from its last checkpoint ends
 * with the same adapter, bit for bit, as an uninterrupted run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { closeGpuAfterTests, gpu, gpuTest } from "../support/gpu.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { runTrainJob } from "../../src/train/train_job.ts";
import { trainOptions } from "./train_options.ts";
import { runEvaluateJob } from "../../src/train/evaluate_job.ts";

let fixtureDir: string | undefined;
async function fixture(): Promise<string> {
  if (!fixtureDir) {
    fixtureDir = await Deno.makeTempDir({ prefix: "qlorad-train-" });
    await makeTinyLlama(join(fixtureDir, "model"));
  }
  return fixtureDir;
}

gpuTest(
  "a trained adapter lowers the held-out loss; checkpoints and summary are written",
  async () => {
    const dir = await fixture();
    const evalOpts = {
      baseModelDir: join(dir, "model"),
      datasetPath: join(dir, "model", "eval.jsonl"),
      maxSeqLen: 64,
      batchSize: 8,
      samplePrompts: [],
      maxNewTokens: 0,
      labels: { baseModel: "model", dataset: "model/eval.jsonl" },
    };
    const before = await runEvaluateJob(gpu, evalOpts, {});
    const metrics: number[] = [];
    const checkpoints: number[] = [];
    const summary = await runTrainJob(
      gpu,
      trainOptions(dir, "run-a", { maxSteps: 30, learningRate: 5e-3 }),
      {
        metrics: (m) => metrics.push(m.loss),
        checkpoint: (_p, step) => checkpoints.push(step),
      },
    );
    assert.equal(summary.steps, 30);
    assert.equal(metrics.length, 30);
    assert.deepEqual(checkpoints, [4, 8, 12, 16, 20, 24, 28, 30]);
    const after = await runEvaluateJob(gpu, { ...evalOpts, adapterDir: join(dir, "run-a") }, {});
    console.log(`eval loss ${before.loss.toFixed(4)} -> ${after.loss.toFixed(4)}`);
    assert.ok(after.loss < before.loss, `eval loss ${before.loss} -> ${after.loss}`);
    assert.equal(after.tokens, before.tokens);
    assert.ok(Math.abs(after.perplexity - Math.exp(after.loss)) < 1e-9 * after.perplexity);
    const s = JSON.parse(await Deno.readTextFile(join(dir, "run-a", "training_summary.json")));
    assert.equal(s.steps, 30);
  },
);

gpuTest(
  "killed with SIGKILL mid-run and resumed: the same adapter as an uninterrupted run",
  async () => {
    const dir = await fixture();
    await runTrainJob(gpu, trainOptions(dir, "straight"), {});
    const straight = await Deno.readFile(join(dir, "straight", "adapter_model.safetensors"));

    const runner = new URL("./train_job_runner.ts", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", runner, dir, "killed"],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    // Kill as soon as the second checkpoint (step 8) exists, mid-way through the run.
    const second = join(dir, "killed", "checkpoints", "step-00000008");
    for (let i = 0; i < 600; i++) {
      try {
        await Deno.stat(second);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel();
    await assert.rejects(Deno.stat(join(dir, "killed", "adapter_model.safetensors")));

    const resumed = await runTrainJob(gpu, {
      ...trainOptions(dir, "killed"),
      resumeFrom: join(dir, "killed"),
    }, {});
    assert.ok(resumed.resumedFromStep! >= 8, `resumed from ${resumed.resumedFromStep}`);
    assert.equal(resumed.steps, 12);
    const again = await Deno.readFile(join(dir, "killed", "adapter_model.safetensors"));
    assert.deepEqual(again, straight);
  },
);

gpuTest("(cleanup)", async () => {
  if (fixtureDir) await Deno.remove(fixtureDir, { recursive: true });
});

closeGpuAfterTests();
