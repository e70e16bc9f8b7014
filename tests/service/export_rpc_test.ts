/**
 * The Export RPC through a real server over the GGUF tests' NF4 fixture (tests/export/
 * gguf_fixture.ts) as its data directory: a merged GGUF F16 with the request's defaults, the base
 * alone plus the adapter as a GGUF LoRA, and a merged Hugging Face folder; the files equal what
 * the exporters write called directly, their headers list the expected tensors, and llama.cpp
 * (tests/llama_cpp) loads them with the float64 reference's loss. A cancel mid-export ends the
 * job CANCELLED with no output; bad requests are refused naming the field, with no job.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { exportGguf } from "../../src/export/export_gguf.ts";
import { mergeAdapter } from "../../src/train/merge.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { LINEAR_MODULES } from "../../src/model/config.ts";
import { forwardBackward } from "../reference/llama_f64.ts";
import { llamaCppUnavailable, runLlamaCpp } from "../llama_cpp/install.ts";
import { type GgufFixture, HELD_OUT_TEXT, makeGgufFixture } from "../export/gguf_fixture.ts";
import { readGguf } from "../export/gguf_read.ts";
import {
  call,
  follow,
  type Msg,
  startTestServer,
  streamCall,
  type TestServer,
} from "./grpc_client.ts";

/**
 * The bound for F16: 1e-3 relative loss (tests/export/gguf_llama_cpp_test.ts derives
 * it: 11-bit weights and llama.cpp's f16 activations, about 1e-4 measured there).
 */
const F16_REL_LOSS_TOL = 1e-3;

let fixture: GgufFixture | undefined;

/** One fixture for the file (quantizing it is the slow part); the servers use it as data dir. */
async function fx(): Promise<GgufFixture> {
  fixture ??= await makeGgufFixture();
  return fixture;
}

async function withServer(
  fn: (t: TestServer, fx: GgufFixture) => Promise<void>,
  server: Parameters<typeof startTestServer>[0] = {},
) {
  const f = await fx();
  const t = await startTestServer({ ...server, dataDir: f.dir });
  try {
    await fn(t, f);
  } finally {
    await t.close();
  }
}

/** The events of a successful Export stream: QUEUED, RUNNING, a Progress per tensor, the result. */
function checkEvents(out: { code: number; details: string; events: Msg[] }): Msg {
  assert.equal(out.code, status.OK, out.details);
  const ev = out.events;
  assert.deepEqual(ev.slice(0, 2).map((e) => e.state), ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]);
  const progress = ev.filter((e) => e.payload === "progress").map((e) => e.progress);
  assert.ok(progress.length > 0);
  assert.deepEqual(progress.map((p) => p.index), progress.map((_, i) => i + 1));
  assert.ok(progress.every((p) => p.total === progress.length && p.tensor !== ""));
  const last = ev.at(-1)!;
  assert.equal(last.state, "JOB_STATE_SUCCEEDED");
  assert.equal(last.payload, "export_result");
  assert.equal(Number(last.export_result.tensors), progress.length);
  return last;
}

/** Mean next-token loss of the float64 reference (base + adapter, or the base alone). */
function referenceLoss(f: GgufFixture, tokens: number[], withAdapter: boolean): number {
  const labels = [...tokens.slice(1), -100];
  return forwardBackward(f.rc, f.weights, withAdapter ? f.lora : null, {
    tokens: [tokens],
    labels: [labels],
  }).loss;
}

