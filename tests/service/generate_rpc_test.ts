/**
 * Generate through a real server and gRPC client on the tiny fixture: the streamed events add up
 * to the result, stop strings and max_new_tokens end it, the chat template is applied, a seed
 * repeats a sampled text, bad requests create no job, and CancelJob or a client that goes away
 * stops the generation at the next token.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import {
  call,
  collect,
  type Msg,
  startTestServer,
  streamCall,
  type TestServer,
} from "./grpc_client.ts";

const PROMPT = "The capital of France is";

function generated(events: Msg[]): Msg[] {
  return events.filter((e) => e.payload === "generated_text").map((e) => e.generated_text);
}

function result(events: Msg[]): Msg {
  const r = events.findLast((e) => e.payload === "generate_result");
  assert.ok(r, "no generate_result event");
  return r.generate_result;
}

/** Waits for a job to end (the generation stops at its next token). */
async function ended(t: TestServer, jobId: string): Promise<Msg> {
  for (;;) {
    const job = await call(t.qlorad, "GetJob", { job_id: jobId });
    if (!["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"].includes(job.state)) return job;
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test({
  name: "Generate streams tokens, stops at stop strings and max_new_tokens, follows its call",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const base = { base_model_path: "tiny", prompt: PROMPT, ignore_eos: true };

      // Greedy, max_new_tokens: one event per token; their texts and ids make the result.
      const g = await streamCall(t.qlorad, "Generate", { ...base, max_new_tokens: 12 });
      assert.equal(g.code, status.OK, g.details);
      const states = g.events.map((e) => e.state);
      assert.deepEqual(states.slice(0, 2), ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]);
      assert.equal(states.at(-1), "JOB_STATE_SUCCEEDED");
      const pieces = generated(g.events);
      const r = result(g.events);
      assert.equal(pieces.length, 12);
      assert.equal(r.finish_reason, "FINISH_REASON_LENGTH");
      assert.equal(r.generated_tokens, 12);
      assert.deepEqual(pieces.flatMap((p) => p.token_ids), r.token_ids);
      assert.equal(pieces.map((p) => p.text).join(""), r.text);
      const tokenizer = await loadTokenizer(join(t.dataDir, "tiny"));
      assert.equal(r.prompt_tokens, tokenizer.encode(PROMPT).length);
      assert.equal(r.text, tokenizer.decode(r.token_ids));
      assert.ok(r.prefill_tokens_per_second > 0 && r.decode_tokens_per_second > 0);
      const job = await call(t.qlorad, "GetJob", { job_id: g.events[0].job_id });
      assert.equal(job.kind, "JOB_KIND_GENERATE");
      assert.equal(job.generate.max_new_tokens, 12);
      assert.equal(job.generate.prompt, PROMPT);

      // A stop string from the middle of that text: the same greedy tokens up to it, the text
      // cut just before it, and the stream's pieces still add up to the text.
      assert.ok(
        r.text.length >= 6,
        `greedy text too short for the test: ${JSON.stringify(r.text)}`,
      );
      const stop = r.text.slice(3, 6);
      const s = await streamCall(t.qlorad, "Generate", {
        ...base,
        max_new_tokens: 12,
        stop: [stop],
      });
      assert.equal(s.code, status.OK, s.details);
      const sr = result(s.events);
      assert.equal(sr.finish_reason, "FINISH_REASON_STOP");
      assert.equal(sr.text, r.text.slice(0, r.text.indexOf(stop)));
      assert.equal(generated(s.events).map((p) => p.text).join(""), sr.text);
      assert.deepEqual(sr.token_ids, r.token_ids.slice(0, sr.token_ids.length));

      // Chat messages go through the model's chat template with the generation prompt.
      const messages = [{ role: "user", content: "What is the capital of Italy?" }];
      const c = await streamCall(t.qlorad, "Generate", {
        base_model_path: "tiny",
        messages,
        max_new_tokens: 3,
      });
      assert.equal(c.code, status.OK, c.details);
      const rendered = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
      assert.ok(rendered.endsWith("<|assistant|>"));
      assert.equal(
        result(c.events).prompt_tokens,
        tokenizer.encode(rendered, { addSpecialTokens: false }).length,
      );

      // Sampling: a seed repeats the text.
      const sampled = { ...base, max_new_tokens: 10, temperature: 0.9, top_k: 20, top_p: 0.9 };
      const a = await streamCall(t.qlorad, "Generate", { ...sampled, seed: 7 });
      const b = await streamCall(t.qlorad, "Generate", { ...sampled, seed: 7 });
      assert.equal(a.code, status.OK, a.details);
      assert.deepEqual(result(a.events).token_ids, result(b.events).token_ids);

      // Bad requests: refused with the field named, and no job.
      const jobsBefore = (await call(t.qlorad, "ListJobs", {})).jobs.length;
      for (
        const [req, field] of [
          [{ ...base, messages }, /prompt, messages/],
          [{ base_model_path: "tiny" }, /prompt, messages/],
          [{ ...base, top_p: 1.5 }, /top_p/],
          [{ ...base, temperature: -1 }, /temperature/],
          [{ ...base, max_new_tokens: 5000 }, /max_new_tokens/],
          [{ ...base, stop: [""] }, /stop/],
          [{ ...base, prompt: "word ".repeat(400) }, /prompt: \d+ tokens/],
          [{ ...base, adapter_path: "missing" }, /adapter_path/],
        ] as const
      ) {
        const bad = await streamCall(t.qlorad, "Generate", req);
        const want = field.source === "adapter_path" ? status.NOT_FOUND : status.INVALID_ARGUMENT;
        assert.equal(bad.code, want, bad.details);
        assert.match(bad.details, field);
      }
      assert.equal((await call(t.qlorad, "ListJobs", {})).jobs.length, jobsBefore);

      // CancelJob: stops at the next token; the job ends CANCELLED, far short of its tokens.
      const long = { ...base, max_new_tokens: 200 };
      const stream = t.qlorad.Generate(long);
      let jobId = "";
      stream.on("data", (ev: Msg) => {
        if (!jobId && ev.payload === "generated_text") {
          jobId = ev.job_id;
          call(t.qlorad, "CancelJob", { job_id: jobId });
        }
      });
      const cancelled = await collect(stream);
      assert.equal(cancelled.code, status.CANCELLED, cancelled.details);
      assert.ok(generated(cancelled.events).length < 200);
      assert.equal((await ended(t, jobId)).state, "JOB_STATE_CANCELLED");

      // The client goes away: its job is cancelled too.
      const gone = t.qlorad.Generate(long);
      const goneId = await new Promise<string>((resolve) => {
        gone.on("data", (ev: Msg) => {
          if (ev.payload === "generated_text") {
            gone.cancel();
            resolve(ev.job_id);
          }
        });
      });
      gone.on("error", () => {});
      const goneJob = await ended(t, goneId);
      assert.equal(goneJob.state, "JOB_STATE_CANCELLED");
      const events = await streamCall(t.qlorad, "WatchJob", { job_id: goneId });
      assert.ok(generated(events.events).length < 200);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "Generate over the server's GPU memory budget ends RESOURCE_EXHAUSTED before loading",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // 100 KB: below the tiny model's frozen base (~0.24M parameters: its 16-bit embedding and
    // lm_head tables alone are ~190 KB).
    const t = await startTestServer({ server: { gpuMemoryBudgetBytes: 100_000 } });
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const r = await streamCall(t.qlorad, "Generate", { base_model_path: "tiny", prompt: PROMPT });
      assert.equal(r.code, status.RESOURCE_EXHAUSTED, r.details);
      assert.match(r.details, /GPU memory budget of 100000 bytes/);
      assert.equal(generated(r.events).length, 0);
    } finally {
      await t.close();
    }
  },
});
