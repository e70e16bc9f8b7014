/**
 * A bounded fuzz of a real server on loopback (issue 14, "done means"): a fixed number of
 * requests from a seeded generator, each a plausible request with one to four fields replaced by
 * adversarial values: sizes (long strings, long lists, messages near and over the size limit),
 * nesting (deep JSON in model_config_json and in dataset lines), numbers at the edges (0, -0,
 * 2^32, 2^53, 1e308, NaN, infinities), and paths (escapes, symlinks, the reserved folder, NUL,
 * very long, files where folders belong). Datasets the fuzz can name all hold a bad record, so
 * jobs fail while reading them and no training step runs.
 *
 * Checked: every answer is a status the contract defines for bad input (never UNKNOWN, never
 * INTERNAL), with no host path or stack in it; every job it created ends in a final state whose
 * error is likewise defined; afterwards the server is SERVING, still answers a valid request, and
 * its memory grew by a bounded amount. No durations are asserted; the deadline on each call only
 * bounds a hang.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { MAX_LINE_BYTES } from "../../src/data/dataset.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import { Rng } from "../../src/util/random.ts";
import { call, collect, connect, healthStatus, type Msg, startTestServer } from "./grpc_client.ts";

const S = grpc.status;
const SEED = 0x0f022;
const REQUESTS = 360;
const CONCURRENCY = 8;
const MAX_REQUEST_BYTES = 4 << 20;
const CALL_DEADLINE_MS = 120_000;
const ROOT = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** Answers the contract defines for a request; UNKNOWN, INTERNAL and the rest are failures. */
const DEFINED = new Set([
  S.OK,
  S.CANCELLED, // a job the fuzz itself cancelled
  S.INVALID_ARGUMENT,
  S.NOT_FOUND,
  S.PERMISSION_DENIED,
  S.FAILED_PRECONDITION,
  S.RESOURCE_EXHAUSTED,
  S.UNIMPLEMENTED, // a method that does not exist
]);

/** Error codes a job may end with (JobError.code). */
const DEFINED_JOB_ERRORS = new Set([
  "CANCELLED",
  "INVALID_ARGUMENT",
  "NOT_FOUND",
  "PERMISSION_DENIED",
  "FAILED_PRECONDITION",
  "RESOURCE_EXHAUSTED",
  "UNAVAILABLE",
]);

// ------------------------------------------------------------------ values

const EDGE_NUMBERS = [
  0,
  -0,
  1,
  -1,
  2,
  63,
  64,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53 + 2,
  1e308,
  -1e308,
  5e-324,
  NaN,
  Infinity,
  -Infinity,
];

/** Datasets written below; each has at least one bad record. */
const DATASETS: Record<string, () => string | Uint8Array> = {
  "bad/deep.jsonl": () => `{"text": "ok"}\n{"text": "a", "m": ${"[".repeat(9000)}\n`,
  "bad/deep-valid.jsonl": () => `{"text": "a", "m": ${"[".repeat(200)}${"]".repeat(200)}}\n`,
  "bad/long-line.jsonl": () => `{"text": "${"q".repeat(MAX_LINE_BYTES + 1)}"}\n`,
  "bad/long-token.jsonl": () => `{"text": "${"z".repeat((1 << 20) + 7)}"}\n`,
  "bad/inf.jsonl": () => '{"input_ids": [1, 1e400]}\n',
  "bad/neg.jsonl": () => '{"input_ids": [1, 2], "labels": [1, -5]}\n',
  "bad/huge-id.jsonl": () => `{"input_ids": [${2 ** 53}]}\n`,
  "bad/utf8.jsonl": () =>
    new Uint8Array([
      ...new TextEncoder().encode('{"text": "a"}\n{"text": "'),
      0xff,
      0xfe,
      0x22,
      0x7d,
    ]),
  "bad/nul.jsonl": () => '{"text": "a\u0000b"}\n\u0000\n',
  "bad/many-messages.jsonl": () =>
    JSON.stringify({
      messages: Array.from({ length: 5000 }, (_, i) => ({
        role: i % 2 ? "assistant" : "user",
        content: "x",
      })),
    }) + "\n",
  "bad/not-json.jsonl": () => "root:x:0:0:root:/root:/bin/bash\n",
  "bad/empty.jsonl": () => "\n\n",
  "bad/crlf.jsonl": () => '{"text": "a"}\r\n{"text": 1}\r\n',
};

const ESCAPES = [
  "",
  ".",
  "..",
  "../x",
  "a/../../x",
  "/etc/passwd",
  "\\\\host\\share",
  "C:\\x",
  "x\0y",
  ".qlorad",
  ".qlorad/jobs",
  "./.qlorad/lock",
  "escape",
  "escape/secret.txt",
  "dangling",
  "dangling/x",
  "tiny/config.json/x",
  "n".repeat(256),
  "a/".repeat(600),
  "\u{1F600}/\u202e",
  "\ud800",
  "%2e%2e/x",
];

