/**
 * Hundreds of malformed and random requests to every RPC of a real server: typed requests that
 * are valid but for one to three bad fields (each must be refused with the status its field
 * calls for, before any job exists), random typed requests, random protobuf wire data and random
 * bytes sent through a generic client, and a request over the size limit. No answer may carry a
 * stack trace or a host path, no job may start, nothing may be written outside `.qlorad/`, and
 * afterwards the server is SERVING and a valid Quantize of the tiny fixture succeeds.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { startServer } from "../../src/service/server.ts";
import { silentLogger } from "../../src/service/status.ts";
import { Rng } from "../../src/util/random.ts";
import { call, collect, connect, healthStatus, type Msg } from "./grpc_client.ts";

const S = grpc.status;
const ROOT = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
/** Small, so that "over the limit" is cheap to send. */
const MAX_REQUEST_BYTES = 1 << 20;
const DEADLINE_MS = 30_000;
const CONCURRENCY = 16;

// deno-lint-ignore no-explicit-any
type AnyClient = any;

/** What an RPC answered: its status, and how many messages (job events) came before it. */
interface Outcome {
  code: grpc.status;
  details: string;
  messages: number;
}

const STREAMING = new Set(["Quantize", "Train", "Evaluate", "WatchJob"]);
const METHODS = [
  "Quantize",
  "Train",
  "Evaluate",
  "WatchJob",
  "GetJob",
  "ListJobs",
  "CancelJob",
  "EstimateMemory",
];

function typedCall(client: AnyClient, method: string, req: Msg): Promise<Outcome> {
  const deadline = new Date(Date.now() + DEADLINE_MS);
  if (STREAMING.has(method)) {
    return collect(client[method](req, new grpc.Metadata(), { deadline })).then((o) => ({
      code: o.code,
      details: o.details,
      messages: o.events.length,
    }));
  }
  return new Promise((resolve) =>
    client[method](
      req,
      new grpc.Metadata(),
      { deadline },
      (err: grpc.ServiceError | null) =>
        resolve({ code: err?.code ?? S.OK, details: err?.details ?? "", messages: err ? 0 : 1 }),
    )
  );
}

/** Sends `bytes` as the request of `method`, whatever they are. */
function rawCall(client: grpc.Client, method: string, bytes: Uint8Array): Promise<Outcome> {
  const route = `/qlorad.v1.QLoRA/${method}`;
  const same = (b: Buffer) => b;
  const deadline = new Date(Date.now() + DEADLINE_MS);
  const arg = Buffer.from(bytes);
  if (STREAMING.has(method)) {
    const stream = client.makeServerStreamRequest(
      route,
      same,
      same,
      arg,
      new grpc.Metadata(),
      { deadline },
    );
    // deno-lint-ignore no-explicit-any
    return collect(stream as any).then((o) => ({
      code: o.code,
      details: o.details,
      messages: o.events.length,
    }));
  }
  return new Promise((resolve) =>
    client.makeUnaryRequest(
      route,
      same,
      same,
      arg,
      new grpc.Metadata(),
      { deadline },
      (err) =>
        resolve({ code: err?.code ?? S.OK, details: err?.details ?? "", messages: err ? 0 : 1 }),
    )
  );
}

/** Runs `tasks` CONCURRENCY at a time. */
async function inBatches<T>(tasks: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < tasks.length; i += CONCURRENCY) {
    out.push(...await Promise.all(tasks.slice(i, i + CONCURRENCY).map((t) => t())));
  }
  return out;
}

// ------------------------------------------------------------------ bad values by field

const INV = [S.INVALID_ARGUMENT];
/** Refusals a bad path may get, depending on what it hits first. */
const PATHY = [S.INVALID_ARGUMENT, S.NOT_FOUND, S.PERMISSION_DENIED];

const HUGE = "x".repeat(300_000);

/** Paths that must never resolve to anything usable. */
const ESCAPES = [
  "",
  "..",
  "../outside",
  "a/../../outside",
  "/etc/passwd",
  "\\\\server\\share",
  "C:\\Windows",
  "x\0y",
  ".qlorad/jobs",
  "./.qlorad",
  "escape/secret.txt",
  "escape",
  "dangling/x",
  HUGE,
  "a/".repeat(5000) + "b",
  `${"n".repeat(300)}/x`,
  "\u{1F600}/\u0000/..",
];

type Mutation = [field: string, value: unknown, codes: grpc.status[]];

/** A path that is merely missing: refused for inputs, fine for outputs. */
const MISSING = "nowhere/at/all";

