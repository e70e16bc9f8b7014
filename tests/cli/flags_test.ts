/**
 * The command line's one rule for bad input: a bad or missing flag, or a setting out of range,
 * exits 2 with a message naming the flag and the command's usage; `--help` prints the usage and
 * exits 0. And `qlorad train|eval` with no settings flags gets the RPCs' defaults: the settings a
 * default (empty) request decodes to on the server.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as protoLoader from "@grpc/proto-loader";
import { type Command, runCommand } from "../../src/cli/command.ts";
import { COMMANDS } from "../../src/cli/main.ts";
import { evaluateSettingsOfFlags, trainSettingsOfFlags } from "../../src/cli/local_jobs.ts";
import {
  evaluateSettingsOf,
  hyperparametersFromMessage,
  loraFromMessage,
} from "../../src/service/handlers/request_settings.ts";
import { PROTO_LOADER_OPTIONS, PROTO_PATH, SERVICE_NAME } from "../../src/service/server.ts";
import type { EvaluateRequest, TrainRequest } from "../../src/service/messages.ts";

const MAIN = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

function command(name: string): Command {
  const c = COMMANDS.find((c) => c.name === name);
  if (!c) throw new Error(`no command ${name}`);
  return c;
}

/** Runs a command in this process with its output captured. */
async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCommand(command(args[0]), args.slice(1), {
    print: (l) => out.push(l),
    printError: (l) => err.push(l),
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

const TRAIN = ["train", "--model", "m", "--data", "d.jsonl", "--out", "o"];
const EVAL = ["eval", "--model", "m", "--data", "d.jsonl"];
const QUANTIZE = ["quantize", "--model", "m", "--out", "o"];
const ESTIMATE = ["estimate", "--preset", "7b"];

/** [arguments, the flag the message must name]. Every one is refused before any file is read. */
const BAD_FLAGS: Array<[string[], string]> = [
  [[...TRAIN, "--r", "0"], "--r"],
  [[...TRAIN, "--r", "8.5"], "--r"],
  [[...TRAIN, "--r", "1025"], "--r"],
  [[...TRAIN, "--r", "eight"], "--r"],
  [[...TRAIN, "--lr", "0"], "--lr"],
  [[...TRAIN, "--lr", "2"], "--lr"],
  [[...TRAIN, "--lr", "1e-3x"], "--lr"],
  [[...TRAIN, "--alpha", "0"], "--alpha"],
  [[...TRAIN, "--steps", "-1"], "--steps"],
  [[...TRAIN, "--steps", "2.5"], "--steps"],
  [[...TRAIN, "--epochs", "0"], "--epochs"],
  [[...TRAIN, "--batch", "0"], "--batch"],
  [[...TRAIN, "--accumulate", "4097"], "--accumulate"],
  [[...TRAIN, "--max-seq-len", "1"], "--max-seq-len"],
  [[...TRAIN, "--seed", "-3"], "--seed"],
  [[...TRAIN, "--save-steps", "NaN"], "--save-steps"],
  [[...TRAIN, "--bogus", "1"], "--bogus"],
  [[...TRAIN, "--lr"], "--lr"],
  [["train", "--model", "m", "--data", "d.jsonl"], "--out"],
  [[...EVAL, "--batch", "0"], "--batch"],
  [[...EVAL, "--batch", "1.5"], "--batch"],
  [[...EVAL, "--max-seq-len", "131073"], "--max-seq-len"],
  [["eval", "--data", "d.jsonl"], "--model"],
  [[...QUANTIZE, "--type", "int8"], "--type"],
  [[...QUANTIZE, "--blocksize", "100"], "--blocksize"],
  [[...QUANTIZE, "--blocksize", "0"], "--blocksize"],
  [["quantize", "--out", "o"], "--model"],
  [[...ESTIMATE, "--r", "0"], "--r"],
  [[...ESTIMATE, "--seq", "1"], "--seq"],
  [[...ESTIMATE, "--batch", "x"], "--batch"],
  [[...ESTIMATE, "--blocksize", "48"], "--blocksize"],
  [[...ESTIMATE, "--targets", "q_proj,nope"], "--targets"],
  [[...ESTIMATE, "--vocab-chunk", "0"], "--vocab-chunk"],
  [
    ["export", "--merge", "--base", "b", "--adapter", "a", "--out", "o", "--dtype", "f8"],
    "--dtype",
  ],
  [["serve", "--data-dir", "x", "--port", "65536"], "--port"],
  [["serve", "--data-dir", "x", "--max-queued", "-1"], "--max-queued"],
];

Deno.test("cli: every bad flag exits 2 naming the flag, with the command's usage", async () => {
  for (const [args, flag] of BAD_FLAGS) {
    const r = await run(args);
    const what = args.join(" ");
    assert.equal(r.code, 2, `${what}: ${r.err}`);
    assert.ok(r.err.includes(flag), `${what}: the message should name ${flag}: ${r.err}`);
    assert.ok(r.err.includes(`usage:\n  qlorad ${args[0]} `), `${what}: ${r.err}`);
    assert.equal(r.out, "", what);
  }
});

Deno.test("cli: --help prints the command's usage and exits 0", async () => {
  for (const c of COMMANDS) {
    const r = await run([c.name, "--help"]);
    assert.equal(r.code, 0, c.name);
    assert.equal(r.out, `usage:\n${c.usage}`);
  }
});

Deno.test("cli: the process exits with the code (2 for usage, 0 for help)", async () => {
  const exit = async (args: string[]) => {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, err: new TextDecoder().decode(r.stderr) };
  };
  const bad = await exit([...TRAIN, "--r", "0"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /^qlorad train: --r: 0 is outside 1\.\.1024/);
  assert.equal((await exit(["frobnicate"])).code, 2);
  assert.equal((await exit([])).code, 2);
  assert.equal((await exit(["eval", "--help"])).code, 0);
  assert.equal((await exit(["help"])).code, 0);
});

/** A request as the server receives an empty one: decoded with the server's loader options. */
function emptyRequest<T>(method: string): T {
  const pkg = protoLoader.loadSync(PROTO_PATH, PROTO_LOADER_OPTIONS);
  const service = pkg[SERVICE_NAME] as protoLoader.ServiceDefinition;
  return service[method].requestDeserialize(new Uint8Array(0) as Buffer) as T;
}

Deno.test("cli: train and eval without settings flags get the RPCs' defaults", () => {
  const evalRpc = evaluateSettingsOf(emptyRequest<EvaluateRequest>("Evaluate"));
  const evalCli = evaluateSettingsOfFlags({});
  // The proto: "batch_size: 0 means 1", "max_seq_len: 0 means 512".
  assert.equal(evalRpc.batchSize, 1);
  assert.equal(evalRpc.maxSeqLen, 512);
  assert.equal(evalCli.batchSize, evalRpc.batchSize);
  assert.equal(evalCli.maxSeqLen, evalRpc.maxSeqLen);

  const train = emptyRequest<TrainRequest>("Train");
  const trainCli = trainSettingsOfFlags({});
  assert.deepEqual(trainCli.lora, loraFromMessage(train.lora));
  assert.deepEqual(trainCli.hp, hyperparametersFromMessage(train.hyperparameters));
  // The proto: "max_steps: 0 means as many as epochs takes", "epochs: unset means 1",
  // "r: 0 means 8", "learning_rate: unset means 2e-4".
  assert.equal(trainCli.hp.maxSteps, 0);
  assert.equal(trainCli.hp.epochs, 1);
  assert.equal(trainCli.lora.r, 8);
  assert.equal(trainCli.hp.learningRate, 2e-4);
});
