/**
 * Job event streams under pressure, through a real server (issue 14, item 9): open streams are
 * capped per connection and in all (RESOURCE_EXHAUSTED past a cap, counted in the metrics), and
 * a stream whose client does not read holds a few events in the server, not the job's whole log,
 * so many such streams on a long log leave the server's memory nearly where it was.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import { setupTelemetry } from "../../src/telemetry/setup.ts";
import { CancelledError } from "../../src/util/errors.ts";
import { collect, connect, follow, type Msg, startTestServer } from "./grpc_client.ts";

/** A Quantize stand-in: `events` progress reports with `nameBytes`-long tensor names, then holds
 * until `held` resolves (or the job is cancelled). */
function fakeQuantizer(events: number, nameBytes: number, held: Promise<void>) {
  return async (o: QuantizeOptions): Promise<QuantizeResult> => {
    for (let i = 1; i <= events; i++) {
      o.onProgress?.({
        tensor: `t${i}.${"w".repeat(nameBytes)}`,
        index: i,
        total: events + 1,
        bytesIn: i,
        bytesOut: i,
        quantized: true,
      });
    }
    await new Promise<void>((resolve, reject) => {
      o.signal?.addEventListener("abort", () => reject(new CancelledError()), { once: true });
      held.then(resolve);
    });
    return {
      parametersQuantized: 1,
      tensorsQuantized: 1,
      tensorsKept: 0,
      bitsPerParameter: 4,
      bytesIn: 1,
      bytesOut: 1,
      meanAbsError: 0,
      maxAbsError: 0,
      outputDir: o.outputDir,
    };
  };
}

/** Prometheus text -> value by `name{labels}` (labels sorted, scope labels dropped). */
function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const labels = (m[2] ?? "").match(/\w+="(?:[^"\\]|\\.)*"/g) ?? [];
    out.set(`${m[1]}{${labels.filter((l) => !l.startsWith("otel_scope_")).sort()}}`, Number(m[3]));
  }
  return out;
}

Deno.test({
  name: "streams are capped per connection and in all, and the metrics count them",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const telemetry = await setupTelemetry({
      serviceName: "qlorad-test",
      env: new Map([["QLORAD_PROMETHEUS_PORT", "0"], ["QLORAD_PROMETHEUS_HOST", "127.0.0.1"]]),
    });
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    const t = await startTestServer({
      quantize: fakeQuantizer(2, 10, held),
      server: { maxStreamsPerConnection: 3, maxStreams: 5 },
    });
    const other = connect(t.port, { ownConnection: true });
    const open: grpc.ClientReadableStream<Msg>[] = [];
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const scrape = async () =>
        parseExposition(
          await (await fetch(`http://127.0.0.1:${telemetry.prometheusPort}/metrics`)).text(),
        );
      // Connection A: the Quantize stream and two watches fill its 3.
      const job = follow(t.qlorad.Quantize({ model_path: "tiny", output_path: "q" }));
      open.push(job.stream);
      const jobId = (await job.until((e) => e.state === "JOB_STATE_RUNNING")).job_id;
      // Refusals are immediate; the deadline only bounds a wait if one is wrongly accepted.
      const bounded = () => ({ deadline: Date.now() + 30_000 });
      const watch = async (client: typeof t.qlorad) => {
        const w = follow(client.WatchJob({ job_id: jobId }));
        open.push(w.stream);
        await w.until(() => true); // its first event: the server holds the stream now
      };
      await watch(t.qlorad);
      await watch(t.qlorad);
      const refusedA = await collect(
        t.qlorad.WatchJob({ job_id: jobId }, new grpc.Metadata(), bounded()),
      );
      assert.equal(refusedA.code, status.RESOURCE_EXHAUSTED, refusedA.details);
      assert.match(refusedA.details, /too many open job streams on this connection \(limit 3\)/);
      // A new job on a full connection is refused before it exists.
      const refusedJob = await collect(
        t.qlorad.Quantize({ model_path: "tiny", output_path: "q2" }),
      );
      assert.equal(refusedJob.code, status.RESOURCE_EXHAUSTED, refusedJob.details);
      assert.equal(refusedJob.events.length, 0);
      // Connection B: two more reach the server's 5.
      await watch(other.qlorad);
      await watch(other.qlorad);
      const refusedB = await collect(
        other.qlorad.WatchJob({ job_id: jobId }, new grpc.Metadata(), bounded()),
      );
      assert.equal(refusedB.code, status.RESOURCE_EXHAUSTED, refusedB.details);
      assert.match(refusedB.details, /too many open job streams on the server \(limit 5\)/);

      let m = await scrape();
      assert.equal(m.get("qlorad_rpc_streams_open{}"), 5);
      assert.equal(m.get('qlorad_rpc_streams_refused_total{qlorad_stream_limit="connection"}'), 2);
      assert.equal(m.get('qlorad_rpc_streams_refused_total{qlorad_stream_limit="total"}'), 1);

      // Closing a stream frees its place (once the server has seen the cancel).
      open.pop()!.cancel();
      const opened = (w: ReturnType<typeof follow>) =>
        w.until(() => true).then(() => true, () => false);
      let again = follow(other.qlorad.WatchJob({ job_id: jobId }));
      for (let tries = 0; !(await opened(again)); tries++) {
        assert.ok(tries < 200, "the closed stream's place was never freed");
        await new Promise((r) => setTimeout(r, 50));
        again = follow(other.qlorad.WatchJob({ job_id: jobId }));
      }
      release();
      assert.equal((await job.done).code, status.OK);
      assert.equal((await again.done).code, status.OK);
      for (const s of open) s.cancel();
      m = await scrape();
      assert.ok((m.get("qlorad_rpc_streams_open{}") ?? -1) <= 4);
    } finally {
      release();
      for (const s of open) s.cancel();
      other.close();
      await t.close();
      await telemetry.shutdown();
    }
  },
});