const INPUT_PATHS = [
  ...ESCAPES,
  "tiny",
  "tiny/",
  "./tiny",
  "tiny/config.json",
  "tiny/model.safetensors",
];
const DATASET_PATHS = [...ESCAPES, ...Object.keys(DATASETS), "tiny", "tiny/config.json"];
const OUTPUT_PATHS = [...ESCAPES, "tiny", "tiny/sub", "out/a", "out/b", "bad", "bad/deep.jsonl"];

function deepJson(rng: Rng): string {
  const n = [65, 200, 5000, 100_000][rng.int(4)];
  return rng.int(2) ? `{"a":${"[".repeat(n)}` : `{"a":${"[".repeat(n)}${"]".repeat(n)}}`;
}

function sizedString(rng: Rng): string {
  const n = [0, 1, 255, 1025, 70_000, 1 << 20, MAX_REQUEST_BYTES + 16][rng.int(7)];
  return ["x", "é", "\u{1F600}", "/", "\0"][rng.int(5)].repeat(n);
}

function configJson(rng: Rng, tiny: string): string {
  const cfg = JSON.parse(tiny);
  const keys = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
  ];
  switch (rng.int(6)) {
    case 0:
      return deepJson(rng);
    case 1:
      return sizedString(rng);
    case 2:
      return JSON.stringify(cfg).replace(/"num_hidden_layers":\d+/, '"num_hidden_layers":1e400');
    case 3:
      return JSON.stringify({ ...cfg, rope_scaling: { type: "llama3", factor: 1e400 } });
    default: {
      for (let k = 0; k <= rng.int(3); k++) {
        const v = [EDGE_NUMBERS[rng.int(EDGE_NUMBERS.length)], "64", null, [64], {}][rng.int(5)];
        cfg[keys[rng.int(keys.length)]] = v;
      }
      return JSON.stringify(cfg);
    }
  }
}

// ------------------------------------------------------------------ requests

type Mutator = (rng: Rng) => unknown;

const pick = <T>(list: readonly T[]): Mutator => (rng) => list[rng.int(list.length)];
const num: Mutator = pick(EDGE_NUMBERS);
const strList: Mutator = (rng) =>
  Array.from(
    { length: [0, 1, 3, 65, 5000][rng.int(5)] },
    () => pick(["q_proj", "", "x".repeat(300), "all-linear", "lm_head"])(rng),
  );

interface Family {
  base: Msg;
  fields: Record<string, Mutator>;
}

function families(tinyConfig: string): Record<string, Family> {
  const hp: Record<string, Mutator> = {};
  for (
    const f of [
      "learning_rate",
      "warmup_steps",
      "max_steps",
      "epochs",
      "micro_batch_size",
      "gradient_accumulation_steps",
      "max_seq_len",
      "max_grad_norm",
      "weight_decay",
      "seed",
      "save_steps",
      "eval_steps",
      "optimizer_gpu_budget_bytes",
      "lr_scheduler",
    ]
  ) hp[`hyperparameters.${f}`] = num;
  const lora: Record<string, Mutator> = {
    "lora.r": num,
    "lora.alpha": num,
    "lora.dropout": num,
    "lora.target_modules": strList,
  };
  const requestId: Mutator = pick(["", "id-1", "id-1", "x".repeat(129), "has space", "\u00e9"]);
  return {
    Quantize: {
      base: { model_path: "tiny", output_path: "out/q" },
      fields: {
        model_path: pick(INPUT_PATHS),
        output_path: pick(OUTPUT_PATHS),
        quant_type: num,
        blocksize: num,
        skip_modules: strList,
        overwrite: pick([true, false]),
        request_id: requestId,
      },
    },
    Train: {
      base: {
        base_model_path: "tiny",
        dataset_path: "bad/inf.jsonl",
        output_path: "out/t",
        lora: { r: 2 },
        hyperparameters: { max_steps: 1, max_seq_len: 16 },
      },
      fields: {
        base_model_path: pick(INPUT_PATHS),
        dataset_path: pick(DATASET_PATHS),
        eval_dataset_path: pick(DATASET_PATHS),
        output_path: pick(OUTPUT_PATHS),
        resume_from: pick([...INPUT_PATHS, "out/t"]),
        overwrite: pick([true, false]),
        request_id: requestId,
        ...lora,
        ...hp,
      },
    },
    Evaluate: {
      base: { base_model_path: "tiny", dataset_path: "bad/deep.jsonl", max_seq_len: 16 },
      fields: {
        base_model_path: pick(INPUT_PATHS),
        dataset_path: pick(DATASET_PATHS),
        adapter_path: pick(INPUT_PATHS),
        max_seq_len: num,
        batch_size: num,
        max_new_tokens: num,
        sample_prompts: (rng) =>
          Array.from({ length: [0, 1, 65][rng.int(3)] }, () => sizedString(rng).slice(0, 20_000)),
        request_id: requestId,
      },
    },
    EstimateMemory: {
      base: { model_config_json: tinyConfig },
      fields: {
        model_config_json: (rng) => configJson(rng, tinyConfig),
        base_model_path: pick(INPUT_PATHS),
        quant_type: num,
        blocksize: num,
        double_quant: pick([true, false]),
        ...lora,
        ...hp,
      },
    },
    WatchJob: {
      base: { job_id: "quantize-nope-00000000" },
      fields: { job_id: (rng) => pick([...ESCAPES, "x".repeat(129)])(rng), from_seq: num },
    },
    GetJob: { base: { job_id: "x" }, fields: { job_id: (rng) => sizedString(rng).slice(0, 5000) } },
    CancelJob: { base: { job_id: "x" }, fields: { job_id: pick(ESCAPES) } },
    ListJobs: {
      base: {},
      fields: { kind: num, states: (rng) => [num(rng), "JOB_STATE_RUNNING"], limit: num },
    },
  };
}

