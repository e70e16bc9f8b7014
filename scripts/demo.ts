/**
 * The demo: the whole pipeline on the bundled tiny Llama, through a real gRPC server and
 * client on loopback. Fixture -> Quantize (NF4 + double quant) -> Evaluate the base ->
 * Train LoRA adapters (live loss) -> Evaluate base + adapter -> summary table.
 *   deno task demo [--data-dir data/demo] [--steps 120]
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import cliProgress from "cli-progress";
import { makeTinyLlama } from "./tiny_llama/mod.ts";
import { PROTO_LOADER_OPTIONS, PROTO_PATH, startServer } from "../src/service/server.ts";
import { consoleLogger } from "../src/service/status.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

const { values } = parseArgs({
  args: Deno.args,
  options: { "data-dir": { type: "string" }, steps: { type: "string" } },
});
const dataDir = resolve(values["data-dir"] ?? "data/demo");
const steps = Number(values.steps ?? 300);

await Deno.remove(dataDir, { recursive: true }).catch(() => {});
await Deno.mkdir(dataDir, { recursive: true });
console.log(`qlorad demo: data directory ${dataDir}`);
await makeTinyLlama(join(dataDir, "tiny-llama"));
console.log("made the tiny Llama fixture (bf16, GQA, 2 layers) with train.jsonl and eval.jsonl");

const server = await startServer({ dataDir, port: 0, logger: { ...consoleLogger, info() {} } });
const definition = protoLoader.loadSync(PROTO_PATH, PROTO_LOADER_OPTIONS);
// deno-lint-ignore no-explicit-any
const pkg = grpc.loadPackageDefinition(definition) as any;
const client = new pkg.qlorad.v1.QLoRA(
  `127.0.0.1:${server.port}`,
  grpc.credentials.createInsecure(),
);
console.log(`server listening on 127.0.0.1:${server.port}\n`);

/** Runs a streaming RPC to its end, handing each event to `onEvent`. */
function run(method: string, req: Msg, onEvent: (ev: Msg) => void): Promise<Msg[]> {
  return new Promise((resolve, reject) => {
    const events: Msg[] = [];
    const stream = client[method](req);
    stream.on("data", (ev: Msg) => {
      events.push(ev);
      onEvent(ev);
    });
    stream.on("error", (err: grpc.ServiceError) => reject(new Error(`${method}: ${err.details}`)));
    stream.on("end", () => resolve(events));
  });
}

function bar(format: string) {
  return new cliProgress.SingleBar({
    format,
    barsize: 30,
    hideCursor: true,
    noTTYOutput: true,
    notTTYSchedule: 2000,
    etaBuffer: 20,
  }, cliProgress.Presets.shades_classic);
}

const last = (events: Msg[], payload: string) =>
  events.findLast((e) => e.payload === payload)?.[payload];