Deno.test({
  name: "Export: GGUF merged (defaults), base + GGUF LoRA, HF merged; llama.cpp's loss",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withServer(async (t, f) => {
      // 1. No format, no type: a merged GGUF in F16.
      const merged = checkEvents(
        await streamCall(t.qlorad, "Export", {
          base_model_path: "q",
          adapter_path: "a",
          output_path: "out/merged.gguf",
          request_id: "export-merged-1",
        }),
      );
      const layers = f.cfg.layers;
      assert.equal(merged.export_result.output_path, "out/merged.gguf");
      assert.equal(merged.export_result.format, "EXPORT_FORMAT_GGUF_MERGED");
      assert.equal(merged.export_result.type, "EXPORT_TYPE_F16");
      assert.equal(merged.export_result.merged_linears, layers * LINEAR_MODULES.length);
      const mergedPath = join(f.dir, "out/merged.gguf");
      const bytes = await Deno.readFile(mergedPath);
      assert.equal(Number(merged.export_result.bytes), bytes.length);

      // The same bytes as exportGguf called directly on the same folders (tests/export checks
      // those against llama.cpp): the job passes the request through, name included.
      const direct = join(f.dir, "direct.gguf");
      await exportGguf({
        baseModelDir: f.baseDir,
        adapterDir: f.adapterDir,
        mode: "merged",
        outputPath: direct,
        type: "F16",
        overwrite: true,
      });
      assert.deepEqual(bytes, await Deno.readFile(direct));

      const g = readGguf(bytes);
      const expected = ["token_embd.weight", "output_norm.weight", "output.weight"];
      for (let l = 0; l < layers; l++) {
        for (
          const n of [
            "attn_norm",
            "ffn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
          ]
        ) expected.push(`blk.${l}.${n}.weight`);
      }
      assert.deepEqual([...g.tensors.keys()].sort(), expected.sort());
      assert.equal(g.kv.get("general.file_type"), 1);
      assert.equal(g.kv.get("general.name"), "q");

      // 2. The base alone and the adapter as a GGUF LoRA (F32), for llama.cpp's --lora.
      checkEvents(
        await streamCall(t.qlorad, "Export", {
          base_model_path: "q",
          output_path: "out/base.gguf",
          format: "EXPORT_FORMAT_GGUF_MERGED",
          type: "EXPORT_TYPE_F16",
        }),
      );
      const lora = checkEvents(
        await streamCall(t.qlorad, "Export", {
          base_model_path: "q",
          adapter_path: "a",
          output_path: "out/adapter.gguf",
          format: "EXPORT_FORMAT_GGUF_LORA",
          type: "EXPORT_TYPE_F32",
        }),
      );
      assert.equal(lora.export_result.merged_linears, 0);
      const gl = readGguf(await Deno.readFile(join(f.dir, "out/adapter.gguf")));
      assert.equal(gl.kv.get("adapter.type"), "lora");
      assert.equal(gl.tensors.size, 2 * layers * LINEAR_MODULES.length);

      // 3. A merged Hugging Face folder: the same bytes as mergeAdapter's.
      const hf = checkEvents(
        await streamCall(t.qlorad, "Export", {
          base_model_path: "q",
          adapter_path: "a",
          output_path: "out/hf",
          format: "EXPORT_FORMAT_HF_MERGED",
          type: "EXPORT_TYPE_F32",
        }),
      );
      assert.equal(hf.export_result.merged_linears, layers * LINEAR_MODULES.length);
      await mergeAdapter({
        baseModelDir: f.baseDir,
        adapterDir: f.adapterDir,
        outputDir: join(f.dir, "direct-hf"),
        dtype: "F32",
        overwrite: true,
      });
      assert.deepEqual(
        await Deno.readFile(join(f.dir, "out/hf/model.safetensors")),
        await Deno.readFile(join(f.dir, "direct-hf/model.safetensors")),
      );

      // The job records: kind EXPORT, the request with its defaults filled in.
      const jobs = (await call(t.qlorad, "ListJobs", { kind: "JOB_KIND_EXPORT" })).jobs;
      assert.equal(jobs.length, 4);
      assert.ok(jobs.every((j: Msg) => j.kind === "JOB_KIND_EXPORT"));
      const job = await call(t.qlorad, "GetJob", { job_id: merged.job_id });
      assert.equal(job.request, "export");
      assert.equal(job.export.format, "EXPORT_FORMAT_GGUF_MERGED");
      assert.equal(job.export.type, "EXPORT_TYPE_F16");
      assert.equal(job.export.request_id, "export-merged-1");
      assert.match(job.summary, /^export q \+ a -> out\/merged\.gguf \(GGUF, F16\)$/);
      // A retry with the same request_id returns that job, not a new export.
      const retry = await streamCall(t.qlorad, "Export", {
        base_model_path: "q",
        adapter_path: "a",
        output_path: "out/merged.gguf",
        request_id: "export-merged-1",
      });
      assert.equal(retry.events.at(-1)!.job_id, merged.job_id);

      // 4. llama.cpp loads the files the server wrote: its loss is the reference's.
      if (llamaCppUnavailable()) return;
      const tokens = (await loadTokenizer(f.baseDir)).encode(HELD_OUT_TEXT);
      const [m, withLora] = await runLlamaCpp([
        { model: mergedPath, tokens },
        {
          model: join(f.dir, "out/base.gguf"),
          lora: [join(f.dir, "out/adapter.gguf")],
          tokens,
        },
      ], f.dir);
      const want = referenceLoss(f, tokens, true);
      for (const [what, r] of [["merged F16", m], ["base F16 + LoRA F32", withLora]] as const) {
        assert.equal(r.vocab, f.cfg.vocab);
        const loss = -r.logprobs.reduce((a, b) => a + b, 0) / r.logprobs.length;
        const rel = Math.abs(loss - want) / want;
        console.log(
          `${what}: llama.cpp loss ${loss.toFixed(6)}, reference ${want.toFixed(6)}, ` +
            `rel ${rel.toExponential(2)}`,
        );
        assert.ok(rel <= F16_REL_LOSS_TOL, `${what}: ${rel}`);
      }
      // The adapter matters here: without it the reference's loss is another number.
      const base = referenceLoss(f, tokens, false);
      assert.ok(Math.abs(base - want) / want > 10 * F16_REL_LOSS_TOL, `${base} vs ${want}`);
    });
  },
});