function paths(field: string, output = false): Mutation[] {
  return [...ESCAPES, ...(output ? [] : [MISSING])].map((p) => [field, p, PATHY]);
}

/** Each mutation alone makes the base request invalid, with one of the given codes. */
const NUMBERS_INVALID: Record<string, unknown[]> = {
  "lora.r": [1025, 4294967295],
  "lora.alpha": [0, -1, NaN, Infinity, 1e7],
  "lora.dropout": [-0.1, 1, NaN, Infinity],
  "lora.target_modules": [["nope"], [""], [HUGE], Array(200).fill("q_proj")],
  "hyperparameters.learning_rate": [0, -1e-4, NaN, Infinity, -Infinity, 2],
  "hyperparameters.lr_scheduler": [99, 4],
  "hyperparameters.warmup_steps": [1e8, 5],
  "hyperparameters.max_steps": [1e8, 4294967295],
  "hyperparameters.epochs": [0, -1, NaN, Infinity, 1e4],
  "hyperparameters.micro_batch_size": [1025, 4294967295],
  "hyperparameters.gradient_accumulation_steps": [4097, 4294967295],
  "hyperparameters.max_seq_len": [1, 131073, 4294967295],
  "hyperparameters.max_grad_norm": [-1, NaN, Infinity, 1e7],
  "hyperparameters.weight_decay": [-0.5, 2, NaN, -Infinity],
  "hyperparameters.save_steps": [1e8],
  "hyperparameters.eval_steps": [1e8],
  "hyperparameters.optimizer_gpu_budget_bytes": [2 ** 60],
};

function numbers(): Mutation[] {
  return Object.entries(NUMBERS_INVALID).flatMap(([f, vs]) => vs.map((v): Mutation => [f, v, INV]));
}

interface Family {
  base: Msg;
  mutations: Mutation[];
}

