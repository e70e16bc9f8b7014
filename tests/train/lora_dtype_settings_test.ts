/**
 * The lora_dtype setting on both fronts: bf16 without an optimizer GPU budget is refused before
 * any file is read, naming the setting (`--lora-dtype` on the command line,
 * `hyperparameters.lora_dtype` over gRPC) and the budget setting to give; an unknown value is
 * refused naming the flag; the message round-trips the value; EstimateMemory over gRPC and
 * `qlorad estimate` take it and report the bf16 storage's smaller lora bytes.
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { runCommand } from "../../src/cli/command.ts";
import { COMMANDS } from "../../src/cli/main.ts";
import { trainSettingsOfFlags } from "../../src/cli/local_jobs.ts";
import {
  hyperparametersFromMessage,
  hyperparametersMessage,
} from "../../src/service/handlers/request_settings.ts";
import { call, startTestServer, streamCall } from "../service/grpc_client.ts";
import { SettingError } from "../../src/train/settings.ts";

const CONFIG = JSON.stringify({
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 301,
});

async function cli(
  name: string,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const command = COMMANDS.find((c) => c.name === name)!;
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCommand(command, args, {
    print: (l) => out.push(l),
    printError: (l) => err.push(l),
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("lora_dtype: flags and messages map onto the setting, default f32", () => {
  assert.equal(trainSettingsOfFlags({}).hp.loraDtype, "f32");
  const hp = trainSettingsOfFlags({ "lora-dtype": "BF16", "optimizer-budget": "1048576" }).hp;
  assert.equal(hp.loraDtype, "bf16");
  assert.equal(hp.optimizerGpuBudgetBytes, 1048576);
  assert.equal(hyperparametersFromMessage(undefined).loraDtype, "f32");
  const msg = hyperparametersMessage(hp);
  assert.equal(msg.lora_dtype, "LORA_DTYPE_BF16");
  assert.equal(hyperparametersFromMessage(msg).loraDtype, "bf16");
  assert.throws(
    () => trainSettingsOfFlags({ "lora-dtype": "fp8" }),
    (e: unknown) =>
      e instanceof SettingError && e.field === "--lora-dtype" &&
      e.message === `--lora-dtype: "fp8" is not one of f32, bf16`,
  );
});

Deno.test({
  name: "lora_dtype bf16 without an optimizer budget: refused naming the setting, CLI and gRPC",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const train = await cli("train", [
      "--model",
      "m",
      "--data",
      "d.jsonl",
      "--out",
      "o",
      "--lora-dtype",
      "bf16",
    ]);
    assert.equal(train.code, 2, train.err);
    assert.match(train.err, /qlorad train: --lora-dtype: bf16 keeps the f32 master/);
    assert.match(train.err, /set --optimizer-budget > 0/);
    const estimate = await cli("estimate", ["--preset", "7b", "--lora-dtype", "bf16"]);
    assert.equal(estimate.code, 2, estimate.err);
    assert.match(estimate.err, /--lora-dtype: bf16 .* set --optimizer-budget > 0/);

    const t = await startTestServer();
    try {
      const hyperparameters = { lora_dtype: "LORA_DTYPE_BF16" };
      const r = await streamCall(t.qlorad, "Train", {
        base_model_path: "m",
        dataset_path: "d.jsonl",
        output_path: "o",
        hyperparameters,
      });
      assert.equal(r.events.length, 0, "a job was started");
      assert.equal(r.code, status.INVALID_ARGUMENT, r.details);
      assert.match(r.details, /^hyperparameters\.lora_dtype: bf16 keeps the f32 master/);
      assert.match(r.details, /set hyperparameters\.optimizer_gpu_budget_bytes > 0/);
      const err = await call(t.qlorad, "EstimateMemory", {
        model_config_json: CONFIG,
        hyperparameters,
      })
        .then(() => undefined, (e) => e);
      assert.ok(err, "EstimateMemory accepted bf16 without a budget");
      assert.equal(err.code, status.INVALID_ARGUMENT);
      // A budget the master and moments fit in (3 x 4 bytes a parameter) would not page them:
      // refused naming the request's fields.
      const whole = await call(t.qlorad, "EstimateMemory", {
        model_config_json: CONFIG,
        hyperparameters: { ...hyperparameters, optimizer_gpu_budget_bytes: 1 << 30 },
      }).then(() => undefined, (e) => e);
      assert.ok(whole, "EstimateMemory accepted bf16 with a budget that holds the whole state");
      assert.equal(whole.code, status.INVALID_ARGUMENT);
      assert.match(
        whole.details,
        /^hyperparameters\.optimizer_gpu_budget_bytes: hyperparameters\.lora_dtype bf16 /,
      );
      // With a budget under the state the estimate is made, the lora bytes below f32's.
      const budget = { optimizer_gpu_budget_bytes: 4096 };
      const f32 = await call(t.qlorad, "EstimateMemory", {
        model_config_json: CONFIG,
        hyperparameters: budget,
      });
      const bf16 = await call(t.qlorad, "EstimateMemory", {
        model_config_json: CONFIG,
        hyperparameters: { ...budget, ...hyperparameters },
      });
      const lora = (m: Record<string, Record<string, unknown>>) => Number(m.bytes_by_category.lora);
      assert.ok(lora(bf16) < lora(f32), `bf16 ${lora(bf16)} vs f32 ${lora(f32)}`);
    } finally {
      await t.close();
    }
  },
});

Deno.test("lora_dtype bf16 with a budget that holds the whole state: a usage error naming the flags", async () => {
  // 7B, r 64 on every linear: master, m and v take 12 x 159,907,840 bytes, under this budget.
  const run = await cli("estimate", [
    "--preset",
    "7b",
    "--lora-dtype",
    "bf16",
    "--optimizer-budget",
    "2000000000",
  ]);
  assert.equal(run.code, 2, run.err);
  assert.match(
    run.err,
    /--optimizer-budget: --lora-dtype bf16 keeps the f32 master .* --optimizer-budget must be > 0 and under .* 1918894080 bytes \(got 2000000000\)/,
  );
});

Deno.test("qlorad estimate --lora-dtype bf16 lowers the lora column and says so", async () => {
  const args = ["--preset", "7b", "--checkpointing", "--optimizer-budget", "268435456", "--json"];
  const f32 = JSON.parse((await cli("estimate", args)).out);
  const run = await cli("estimate", [...args, "--lora-dtype", "bf16"]);
  assert.equal(run.code, 0, run.err);
  const bf16 = JSON.parse(run.out);
  const [a] = f32.estimates;
  const [b] = bf16.estimates;
  // r 64 on every linear of 7B: 159,907,840 parameters, 2 bytes each in bf16, plus one layer's
  // window in f32 (1/32 of them); f32 storage holds 4 bytes each.
  assert.equal(a.bytes.lora, 159_907_840 * 4);
  assert.equal(b.bytes.lora, 159_907_840 * 2 + (159_907_840 / 32) * 4);
  assert.equal(b.bytes.gradients, a.bytes.gradients);
  const text = await cli("estimate", [...args.slice(0, -1), "--lora-dtype", "bf16"]);
  assert.match(text.out, /LoRA parameters bf16 on the GPU, f32 master paged/);
});