/** Resolves when `signal` aborts. */
function aborted(signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!signal || signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** The third tensor's report, where the held exporter waits for the cancel. */
const HOLD_AT = 3;

Deno.test({
  name: "Export: CancelJob mid-export ends the job CANCELLED between tensors, with no output",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // The real exporter, held after its third tensor's report until the job is cancelled: the
    // cancel lands mid-export whatever the machine's speed.
    const held: typeof exportGguf = (o) =>
      exportGguf({
        ...o,
        onProgress: async (tensor, index, total) => {
          await o.onProgress?.(tensor, index, total);
          if (index === HOLD_AT) await aborted(o.signal);
        },
      });
    await withServer(async (t, f) => {
      const s = follow(t.qlorad.Export({
        base_model_path: "q",
        adapter_path: "a",
        output_path: "cancelled/m.gguf",
        type: "EXPORT_TYPE_Q8_0",
      }));
      const ev = await s.until((e) => e.payload === "progress" && e.progress.index === HOLD_AT);
      const res = await call(t.qlorad, "CancelJob", { job_id: ev.job_id });
      assert.equal(res.job.state, "JOB_STATE_RUNNING");
      const out = await s.done;
      assert.equal(out.code, status.CANCELLED, out.details);
      const watched = await streamCall(t.qlorad, "WatchJob", { job_id: ev.job_id });
      const last = watched.events.at(-1)!;
      assert.equal(last.state, "JOB_STATE_CANCELLED");
      assert.equal(last.error.code, "CANCELLED");
      // No tensor after the cancel; nothing under the output's name, no partial file left.
      const progress = watched.events.filter((e) => e.payload === "progress");
      assert.equal(progress.length, HOLD_AT);
      assert.ok(HOLD_AT < progress[0].progress.total);
      const left = [];
      for await (const e of Deno.readDir(join(f.dir, "cancelled"))) left.push(e.name);
      assert.deepEqual(left, []);
    }, { server: { exportGguf: held } });
  },
});

Deno.test({
  name: "Export: a cancel after the last tensor's report is refused; the job ends with its file",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Held after the last tensor's report (the point of no return) until the cancel was answered.
    const release = Promise.withResolvers<void>();
    const held: typeof exportGguf = (o) =>
      exportGguf({
        ...o,
        onProgress: async (tensor, index, total) => {
          await o.onProgress?.(tensor, index, total);
          if (index === total) await release.promise;
        },
      });
    await withServer(async (t, f) => {
      const s = follow(t.qlorad.Export({
        base_model_path: "q",
        output_path: "committed/base.gguf",
        type: "EXPORT_TYPE_Q4_0",
      }));
      const ev = await s.until((e) =>
        e.payload === "progress" && e.progress.index === e.progress.total
      );
      await assert.rejects(
        call(t.qlorad, "CancelJob", { job_id: ev.job_id }),
        (e: { code: number }) => e.code === status.FAILED_PRECONDITION,
      );
      release.resolve();
      const out = await s.done;
      assert.equal(out.code, status.OK, out.details);
      assert.equal(out.events.at(-1)!.state, "JOB_STATE_SUCCEEDED");
      const g = readGguf(await Deno.readFile(join(f.dir, "committed/base.gguf")));
      assert.equal(g.kv.get("general.file_type"), 2, "Q4_0 is llama_ftype 2");
    }, { server: { exportGguf: held } });
  },
});