Deno.test({
  name: "streams that are never read hold a few events each, not the whole log",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => release = resolve);
    // A log of about 8 MiB: 4000 progress events with 2 KiB tensor names.
    const t = await startTestServer({ quantize: fakeQuantizer(4000, 2048, held) });
    const clients = Array.from({ length: 4 }, () => connect(t.port, { ownConnection: true }));
    const streams: grpc.ClientReadableStream<Msg>[] = [];
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const job = follow(t.qlorad.Quantize({ model_path: "tiny", output_path: "q" }));
      const first = await job.until((e) => e.payload === "progress" && e.progress.index === 4000);
      release();
      assert.equal((await job.done).code, status.OK);
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      const before = Deno.memoryUsage().rss;
      // 6 streams on each of 4 connections, replaying the ended job's log, never read: each
      // client takes its first event (so the server is writing), then pauses.
      for (const c of clients) {
        for (let i = 0; i < 6; i++) {
          const s = c.qlorad.WatchJob({ job_id: first.job_id }) as grpc.ClientReadableStream<Msg>;
          streams.push(s);
          s.on("error", () => {}); // cancelled at the end
          await new Promise<void>((resolve) =>
            s.once("data", () => {
              s.pause();
              resolve();
            })
          );
        }
      }
      // Let the server write what flow control lets it: until its memory stops growing.
      let last = Deno.memoryUsage().rss;
      for (let settled = 0, i = 0; settled < 4 && i < 60; i++) {
        await new Promise((r) => setTimeout(r, 250));
        const now = Deno.memoryUsage().rss;
        settled = now - last < 4 << 20 ? settled + 1 : 0;
        last = now;
      }
      gc?.();
      const grown = Deno.memoryUsage().rss - before;
      // Without flow control each stream held the whole log (~8 MiB as text, ~3x that parsed
      // and encoded): 24 streams took several hundred MiB. With it, a few events per stream.
      assert.ok(grown < 128 << 20, `RSS grew ${(grown / 2 ** 20).toFixed(0)} MiB`);
      // And they can still be read to the end.
      const s = streams[0];
      s.resume();
      const rest = await collect(s);
      assert.equal(rest.code, status.OK);
    } finally {
      release();
      for (const s of streams) s.cancel();
      for (const c of clients) c.close();
      await t.close();
    }
  },
});