try {
  // 1. Quantize
  const qbar = bar("quantize |{bar}| {value}/{total} tensors | {tensor}");
  let qStarted = false;
  const q = await run(
    "Quantize",
    { model_path: "tiny-llama", output_path: "tiny-llama-nf4" },
    (ev) => {
      if (ev.payload !== "progress") return;
      if (!qStarted) qbar.start(ev.progress.total, 0, { tensor: "" });
      qStarted = true;
      qbar.update(ev.progress.index, { tensor: ev.progress.tensor });
    },
  );
  qbar.stop();
  const qr = last(q, "quantize_result");
  console.log(
    `quantized ${qr.parameters_quantized.toLocaleString()} parameters in ${qr.tensors_quantized} tensors ` +
      `to NF4 + double quant: ${qr.bits_per_parameter.toFixed(3)} bits/parameter, ` +
      `${(qr.bytes_in / 1024).toFixed(0)} KiB -> ${(qr.bytes_out / 1024).toFixed(0)} KiB, ` +
      `mean |error| ${qr.mean_abs_error.toExponential(2)}, max ${
        qr.max_abs_error.toExponential(2)
      }\n`,
  );

  // 2. Evaluate the base
  const evalReq = {
    base_model_path: "tiny-llama-nf4",
    dataset_path: "tiny-llama/eval.jsonl",
    max_seq_len: 64,
    batch_size: 16,
    sample_prompts: ["The capital of France is", "Q: What is the capital of Italy?\nA:"],
    max_new_tokens: 12,
  };
  const evaluate = async (label: string, adapter?: string) => {
    const events = await run(
      "Evaluate",
      adapter ? { ...evalReq, adapter_path: adapter } : evalReq,
      () => {},
    );
    const r = last(events, "eval_result");
    console.log(
      `${label}: eval loss ${r.loss.toFixed(4)} nats, perplexity ${r.perplexity.toFixed(2)}, ` +
        `token accuracy ${(100 * r.token_accuracy).toFixed(1)}% over ${r.tokens} tokens`,
    );
    for (const s of r.samples) {
      console.log(`  sample: ${JSON.stringify(s.prompt)} -> ${JSON.stringify(s.completion)}`);
    }
    return r;
  };
  const before = await evaluate("base (4-bit)");

  // 3. Train
  console.log(`\ntraining LoRA r=16 on all 7 linear layers for ${steps} steps`);
  const tbar = bar(
    "train    |{bar}| step {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta}s",
  );
  let tStarted = false;
  const t = await run("Train", {
    base_model_path: "tiny-llama-nf4",
    dataset_path: "tiny-llama/train.jsonl",
    eval_dataset_path: "tiny-llama/eval.jsonl",
    output_path: "adapters/demo",
    lora: { r: 16, alpha: 32, dropout: 0.05 },
    hyperparameters: {
      learning_rate: 4e-3,
      lr_scheduler: "LR_SCHEDULER_COSINE",
      warmup_steps: Math.round(steps * 0.05),
      max_steps: steps,
      micro_batch_size: 8,
      gradient_accumulation_steps: 1,
      max_seq_len: 64,
      max_grad_norm: 1,
      save_steps: Math.max(1, Math.floor(steps / 2)),
      seed: 42,
    },
  }, (ev) => {
    if (ev.payload !== "train_metrics") return;
    const m = ev.train_metrics;
    if (!tStarted) tbar.start(m.total_steps, 0, { loss: "-", tps: "-", remaining: "-" });
    tStarted = true;
    tbar.update(m.step, {
      loss: m.loss.toFixed(4),
      tps: Math.round(m.tokens_per_second),
      remaining: Math.round(m.eta_seconds),
    });
  });
  tbar.stop();
  const tr = last(t, "train_result");
  console.log(
    `trained ${tr.steps} steps in ${tr.train_seconds.toFixed(1)} s: loss ${
      tr.first_loss.toFixed(4)
    } -> ` +
      `${tr.final_loss.toFixed(4)}; adapter saved to ${tr.output_path} (PEFT format)\n`,
  );

  // 4. Evaluate base + adapter
  const after = await evaluate("base + adapter", "adapters/demo");

  // 5. Summary
  const gib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;
  const rows: Array<[string, string, string]> = [
    ["eval loss (nats)", before.loss.toFixed(4), after.loss.toFixed(4)],
    ["perplexity", before.perplexity.toFixed(2), after.perplexity.toFixed(2)],
    [
      "token accuracy",
      `${(100 * before.token_accuracy).toFixed(1)}%`,
      `${(100 * after.token_accuracy).toFixed(1)}%`,
    ],
  ];
  console.log("\n| metric | base (NF4) | base + adapter |\n|---|---:|---:|");
  for (const [k, a, b] of rows) console.log(`| ${k} | ${a} | ${b} |`);
  console.log(
    `\ntraining: ${
      tr.tokens_per_second.toFixed(0)
    } tokens/s, ${tr.trainable_parameters.toLocaleString()} trainable parameters`,
  );
  console.log("peak GPU memory by category:");
  for (const [k, v] of Object.entries(tr.peak_memory_bytes as Record<string, number>)) {
    console.log(`  ${k.padEnd(13)} ${gib(v).padStart(12)}`);
  }
  if (!(after.loss < before.loss)) throw new Error("the adapter did not lower the eval loss");
  console.log("\ndemo complete");
} finally {
  client.close();
  await server.close();
}