Deno.test({
  name: "Export: an adapter the job cannot read ends FAILED, named by the user's path",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withServer(async (t, f) => {
      const dora = join(f.dir, "a-dora");
      await Deno.mkdir(dora);
      await Deno.copyFile(
        join(f.adapterDir, "adapter_model.safetensors"),
        join(dora, "adapter_model.safetensors"),
      );
      const config = JSON.parse(await Deno.readTextFile(join(f.adapterDir, "adapter_config.json")));
      await Deno.writeTextFile(
        join(dora, "adapter_config.json"),
        JSON.stringify({ ...config, use_dora: true }),
      );
      try {
        const out = await streamCall(t.qlorad, "Export", {
          base_model_path: "q",
          adapter_path: "a-dora",
          output_path: "failed/m.gguf",
        });
        assert.equal(out.code, status.INVALID_ARGUMENT, out.details);
        // The pinned /proc/self/fd path is never shown; the user's path is.
        assert.match(out.details, /^a-dora\/adapter_config\.json: DoRA adapters are not supported/);
        assert.equal(out.events.at(-1)!.state, "JOB_STATE_FAILED");
        await assert.rejects(Deno.stat(join(f.dir, "failed/m.gguf")));
      } finally {
        await Deno.remove(dora, { recursive: true });
      }
    });
  },
});

Deno.test({
  name: "Export: bad requests are refused naming the field, and create no job",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withServer(async (t, f) => {
      const outside = await Deno.makeTempDir({ prefix: "qlorad-outside-" });
      await Deno.symlink(outside, join(f.dir, "elsewhere"));
      await Deno.writeTextFile(join(f.dir, "taken.gguf"), "not a model");
      await Deno.mkdir(join(f.dir, "folder.gguf"));
      // The data dir's job records outlive each test's server: count the jobs made here.
      const exportJobs = async () =>
        (await call(t.qlorad, "ListJobs", { kind: "JOB_KIND_EXPORT" })).jobs.length;
      const before = await exportJobs();
      const ok = { base_model_path: "q", adapter_path: "a", output_path: "o.gguf" };
      const cases: Array<[Msg, status, RegExp]> = [
        [{ ...ok, output_path: "../o.gguf" }, status.INVALID_ARGUMENT, /^output_path "\.\.\/o/],
        [{ ...ok, output_path: "/tmp/o.gguf" }, status.INVALID_ARGUMENT, /^output_path /],
        [{ ...ok, base_model_path: "/etc" }, status.INVALID_ARGUMENT, /^base_model_path /],
        [{ ...ok, adapter_path: "elsewhere" }, status.PERMISSION_DENIED, /^adapter_path /],
        [{ ...ok, output_path: "elsewhere/o.gguf" }, status.PERMISSION_DENIED, /^output_path /],
        [{ ...ok, output_path: "q/o.gguf" }, status.INVALID_ARGUMENT, /output_path .*base_model/],
        [{ ...ok, output_path: "taken.gguf" }, status.FAILED_PRECONDITION, /already exists/],
        [
          { ...ok, output_path: "folder.gguf", overwrite: true },
          status.INVALID_ARGUMENT,
          /^output_path "folder\.gguf": is a folder/,
        ],
        [{ ...ok, adapter_path: "nope" }, status.NOT_FOUND, /^adapter_path /],
        [
          { ...ok, format: "EXPORT_FORMAT_GGUF_LORA", type: "EXPORT_TYPE_Q8_0" },
          status.INVALID_ARGUMENT,
          /^type: /,
        ],
        [{ ...ok, type: "EXPORT_TYPE_BF16" }, status.INVALID_ARGUMENT, /^type: /],
        [{ ...ok, format: 7 }, status.INVALID_ARGUMENT, /^format: /],
        [
          { ...ok, adapter_path: "", format: "EXPORT_FORMAT_HF_MERGED" },
          status.INVALID_ARGUMENT,
          /^adapter_path: /,
        ],
      ];
      try {
        for (const [req, code, message] of cases) {
          const out = await streamCall(t.qlorad, "Export", req);
          const what = JSON.stringify(req);
          assert.equal(out.code, code, `${what}: ${out.details}`);
          assert.match(out.details, message, what);
          assert.deepEqual(out.events, [], what);
        }
        assert.equal(await exportJobs(), before);
        await assert.rejects(Deno.stat(join(outside, "o.gguf")));
      } finally {
        await Deno.remove(join(f.dir, "elsewhere"));
        await Deno.remove(join(f.dir, "taken.gguf"));
        await Deno.remove(join(f.dir, "folder.gguf"));
        await Deno.remove(outside, { recursive: true });
      }
    });
  },
});

Deno.test({
  name: "Export: remove the fixture",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    if (fixture) await Deno.remove(fixture.dir, { recursive: true });
  },
});