function families(tinyConfig: string): Record<string, Family> {
  const train: Family = {
    base: {
      base_model_path: "models/tiny",
      dataset_path: "models/tiny/train.jsonl",
      output_path: "runs/t",
      lora: { r: 4 },
      hyperparameters: { max_steps: 2, micro_batch_size: 2, max_seq_len: 32 },
    },
    mutations: [
      ...paths("base_model_path"),
      ["base_model_path", "models/tiny/config.json", INV],
      ["base_model_path", "models", [S.NOT_FOUND]],
      ...paths("dataset_path"),
      ["dataset_path", "models/tiny", INV],
      ...paths("eval_dataset_path").filter(([, p]) => p !== ""),
      ...paths("output_path", true),
      ["output_path", "models/tiny", INV],
      ["output_path", "models", INV],
      ["output_path", "models/tiny/sub", INV],
      ["output_path", "existing", [S.FAILED_PRECONDITION]],
      ...paths("resume_from").filter(([, p]) => p !== ""),
      ["resume_from", "runs/t", [S.NOT_FOUND]],
      ["resume_from", "models/tiny", INV],
      ...numbers(),
    ],
  };
  return {
    Quantize: {
      base: { model_path: "models/tiny", output_path: "out/q" },
      mutations: [
        ...paths("model_path"),
        ["model_path", "models/tiny/config.json", INV],
        ["model_path", "existing", [S.NOT_FOUND, S.INVALID_ARGUMENT]],
        ...paths("output_path", true),
        ["output_path", "models/tiny", INV],
        ["output_path", "models", INV],
        ["output_path", "existing", [S.FAILED_PRECONDITION]],
        ["quant_type", 99, INV],
        ["quant_type", 3, INV],
        ["blocksize", 1, INV],
        ["blocksize", 63, INV],
        ["blocksize", 100, INV],
        ["blocksize", 4294967295, INV],
        ["skip_modules", [""], INV],
        ["skip_modules", ["   "], INV],
        ["skip_modules", Array(5000).fill("lm_head"), INV],
        ["skip_modules", [HUGE], INV],
      ],
    },
    Train: train,
    Evaluate: {
      base: { base_model_path: "models/tiny", dataset_path: "models/tiny/eval.jsonl" },
      mutations: [
        ...paths("base_model_path"),
        ["base_model_path", "models", [S.NOT_FOUND]],
        ...paths("dataset_path"),
        ["dataset_path", "models/tiny", INV],
        ...paths("adapter_path").filter(([, p]) => p !== ""),
        ["adapter_path", "models/tiny", [S.NOT_FOUND]],
        ["max_seq_len", 1, INV],
        ["max_seq_len", 200_000, INV],
        ["batch_size", 1025, INV],
        ["batch_size", 4294967295, INV],
        ["max_new_tokens", 4097, INV],
        ["sample_prompts", Array(65).fill("hi"), INV],
        ["sample_prompts", [""], INV],
        ["sample_prompts", ["x".repeat(16385)], INV],
      ],
    },
    EstimateMemory: {
      base: { model_config_json: tinyConfig, lora: { r: 4 } },
      mutations: [
        ["base_model_path", "models/tiny", INV], // both sources at once
        ["model_config_json", "{", INV],
        ["model_config_json", "[]", INV],
        ["model_config_json", '{"hidden_size": -1}', INV],
        ["model_config_json", HUGE, INV],
        ["quant_type", 99, INV],
        ["blocksize", 7, INV],
        ["blocksize", 4294967295, INV],
        ...numbers().filter(([f]) => !/warmup|max_steps|epochs|save|eval_steps|lr_sched/.test(f)),
      ],
    },
    WatchJob: {
      base: { job_id: "quantize-nope-00000000" },
      mutations: [
        ["job_id", "", INV],
        ["job_id", HUGE, [S.INVALID_ARGUMENT, S.NOT_FOUND]],
        ["job_id", "../../.qlorad/jobs/x", [S.INVALID_ARGUMENT, S.NOT_FOUND]],
        ["job_id", "\0", [S.INVALID_ARGUMENT, S.NOT_FOUND]],
        ["from_seq", 2 ** 60, [S.INVALID_ARGUMENT, S.NOT_FOUND]],
        ["from_seq", 7, [S.NOT_FOUND]],
      ],
    },
    GetJob: {
      base: { job_id: "train-nope-00000000" },
      mutations: [
        ["job_id", "", INV],
        ["job_id", HUGE, [S.INVALID_ARGUMENT, S.NOT_FOUND]],
        ["job_id", "../x", [S.INVALID_ARGUMENT, S.NOT_FOUND]],
      ],
    },
    CancelJob: {
      base: { job_id: "evaluate-nope-00000000" },
      mutations: [
        ["job_id", "", INV],
        ["job_id", HUGE, [S.INVALID_ARGUMENT, S.NOT_FOUND]],
        ["job_id", "\u{1F600}", [S.INVALID_ARGUMENT, S.NOT_FOUND]],
      ],
    },
    ListJobs: {
      base: {},
      mutations: [
        ["kind", 99, INV],
        ["kind", 6, INV], // the first JobKind value past EXPORT (5)
        ["states", [99], INV],
        ["states", ["JOB_STATE_RUNNING", 6], INV],
      ],
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

// ------------------------------------------------------------------ random data

const ALPHABET = ["a", "Z", "0", "/", ".", "..", "\\", "\0", " ", "\n", "é", "\u{1F600}", "%2e"];

function randomString(rng: Rng): string {
  const kind = rng.int(10);
  if (kind === 0) return "";
  if (kind === 1) return "q".repeat(1 + rng.int(200_000));
  let s = "";
  const n = 1 + rng.int(40);
  for (let i = 0; i < n; i++) s += ALPHABET[rng.int(ALPHABET.length)];
  return "z" + s; // never a path the fixture has
}

const ODD_NUMBERS = [0, 1, -1, 2, 7, 64, 1e-9, 0.5, -0.5, 1e6, 1e300, -1e300, 2 ** 31, 2 ** 32 - 1];

function randomNumber(rng: Rng): number {
  const kind = rng.int(4);
  if (kind === 0) return [NaN, Infinity, -Infinity][rng.int(3)];
  if (kind === 1) return rng.uniform(-1e6, 1e6);
  return ODD_NUMBERS[rng.int(ODD_NUMBERS.length)];
}

/** A message of `type` with every field filled at random (nested messages too, two deep). */
function randomMessage(type: protobuf.Type, rng: Rng, depth = 0): Msg {
  const out: Msg = {};
  for (const f of type.fieldsArray) {
    if (rng.int(4) === 0) continue;
    f.resolve();
    const one = (): unknown => {
      if (f.resolvedType instanceof protobuf.Type) {
        return depth < 2 ? randomMessage(f.resolvedType, rng, depth + 1) : {};
      }
      if (f.resolvedType instanceof protobuf.Enum) {
        const names = Object.keys(f.resolvedType.values);
        return rng.int(3) === 0 ? rng.int(50) : names[rng.int(names.length)];
      }
      if (f.type === "string") return randomString(rng);
      if (f.type === "bool") return rng.int(2) === 1;
      if (f.type === "bytes") return crypto.getRandomValues(new Uint8Array(rng.int(64)));
      if (/int|fixed/.test(f.type)) return Math.abs(Math.trunc(randomNumber(rng))) || rng.int(9);
      return randomNumber(rng);
    };
    if (f.map) out[f.name] = { [randomString(rng)]: one() };
    else if (f.repeated) out[f.name] = Array.from({ length: rng.int(5) }, one);
    else out[f.name] = one();
  }
  return out;
}

/** Protobuf wire data with random field numbers and wire types. */
function randomWire(rng: Rng): Uint8Array {
  const w = protobuf.Writer.create();
  const n = rng.int(12);
  for (let i = 0; i < n; i++) {
    const field = 1 + rng.int(30);
    const wireType = [0, 1, 2, 5][rng.int(4)];
    w.uint32((field << 3) | wireType);
    if (wireType === 0) w.uint64(rng.int(2 ** 31) * (rng.int(2) ? 4096 : 1));
    else if (wireType === 1) w.double(randomNumber(rng));
    else if (wireType === 5) w.float(randomNumber(rng));
    else w.bytes(crypto.getRandomValues(new Uint8Array(rng.int(48))));
  }
  const bytes = w.finish();
  // Sometimes cut short in the middle of a field.
  return rng.int(3) === 0 && bytes.length > 1 ? bytes.slice(0, rng.int(bytes.length)) : bytes;
}

function randomBytes(rng: Rng): Uint8Array {
  const out = new Uint8Array(rng.int(300));
  for (let i = 0; i < out.length; i++) out[i] = rng.int(256);
  return out;
}

// ------------------------------------------------------------------ checks

async function listFiles(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(path.join(dir, rel))) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory) out.push(...await listFiles(dir, p));
  }
  return out.sort();
}

