/**
 * A Train job with lora_dtype bf16 on the tiny fixture, without the service: a budget that would
 * not page the master is refused naming the user's settings; the loss falls; a run stopped after
 * its step-8 checkpoint and resumed ends with the same adapter file, byte for byte, as an
 * uninterrupted one; and that file holds the f32 master (values with bits below bf16's), not the
 * GPU's bf16 copy.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { closeGpuAfterTests, gpu, gpuTest } from "../support/gpu.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { runTrainJob } from "../../src/train/train_job.ts";
import { trainOptions } from "./train_options.ts";
import { loadAdapter } from "../../src/train/peft.ts";
import { llamaConfigFromHf } from "../../src/model/config.ts";
import { SettingError } from "../../src/train/settings.ts";

/** bf16 storage needs a paging budget: 4 KiB is far under the fixture's master and moments. */
const BF16 = { loraDtype: "bf16" as const, optimizerGpuBudgetBytes: 4096 };

gpuTest("bf16 LoRA storage: a Train job learns and resumes bit for bit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-bf16-train-" });
  try {
    await makeTinyLlama(join(dir, "model"));
    // A budget the fixture's master and moments fit in would not page them: refused before the
    // model loads, naming the request's fields, or the flags the CLI passes as settingNames.
    const whole = trainOptions(dir, "whole", { ...BF16, optimizerGpuBudgetBytes: 1 << 30 });
    await assert.rejects(
      runTrainJob(gpu, whole, {}),
      (e: unknown) =>
        e instanceof SettingError && e.field === "hyperparameters.optimizer_gpu_budget_bytes" &&
        /: hyperparameters\.lora_dtype bf16 keeps the f32 master/.test(e.message),
    );
    const flags = { loraDtype: "--lora-dtype", optimizerGpuBudgetBytes: "--optimizer-budget" };
    await assert.rejects(
      runTrainJob(gpu, { ...whole, settingNames: flags }, {}),
      (e: unknown) =>
        e instanceof SettingError && e.field === "--optimizer-budget" &&
        /: --lora-dtype bf16 keeps the f32 master/.test(e.message),
    );
    const losses: number[] = [];
    await runTrainJob(gpu, trainOptions(dir, "straight", BF16), {
      metrics: (m) => losses.push(m.loss),
    });
    assert.equal(losses.length, 12);
    console.log(`bf16 job loss ${losses[0].toFixed(4)} -> ${losses.at(-1)!.toFixed(4)}`);
    assert.ok(losses.at(-1)! < losses[0], `loss ${losses[0]} -> ${losses.at(-1)}`);
    const straight = await Deno.readFile(join(dir, "straight", "adapter_model.safetensors"));

    // Stopped as soon as the step-8 checkpoint is written (the job checks the signal before
    // each step), then resumed from the output folder.
    const stop = new AbortController();
    await assert.rejects(
      runTrainJob(gpu, trainOptions(dir, "stopped", BF16), {
        checkpoint: (_p, step) => {
          if (step === 8) stop.abort();
        },
      }, stop.signal),
    );
    const resumed = await runTrainJob(gpu, {
      ...trainOptions(dir, "stopped", BF16),
      resumeFrom: join(dir, "stopped"),
    }, {});
    assert.equal(resumed.resumedFromStep, 8);
    assert.equal(resumed.steps, 12);
    const again = await Deno.readFile(join(dir, "stopped", "adapter_model.safetensors"));
    assert.deepEqual(again, straight);

    // The saved values are the f32 master: many have nonzero bits under the bf16 ones (a bf16
    // copy would have none), and they moved from the start.
    const cfg = llamaConfigFromHf(
      JSON.parse(await Deno.readTextFile(join(dir, "model", "config.json"))),
      "config.json",
    );
    const { flat } = await loadAdapter(join(dir, "straight"), cfg);
    const bits = new Uint32Array(flat.buffer, flat.byteOffset, flat.length);
    let below = 0;
    for (const b of bits) if ((b & 0xffff) !== 0) below++;
    assert.ok(below > flat.length / 4, `${below} of ${flat.length} values have f32-only bits`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

closeGpuAfterTests();
