/**
 * One set of settings, two fronts: the same bad setting is refused by the command line naming
 * its flag (exit 2) and by the RPC naming its proto field (INVALID_ARGUMENT), with the same
 * explanation after the name, before any file is looked at.
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { runCommand } from "../../src/cli/command.ts";
import { COMMANDS } from "../../src/cli/main.ts";
import { call, type Msg, startTestServer, streamCall } from "./grpc_client.ts";

/** A small Llama config.json for EstimateMemory (it needs one before it reads the settings). */
const CONFIG = JSON.stringify({
  model_type: "llama",
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 301,
});

const PATHS = {
  Train: { base_model_path: "m", dataset_path: "d.jsonl", output_path: "o" },
  Evaluate: { base_model_path: "m", dataset_path: "d.jsonl" },
  Quantize: { model_path: "m", output_path: "o" },
  EstimateMemory: { model_config_json: CONFIG },
};

const CLI = {
  train: ["--model", "m", "--data", "d.jsonl", "--out", "o"],
  eval: ["--model", "m", "--data", "d.jsonl"],
  quantize: ["--model", "m", "--out", "o"],
  estimate: ["--preset", "7b"],
};

interface Case {
  cli: [keyof typeof CLI, string, string];
  rpc: [keyof typeof PATHS, Msg, string];
}

const CASES: Case[] = [
  { cli: ["train", "--r", "2000"], rpc: ["Train", { lora: { r: 2000 } }, "lora.r"] },
  {
    cli: ["train", "--lr", "2"],
    rpc: ["Train", { hyperparameters: { learning_rate: 2 } }, "hyperparameters.learning_rate"],
  },
  {
    cli: ["train", "--batch", "1025"],
    rpc: [
      "Train",
      { hyperparameters: { micro_batch_size: 1025 } },
      "hyperparameters.micro_batch_size",
    ],
  },
  {
    cli: ["train", "--epochs", "1001"],
    rpc: ["Train", { hyperparameters: { epochs: 1001 } }, "hyperparameters.epochs"],
  },
  { cli: ["eval", "--batch", "1025"], rpc: ["Evaluate", { batch_size: 1025 }, "batch_size"] },
  {
    cli: ["eval", "--max-seq-len", "200000"],
    rpc: ["Evaluate", { max_seq_len: 200000 }, "max_seq_len"],
  },
  { cli: ["quantize", "--blocksize", "100"], rpc: ["Quantize", { blocksize: 100 }, "blocksize"] },
  { cli: ["estimate", "--r", "2000"], rpc: ["EstimateMemory", { lora: { r: 2000 } }, "lora.r"] },
  {
    cli: ["estimate", "--seq", "1"],
    rpc: [
      "EstimateMemory",
      { hyperparameters: { max_seq_len: 1 } },
      "hyperparameters.max_seq_len",
    ],
  },
];

/** The CLI's message for `args`: exit 2 and the text after "qlorad NAME: ", first line. */
async function cliRefusal(name: keyof typeof CLI, flag: string, value: string): Promise<string> {
  const command = COMMANDS.find((c) => c.name === name)!;
  const err: string[] = [];
  const code = await runCommand(command, [...CLI[name], flag, value], {
    print: () => {},
    printError: (l) => err.push(l),
  });
  assert.equal(code, 2, `${name} ${flag} ${value}: ${err.join("\n")}`);
  return err.join("\n").split("\n")[0].replace(`qlorad ${name}: `, "");
}

Deno.test({
  name: "settings: a bad setting names the flag on the command line and the proto field over gRPC",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      for (const { cli: [name, flag, value], rpc: [method, fields, field] } of CASES) {
        const req = { ...PATHS[method], ...fields };
        let code: status;
        let details: string;
        if (method === "EstimateMemory") {
          const err = await call(t.qlorad, method, req).then(() => undefined, (e) => e);
          assert.ok(err, `${method} ${field}: accepted`);
          ({ code, details } = err);
        } else {
          const r = await streamCall(t.qlorad, method, req);
          assert.equal(r.events.length, 0, `${method} ${field}: a job was started`);
          ({ code, details } = r);
        }
        assert.equal(code, status.INVALID_ARGUMENT, `${method} ${field}: ${details}`);
        assert.ok(details.startsWith(`${field}: `), `${method}: ${details} should name ${field}`);
        const cliMessage = await cliRefusal(name, flag, value);
        assert.ok(cliMessage.startsWith(`${flag}: `), `${name}: ${cliMessage} should name ${flag}`);
        // The same explanation after the name: the two fronts share one check.
        assert.equal(cliMessage.slice(flag.length), details.slice(field.length), field);
      }
    } finally {
      await t.close();
    }
  },
});
