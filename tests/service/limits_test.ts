/**
 * Limits through a real server (issue 14, items 1, 2, 7 and 11): a model config with absurd
 * dimensions, one whose byte counts would overflow, and one that contradicts its tensors are
 * refused at once; a dataset line or record past its limit, a deeply nested line and a number
 * beyond a double fail their job with INVALID_ARGUMENT naming the line, before any step;
 * max_seq_len beyond the model's positions creates no job; an unknown method is authenticated
 * before it is called unknown. The server stays SERVING throughout.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { MAX_LINE_BYTES } from "../../src/data/dataset.ts";
import { RECORD_LIMITS } from "../../src/data/records.ts";
import { MAX_CONFIG_BYTES } from "../../src/service/handlers/model_config.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import {
  call,
  healthStatus,
  type Msg,
  startTestServer,
  streamCall,
  type TestServer,
} from "./grpc_client.ts";

/** The status of a unary call (0 when OK) and its details. */
async function unaryStatus(t: TestServer, method: string, req: Msg) {
  try {
    const res = await call(t.qlorad, method, req);
    return { code: status.OK as number, details: "", res };
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code as number, details: e.details, res: undefined };
  }
}

const TINY_CONFIG = {
  hidden_size: 64,
  intermediate_size: 128,
  num_attention_heads: 4,
  num_hidden_layers: 2,
  vocab_size: 100,
};