Deno.test({
  name: "a barrage of malformed and random requests: each refused cleanly; the server stays well",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const base = await Deno.makeTempDir({ prefix: "qlorad-barrage-" });
    const dataDir = path.join(base, "data");
    const outside = path.join(base, "outside");
    await Deno.mkdir(outside);
    await Deno.writeTextFile(path.join(outside, "secret.txt"), "secret\n");
    const server = await startServer({
      dataDir,
      port: 0,
      logger: silentLogger,
      maxMessageBytes: MAX_REQUEST_BYTES,
    });
    const clients = connect(server.port);
    const raw = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      await Deno.mkdir(path.join(dataDir, "existing"));
      await Deno.symlink(outside, path.join(dataDir, "escape"));
      await Deno.symlink(path.join(base, "gone"), path.join(dataDir, "dangling"));
      const before = await listFiles(dataDir);
      const realDataDir = await Deno.realPath(dataDir);
      const hostStrings = [...new Set([dataDir, realDataDir, base, ROOT, "file://", ".ts:"])];
      const tinyConfig = await Deno.readTextFile(path.join(dataDir, "models/tiny/config.json"));

      // Every problem is collected, so that one run shows them all.
      const problems: string[] = [];
      const seen = new Map<string, number>();
      const check = (what: string, o: Outcome, allowed: grpc.status[], events = true) => {
        const label = `${what} -> ${S[o.code]} ${JSON.stringify(o.details.slice(0, 200))}`;
        seen.set(S[o.code], (seen.get(S[o.code]) ?? 0) + 1);
        if (!allowed.includes(o.code)) problems.push(`unexpected status: ${label}`);
        if (/\n\s+at |\bat .*:\d+:\d+/.test(o.details)) problems.push(`stack trace: ${label}`);
        for (const h of hostStrings) {
          if (o.details.includes(h)) problems.push(`host path ${h}: ${label}`);
        }
        if (o.details.length > 2048) problems.push(`${o.details.length}-char message: ${what}`);
        if (!events && o.messages > 0) problems.push(`${o.messages} events: ${label}`);
      };

      const rng = new Rng(0x5eed_ba55);
      const fams = families(tinyConfig);
      const root = protobuf.loadSync(
        fileURLToPath(new URL("../../proto/qlorad/v1/qlorad.proto", import.meta.url)),
      );
      const tasks: (() => Promise<void>)[] = [];

      // 1. Valid but for one to three bad fields: refused with a code that one of them calls for.
      for (const [method, fam] of Object.entries(fams)) {
        for (let i = 0; i < 40; i++) {
          let req = fam.base;
          const codes = new Set<grpc.status>();
          const names: string[] = [];
          for (let k = 0; k <= rng.int(3) && k < 3; k++) {
            const [field, value, c] = fam.mutations[rng.int(fam.mutations.length)];
            req = withField(req, field, value);
            c.forEach((x) => codes.add(x));
            names.push(
              `${field}=${typeof value === "number" ? value : JSON.stringify(value)?.slice(0, 40)}`,
            );
          }
          tasks.push(async () => {
            const o = await typedCall(clients.qlorad, method, req);
            check(`${method}(${names.join(", ")})`, o, [...codes], false);
          });
        }
      }
      // 2. Random typed requests: never a job, never an internal error.
      for (const method of METHODS) {
        const type = root.lookupService("qlorad.v1.QLoRA").methods[method];
        type.resolve();
        for (let i = 0; i < 20; i++) {
          const req = randomMessage(type.resolvedRequestType!, rng);
          tasks.push(async () => {
            const o = await typedCall(clients.qlorad, method, req);
            const okAllowed = method === "ListJobs" ? [S.OK] : [];
            check(`random ${method}`, o, [
              ...okAllowed,
              S.INVALID_ARGUMENT,
              S.NOT_FOUND,
              S.PERMISSION_DENIED,
              S.FAILED_PRECONDITION,
              S.RESOURCE_EXHAUSTED, // several huge strings may pass the size limit
            ], method === "ListJobs");
          });
        }
      }
      // 3. Random wire data and random bytes through a generic client: refused, or (when the
      //    bytes happen to decode) answered like any request; INTERNAL only for undecodable ones.
      for (const method of METHODS) {
        for (let i = 0; i < 20; i++) {
          const bytes = i % 2 ? randomWire(rng) : randomBytes(rng);
          tasks.push(async () => {
            const o = await rawCall(raw, method, bytes);
            check(`raw ${method} (${bytes.length} bytes)`, o, [
              S.OK,
              S.INVALID_ARGUMENT,
              S.NOT_FOUND,
              S.PERMISSION_DENIED,
              S.FAILED_PRECONDITION,
              S.INTERNAL,
            ]);
            if (o.code === S.INTERNAL && !/deserializ/i.test(o.details)) {
              problems.push(`raw ${method}: INTERNAL ${o.details}`);
            }
            if (o.code === S.OK && method !== "ListJobs") problems.push(`raw ${method}: OK`);
          });
        }
      }
      // 4. Over the size limit.
      for (const method of ["Quantize", "GetJob"]) {
        tasks.push(async () => {
          const o = await typedCall(clients.qlorad, method, {
            model_path: "m".repeat(MAX_REQUEST_BYTES + 10),
            job_id: "j".repeat(MAX_REQUEST_BYTES + 10),
          });
          check(`oversized ${method}`, o, [S.RESOURCE_EXHAUSTED]);
        });
      }
      // Shuffled, so that kinds of requests interleave on the connection.
      for (let i = tasks.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [tasks[i], tasks[j]] = [tasks[j], tasks[i]];
      }
      assert.ok(tasks.length >= 500, `${tasks.length} requests`);
      await inBatches(tasks);
      const shown = problems.filter((p) => !p.includes("Call cancelled"));
      assert.deepEqual(shown.slice(0, 30), [], `${problems.length} problems`);

      // Afterwards: healthy, no job was ever created, nothing written, and real work succeeds.
      assert.equal(await healthStatus(clients), "SERVING");
      assert.equal(await healthStatus(clients, "qlorad.v1.QLoRA"), "SERVING");
      assert.deepEqual((await call(clients.qlorad, "ListJobs", {})).jobs, []);
      const after = (await listFiles(dataDir)).filter((f) => !f.startsWith(".qlorad"));
      assert.deepEqual(after, before.filter((f) => !f.startsWith(".qlorad")));
      assert.equal(await Deno.readTextFile(path.join(outside, "secret.txt")), "secret\n");
      assert.deepEqual(await listFiles(outside), ["secret.txt"]);

      const q = await collect(
        clients.qlorad.Quantize({ model_path: "models/tiny", output_path: "out/tiny-nf4" }),
      );
      assert.equal(q.code, S.OK, q.details);
      assert.equal(q.events.at(-1)!.state, "JOB_STATE_SUCCEEDED");
      assert.equal(q.events.at(-1)!.quantize_result.output_path, "out/tiny-nf4");
      await Deno.stat(path.join(dataDir, "out/tiny-nf4/model.safetensors"));
      assert.ok((seen.get("INVALID_ARGUMENT") ?? 0) > 100, JSON.stringify([...seen]));
    } finally {
      raw.close();
      clients.close();
      await server.close();
      await Deno.remove(base, { recursive: true });
    }
  },
});