function withField(base: Msg, field: string, value: unknown): Msg {
  const out = structuredClone(base);
  const parts = field.split(".");
  let at = out;
  for (const p of parts.slice(0, -1)) at = at[p] ??= {};
  at[parts.at(-1)!] = value;
  return out;
}

const STREAMING = new Set(["Quantize", "Train", "Evaluate", "WatchJob"]);

interface Outcome {
  code: number;
  details: string;
  jobId?: string;
}

function send(client: Msg, method: string, req: Msg): Promise<Outcome> {
  const options = { deadline: Date.now() + CALL_DEADLINE_MS };
  if (STREAMING.has(method)) {
    return collect(client[method](req, new grpc.Metadata(), options)).then((o) => ({
      code: o.code,
      details: o.details,
      jobId: method === "WatchJob" ? undefined : o.events[0]?.job_id,
    }));
  }
  return new Promise((resolve) =>
    client[method](
      req,
      new grpc.Metadata(),
      options,
      (err: grpc.ServiceError | null) =>
        resolve({ code: err?.code ?? S.OK, details: err?.details ?? "" }),
    )
  );
}

// ------------------------------------------------------------------ the fuzz

Deno.test({
  name: "fuzz: bounded adversarial requests get defined statuses; the server survives, bounded",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const outside = await Deno.makeTempDir({ prefix: "qlorad-fuzz-outside-" });
    await Deno.writeTextFile(path.join(outside, "secret.txt"), "s3cr3t\n");
    const quantize = (o: QuantizeOptions): Promise<QuantizeResult> =>
      Promise.resolve({
        parametersQuantized: 1,
        tensorsQuantized: 1,
        tensorsKept: 0,
        bitsPerParameter: 4,
        bytesIn: 1,
        bytesOut: 1,
        meanAbsError: 0,
        maxAbsError: 0,
        outputDir: o.outputDir,
      });
    const t = await startTestServer({
      quantize,
      maxQueuedJobs: 4,
      server: { maxMessageBytes: MAX_REQUEST_BYTES },
    });
    const raw = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const second = connect(t.port, { ownConnection: true });
    try {
      const d = t.dataDir;
      await makeTinyLlama(path.join(d, "tiny"));
      await Deno.mkdir(path.join(d, "bad"));
      for (const [name, text] of Object.entries(DATASETS)) {
        const body = text();
        await Deno.writeFile(
          path.join(d, name),
          typeof body === "string" ? new TextEncoder().encode(body) : body,
        );
      }
      await Deno.symlink(outside, path.join(d, "escape"));
      await Deno.symlink(path.join(outside, "gone"), path.join(d, "dangling"));
      const tinyConfig = await Deno.readTextFile(path.join(d, "tiny/config.json"));
      const hostStrings = [d, await Deno.realPath(d), outside, ROOT, "/proc/self/fd", ".ts:"];

      const rng = new Rng(SEED);
      const fams = families(tinyConfig);
      const methods = [...Object.keys(fams), "NoSuchMethod"];
      const problems: string[] = [];
      const counts = new Map<string, number>();
      const jobIds = new Set<string>();
      const check = (what: string, o: Outcome) => {
        const label = `${what} -> ${S[o.code] ?? o.code} ${
          JSON.stringify(o.details.slice(0, 160))
        }`;
        counts.set(S[o.code] ?? String(o.code), (counts.get(S[o.code] ?? String(o.code)) ?? 0) + 1);
        if (!DEFINED.has(o.code)) problems.push(`undefined status: ${label}`);
        if (/\n\s+at |\bat .*:\d+:\d+/.test(o.details)) problems.push(`stack: ${label}`);
        for (const h of hostStrings) {
          if (o.details.includes(h)) problems.push(`host ${h}: ${label}`);
        }
        if (o.details.includes("s3cr3t") || o.details.includes("root:x")) {
          problems.push(`file content: ${label}`);
        }
        if (o.jobId) jobIds.add(o.jobId);
      };

      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      const rssBefore = Deno.memoryUsage().rss;
      let rssPeak = rssBefore;
      const tasks: (() => Promise<void>)[] = [];
      for (let i = 0; i < REQUESTS; i++) {
        const method = methods[rng.int(methods.length)];
        const client = rng.int(2) ? t.qlorad : second.qlorad;
        if (method === "NoSuchMethod") {
          tasks.push(async () => {
            const o = await new Promise<Outcome>((resolve) =>
              raw.makeUnaryRequest(
                "/qlorad.v1.QLoRA/NoSuchMethod",
                (b: Buffer) => b,
                (b: Buffer) => b,
                Buffer.alloc(0),
                (err) => resolve({ code: err?.code ?? S.OK, details: err?.details ?? "" }),
              )
            );
            check("NoSuchMethod", o);
          });
          continue;
        }
        const fam = fams[method];
        const names = Object.keys(fam.fields);
        let req = fam.base;
        const changed: string[] = [];
        for (let k = 0; k <= rng.int(4); k++) {
          const field = names[rng.int(names.length)];
          const value = fam.fields[field](rng);
          req = withField(req, field, value);
          const shown = typeof value === "string"
            ? JSON.stringify(value.slice(0, 24)) + (value.length > 24 ? `…(${value.length})` : "")
            : JSON.stringify(value)?.slice(0, 40);
          changed.push(`${field}=${shown}`);
        }
        const what = `${method}(${changed.join(", ")})`;
        const cancelAfter = method !== "WatchJob" && STREAMING.has(method) && rng.int(5) === 0;
        tasks.push(async () => {
          const o = await send(client, method, req);
          check(what, o);
          if (cancelAfter && o.jobId) {
            check(`CancelJob after ${what}`, await send(client, "CancelJob", { job_id: o.jobId }));
          }
          rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);
        });
      }
      for (let i = 0; i < tasks.length; i += CONCURRENCY) {
        await Promise.all(tasks.slice(i, i + CONCURRENCY).map((task) => task()));
      }
      assert.deepEqual(problems.slice(0, 25), [], `${problems.length} problems`);

      // Every job the fuzz created has ended, with a defined error when it failed.
      for (const id of jobIds) {
        const events = await collect(t.qlorad.WatchJob({ job_id: id }));
        const job = await call(t.qlorad, "GetJob", { job_id: id });
        assert.match(job.state, /SUCCEEDED|FAILED|CANCELLED/, `${id}: ${job.state}`);
        assert.equal(events.events.at(-1)?.state, job.state);
        if (job.error) {
          assert.ok(DEFINED_JOB_ERRORS.has(job.error.code), `${id}: ${JSON.stringify(job.error)}`);
        }
        assert.ok(
          !events.events.some((e) => e.payload === "train_metrics"),
          `${id}: a training step ran`,
        );
      }
      // Still well: healthy, answering, and memory within bounds (a generous one: the fuzz holds
      // a few MiB-sized requests at a time; without the line limit a single record took GiBs).
      gc?.();
      const grown = Deno.memoryUsage().rss - rssBefore;
      assert.ok(
        grown < 768 << 20 && rssPeak - rssBefore < 1536 << 20,
        `RSS grew ${grown >> 20} MiB (peak +${(rssPeak - rssBefore) >> 20} MiB)`,
      );
      assert.equal(await healthStatus(t), "SERVING");
      assert.equal(await healthStatus(t, "qlorad.v1.QLoRA"), "SERVING");
      const est = await call(t.qlorad, "EstimateMemory", { model_config_json: tinyConfig });
      assert.ok(est.total_bytes > 0);
      assert.ok((counts.get("INVALID_ARGUMENT") ?? 0) > REQUESTS / 4, JSON.stringify([...counts]));
      assert.ok(jobIds.size > 0, "some requests made jobs");
      assert.equal(await Deno.readTextFile(path.join(outside, "secret.txt")), "s3cr3t\n");
      assert.deepEqual(
        (await Array.fromAsync(Deno.readDir(outside))).map((e) => e.name),
        ["secret.txt"],
      );
    } finally {
      raw.close();
      second.close();
      await t.close();
      await Deno.remove(outside, { recursive: true });
    }
  },
});