Deno.test({
  name: "EstimateMemory: absurd dimensions and overflowing byte counts are refused at once",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      const estimate = (config: string | Msg, extra: Msg = {}) =>
        unaryStatus(t, "EstimateMemory", {
          model_config_json: typeof config === "string" ? config : JSON.stringify(config),
          lora: { r: 8 },
          ...extra,
        });
      const refused = async (what: string, config: string | Msg, pattern: RegExp, extra = {}) => {
        const o = await estimate(config, extra);
        assert.equal(o.code, status.INVALID_ARGUMENT, `${what}: ${status[o.code]} ${o.details}`);
        assert.match(o.details, pattern, what);
        assert.equal(await healthStatus(t), "SERVING", `after ${what}`);
      };
      // A sane config is answered, with exact integers.
      const ok = await estimate(TINY_CONFIG);
      assert.equal(ok.code, status.OK, ok.details);
      assert.ok(Number.isSafeInteger(ok.res!.total_bytes) && ok.res!.total_bytes > 0);

      // 1e308 used to come back as total_bytes = 2^64 - 1.
      await refused(
        "hidden_size 1e308",
        { ...TINY_CONFIG, hidden_size: 1e308 },
        /model_config_json: "hidden_size" must be an integer in 1\.\.65536, got 1e\+308/,
      );
      // 1e400 is Infinity once parsed: said so, not "null".
      await refused(
        "hidden_size 1e400",
        JSON.stringify(TINY_CONFIG).replace('"hidden_size":64', '"hidden_size":1e400'),
        /"hidden_size" must be an integer in 1\.\.65536, got Infinity \(beyond the range/,
      );
      // The issue's request: a billion layers blocked the event loop, then ran out of memory.
      await refused(
        "num_hidden_layers 1e9",
        { ...TINY_CONFIG, num_hidden_layers: 1_000_000_000 },
        /"num_hidden_layers" must be an integer in 1\.\.1024, got 1000000000/,
      );
      await refused("a missing dimension", { hidden_size: 64 }, /"intermediate_size" is missing/);
      await refused(
        "more kv heads than heads",
        { ...TINY_CONFIG, num_key_value_heads: 8 },
        /"num_key_value_heads" 8 exceeds "num_attention_heads" 4/,
      );
      // Every dimension at its bound and the largest settings: the bytes pass 2^53.
      await refused(
        "byte counts beyond 2^53",
        {
          hidden_size: 65536,
          intermediate_size: 262144,
          num_attention_heads: 1024,
          num_hidden_layers: 1024,
          vocab_size: 4_194_304,
          max_position_embeddings: 16_777_216,
        },
        /memory estimate: \w+ does not fit in 2\^53 bytes/,
        { hyperparameters: { micro_batch_size: 1024, max_seq_len: 131072 } },
      );
      // Nesting (item 7): invalid and valid, refused before parsing, naming line and column.
      await refused(
        "5000 unclosed brackets",
        `{"a":${"[".repeat(5000)}`,
        /model_config_json: JSON nested deeper than 64 levels at line 1 column 69/,
      );
      await refused(
        "valid but deep",
        `{"a":\n${"[".repeat(100)}${"]".repeat(100)}}`,
        /JSON nested deeper than 64 levels at line 2 column 64/,
      );
      await refused(
        "a config text over the size limit",
        " ".repeat(MAX_CONFIG_BYTES + 1),
        /model_config_json: longer than 1048576 characters/,
      );

      // The same checks on a model folder's config.json.
      await Deno.mkdir(join(t.dataDir, "models/huge"), { recursive: true });
      await Deno.writeTextFile(
        join(t.dataDir, "models/huge/config.json"),
        JSON.stringify({ ...TINY_CONFIG, num_hidden_layers: 1_000_000_000 }),
      );
      const fromFile = await unaryStatus(t, "EstimateMemory", { base_model_path: "models/huge" });
      assert.equal(fromFile.code, status.INVALID_ARGUMENT, fromFile.details);
      assert.match(
        fromFile.details,
        /^base_model_path "models\/huge": config\.json: "num_hidden_layers" must be/,
      );
      await Deno.writeTextFile(
        join(t.dataDir, "models/huge/config.json"),
        JSON.stringify({ ...TINY_CONFIG, pad: " ".repeat(MAX_CONFIG_BYTES) }),
      );
      const bigFile = await unaryStatus(t, "EstimateMemory", { base_model_path: "models/huge" });
      assert.equal(bigFile.code, status.INVALID_ARGUMENT, bigFile.details);
      assert.match(bigFile.details, /config\.json: \d+ bytes, more than the 1048576 accepted/);
      assert.equal(await healthStatus(t, "qlorad.v1.QLoRA"), "SERVING");
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "Quantize: a config.json that is absurd, incomplete or contradicts its tensors: no job",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const calls: QuantizeOptions[] = [];
    const t = await startTestServer({
      quantize: (o: QuantizeOptions): Promise<QuantizeResult> => {
        calls.push(o);
        return Promise.reject(new Error("must not be called"));
      },
    });
    try {
      const tiny = join(t.dataDir, "models/tiny");
      await makeTinyLlama(tiny);
      const config = JSON.parse(await Deno.readTextFile(join(tiny, "config.json")));
      const cases: [string, Record<string, unknown>, RegExp][] = [
        ["absurd", { num_hidden_layers: 1_000_000_000 }, /"num_hidden_layers" must be an integer/],
        ["missing", { hidden_size: undefined }, /"hidden_size" is missing/],
        [
          "fewer layers than the weights",
          { num_hidden_layers: 1 },
          /model\.layers\.1\.\S+ belongs to layer 1, but config\.json says num_hidden_layers 1/,
        ],
        [
          "other shapes than the weights",
          { intermediate_size: 200 },
          /model\.layers\.0\.mlp\.gate_proj\.weight has shape \[216, 80\], config\.json implies \[200, 80\]/,
        ],
        [
          "more layers than the weights",
          { num_hidden_layers: 3 },
          /missing tensor model\.layers\.2\.self_attn\.q_proj\.weight/,
        ],
      ];
      for (const [name, change, pattern] of cases) {
        const dir = join(t.dataDir, "models", name.replaceAll(" ", "-"));
        await Deno.mkdir(dir);
        for await (const e of Deno.readDir(tiny)) {
          if (e.isFile) await Deno.copyFile(join(tiny, e.name), join(dir, e.name));
        }
        await Deno.writeTextFile(
          join(dir, "config.json"),
          JSON.stringify({ ...config, ...change }),
        );
        const out = await streamCall(t.qlorad, "Quantize", {
          model_path: `models/${name.replaceAll(" ", "-")}`,
          output_path: `out/${name.replaceAll(" ", "-")}`,
        });
        assert.equal(
          out.code,
          status.INVALID_ARGUMENT,
          `${name}: ${status[out.code]} ${out.details}`,
        );
        assert.match(out.details, pattern, name);
        assert.equal(out.events.length, 0, `${name}: no job`);
      }
      assert.equal(calls.length, 0);
      assert.deepEqual((await call(t.qlorad, "ListJobs", {})).jobs, []);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "Train: an oversized, deeply nested or out-of-range dataset line fails its job, naming it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const good = '{"text": "the cat sat on the mat"}';
      const datasets: [string, string, RegExp][] = [
        // Item 2: a single 4 MiB+ token used to be tokenized for minutes, then ran out of memory.
        [
          "long-line.jsonl",
          `${good}\n{"text": "${"x".repeat(MAX_LINE_BYTES)}"}\n${good}\n`,
          /^long-line\.jsonl:2: line longer than 4194304 bytes/,
        ],
        [
          "long-record.jsonl",
          `${good}\n${good}\n{"prompt": "${
            "y".repeat(RECORD_LIMITS.maxChars)
          }", "completion": "z"}\n`,
          /^long-record\.jsonl:3: the record's text is 1048577 characters, more than 1048576/,
        ],
        // Item 7: this overflowed the stack in the JSON fault finder (INTERNAL).
        [
          "deep.jsonl",
          `{"text":${"[".repeat(5000)}\n`,
          /^deep\.jsonl:1: JSON nested deeper than 64 levels at column 72/,
        ],
        // Item 11: 1e400 was "got number null".
        [
          "inf.jsonl",
          `${good}\n{"input_ids": [1, 1e400]}\n`,
          /^inf\.jsonl:2: "input_ids"\[1\] must be an integer, got number Infinity/,
        ],
      ];
      for (const [name, text, pattern] of datasets) {
        await Deno.writeTextFile(join(t.dataDir, name), text);
        const out = await streamCall(t.qlorad, "Train", {
          base_model_path: "tiny",
          dataset_path: name,
          output_path: `runs/${name}`,
          lora: { r: 2 },
          hyperparameters: { max_steps: 2, max_seq_len: 32 },
        });
        assert.equal(
          out.code,
          status.INVALID_ARGUMENT,
          `${name}: ${status[out.code]} ${out.details}`,
        );
        assert.match(out.details, pattern, name);
        assert.ok(!out.events.some((e) => e.payload === "train_metrics"), `${name}: no step ran`);
        assert.ok(out.details.length < 400, `${name}: the line is not echoed`);
        assert.equal(await healthStatus(t), "SERVING", `after ${name}`);
      }
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "Train and Evaluate: max_seq_len beyond max_position_embeddings creates no job",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny")); // max_position_embeddings 256
      const train = await streamCall(t.qlorad, "Train", {
        base_model_path: "tiny",
        dataset_path: "tiny/train.jsonl",
        output_path: "runs/a",
        hyperparameters: { max_seq_len: 257 },
      });
      assert.equal(train.code, status.INVALID_ARGUMENT, train.details);
      assert.match(
        train.details,
        /hyperparameters\.max_seq_len 257 exceeds the model's max_position_embeddings 256/,
      );
      assert.equal(train.events.length, 0);
      const evaluate = await streamCall(t.qlorad, "Evaluate", {
        base_model_path: "tiny",
        dataset_path: "tiny/eval.jsonl",
        max_seq_len: 300,
      });
      assert.equal(evaluate.code, status.INVALID_ARGUMENT, evaluate.details);
      assert.match(evaluate.details, /max_seq_len 300 exceeds the model's max_position_embeddings/);
      assert.equal(evaluate.events.length, 0);
      assert.deepEqual((await call(t.qlorad, "ListJobs", {})).jobs, []);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "auth: an unknown method is UNAUTHENTICATED without the token, UNIMPLEMENTED with it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const token = "s3cret-token";
    const t = await startTestServer({ server: { authToken: token } });
    const raw = new grpc.Client(`127.0.0.1:${t.port}`, grpc.credentials.createInsecure());
    const rawCall = (method: string, md: grpc.Metadata) =>
      new Promise<grpc.ServiceError | null>((resolve) =>
        raw.makeUnaryRequest(
          method,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from([]),
          md,
          (err) => resolve(err),
        )
      );
    try {
      const withToken = new grpc.Metadata();
      withToken.set("authorization", `Bearer ${token}`);
      for (const method of ["/qlorad.v1.QLoRA/NoSuchMethod", "/no.such.Service/Call"]) {
        const anonymous = await rawCall(method, new grpc.Metadata());
        assert.equal(anonymous?.code, status.UNAUTHENTICATED, `${method}: ${anonymous?.details}`);
        const known = await rawCall(method, withToken);
        assert.equal(known?.code, status.UNIMPLEMENTED, `${method}: ${known?.details}`);
      }
      // A real method without the token: the same answer as a made-up one.
      const real = await rawCall("/qlorad.v1.QLoRA/ListJobs", new grpc.Metadata());
      assert.equal(real?.code, status.UNAUTHENTICATED);
    } finally {
      raw.close();
      await t.close();
    }
  },
});
