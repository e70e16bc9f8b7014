/**
 * The demo: the whole pipeline on the bundled tiny Llama, through a real gRPC server and
 * client on loopback. Fixture -> Quantize (NF4 + double quant) -> Evaluate the base (with
 * sample completions) -> Train LoRA adapters (live loss, ETA) -> Evaluate base + adapter -> the
 * samples before and after, and a summary table. It trains on the demo's own data
 * (scripts/tiny_llama/demo_datasets.ts: a few capitals in the two forms the sample prompts ask),
 * so that after about a minute on a CPU adapter the samples answer.
 *   deno task demo [--data-dir data/demo] [--steps 300] [--verbose]
 * --verbose also shows Dawn's own notices (QLORAD_DAWN_LOG=1).
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { formatDuration, Progress } from "../src/cli/progress.ts";
import { demoPrompts, makeDemoDatasets, makeTinyLlama } from "./tiny_llama/mod.ts";
import { PROTO_LOADER_OPTIONS, PROTO_PATH, startServer } from "../src/service/server.ts";
import { consoleLogger } from "../src/service/status.ts";

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

/** About a minute of training on lavapipe (2 loaded CPU cores; README's demo block). */
const STEPS = 300;
/** The demo data: this many capitals, each form this many times (demo_datasets.ts). */
const CAPITAL_COUNT = 16;
const COPIES = 8;
const LEARNING_RATE = 1e-2;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "data-dir": { type: "string" },
    steps: { type: "string" },
    verbose: { type: "boolean" },
  },
});
const dataDir = resolve(values["data-dir"] ?? "data/demo");
const steps = Number(values.steps ?? STEPS);
if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps: got ${values.steps}`);
if (values.verbose) Deno.env.set("QLORAD_DAWN_LOG", "1");

await Deno.remove(dataDir, { recursive: true }).catch(() => {});
await Deno.mkdir(dataDir, { recursive: true });
console.log(`qlorad demo: data directory ${dataDir}`);
await makeTinyLlama(join(dataDir, "tiny-llama"));
const demoData = makeDemoDatasets(1234, CAPITAL_COUNT, COPIES);
const jsonl = (rs: unknown[]) => rs.map((r) => JSON.stringify(r) + "\n").join("");
await Deno.writeTextFile(join(dataDir, "demo_train.jsonl"), jsonl(demoData.train));
await Deno.writeTextFile(join(dataDir, "demo_eval.jsonl"), jsonl(demoData.eval));
console.log(
  `made the tiny Llama fixture (bf16, GQA, 2 layers, random weights) and the demo data: ` +
    `${CAPITAL_COUNT} capitals, ${demoData.train.length} training records, ` +
    `${demoData.eval.length} eval records (the same facts)`,
);

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

/** A bar on a terminal, a plain line every 10% elsewhere (a log, CI). */
function progress(label: string, total: number): Progress {
  const enc = new TextEncoder();
  return new Progress({
    label,
    total,
    tty: Deno.stdout.isTerminal(),
    write: (t) => Deno.stdout.writeSync(enc.encode(t)),
  });
}

const last = (events: Msg[], payload: string) =>
  events.findLast((e) => e.payload === payload)?.[payload];

try {
  // 1. Quantize
  let qbar: Progress | undefined;
  let quantizedSoFar = 0;
  const q = await run(
    "Quantize",
    { model_path: "tiny-llama", output_path: "tiny-llama-nf4" },
    (ev) => {
      if (ev.payload !== "progress") return;
      const p = ev.progress;
      qbar ??= progress("quantize tensors", p.total);
      if (p.quantized) quantizedSoFar++;
      qbar.update(p.index, `(${quantizedSoFar} quantized, ${p.index - quantizedSoFar} kept)`);
    },
  );
  qbar?.done();
  const qr = last(q, "quantize_result");
  console.log(
    `quantized ${qr.tensors_quantized} of ${qr.tensors_quantized + qr.tensors_kept} tensors ` +
      `(${qr.parameters_quantized.toLocaleString()} parameters, the linear layers) to NF4 + ` +
      `double quant, kept ${qr.tensors_kept} in bf16 (embeddings, norms, lm_head): ` +
      `${qr.bits_per_parameter.toFixed(3)} bits/parameter, ` +
      `${(qr.bytes_in / 1024).toFixed(0)} KiB -> ${(qr.bytes_out / 1024).toFixed(0)} KiB, ` +
      `mean |error| ${qr.mean_abs_error.toExponential(2)}, max ${
        qr.max_abs_error.toExponential(2)
      }\n`,
  );

  // 2. Evaluate the base
  const evalReq = {
    base_model_path: "tiny-llama-nf4",
    dataset_path: "demo_eval.jsonl",
    max_seq_len: 64,
    batch_size: 16,
    sample_prompts: demoPrompts(),
    max_new_tokens: 8,
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
  let tbar: Progress | undefined;
  const t = await run("Train", {
    base_model_path: "tiny-llama-nf4",
    dataset_path: "demo_train.jsonl",
    eval_dataset_path: "demo_eval.jsonl",
    output_path: "adapters/demo",
    lora: { r: 16, alpha: 32, dropout: 0 },
    hyperparameters: {
      learning_rate: LEARNING_RATE,
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
    tbar ??= progress("train step", m.total_steps);
    tbar.update(
      m.step,
      `| loss ${m.loss.toFixed(4)} | ${Math.round(m.tokens_per_second)} tok/s | ` +
        `ETA ${formatDuration(m.eta_seconds)}`,
    );
  });
  tbar?.done();
  const tr = last(t, "train_result");
  console.log(
    `trained ${tr.steps} steps in ${tr.train_seconds.toFixed(1)} s: loss ${
      tr.first_loss.toFixed(4)
    } -> ` +
      `${tr.final_loss.toFixed(4)}; adapter saved to ${tr.output_path} (PEFT format)\n`,
  );

  // 4. Evaluate base + adapter
  const after = await evaluate("base + adapter", "adapters/demo");

  // 5. Summary: the samples before and after, then the numbers
  console.log("\n| prompt | base (NF4) | base + adapter |\n|---|---|---|");
  for (const [i, s] of after.samples.entries()) {
    const cell = (x: string) => JSON.stringify(x).replaceAll("|", "\\|");
    console.log(
      `| ${cell(s.prompt)} | ${cell(before.samples[i].completion)} | ${cell(s.completion)} |`,
    );
  }
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
