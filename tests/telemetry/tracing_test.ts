/**
 * Tracing end to end: a local OTLP/HTTP receiver, telemetry set up from an env map pointing at
 * it, a gRPC server around the real handlers wrapped by wrapHandlers, and a real client that
 * sends a Quantize call of the tiny Llama with a `traceparent` it made. The receiver must get the
 * RPC's SERVER span as a child of the caller's span, the job span under it, and one
 * `quantize tensor` span per tensor under that, all in the caller's trace. With nothing
 * configured, nothing is registered and the helpers run the code untraced.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { metrics, propagation, trace } from "@opentelemetry/api";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { SafetensorsFile } from "../../src/io/safetensors.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";
import { GpuHolder } from "../../src/service/gpu.ts";
import { jobHandlers } from "../../src/service/handlers/jobs.ts";
import type { ServiceContext } from "../../src/service/handlers/jobs.ts";
import { quantizeHandler } from "../../src/service/handlers/quantize.ts";
import { trainHandler } from "../../src/service/handlers/train.ts";
import { evaluateHandler } from "../../src/service/handlers/evaluate.ts";
import { JobManager } from "../../src/service/jobs.ts";
import { StreamLimiter } from "../../src/service/streams.ts";
import { PROTO_LOADER_OPTIONS, PROTO_PATH } from "../../src/service/server.ts";
import { silentLogger } from "../../src/service/status.ts";
import { setupTelemetry } from "../../src/telemetry/setup.ts";
import { jobTrace, tracingEnabled } from "../../src/telemetry/tracing.ts";
import { rpcSpan, wrapHandlers } from "../../src/service/rpc_tracing.ts";
import { metricsEnabled } from "../../src/telemetry/metrics.ts";
import { collect } from "../service/grpc_client.ts";
import type { Msg } from "../service/grpc_client.ts";
import { startOtlpReceiver } from "./otlp_receiver.ts";

// deno-lint-ignore no-explicit-any
type AnyClient = any;

/** The real handlers behind wrapHandlers, on 127.0.0.1:0 (what server.ts does, traced). */
async function startTracedServer(dataDir: string) {
  const packageDefinition = await protoLoader.load(PROTO_PATH, PROTO_LOADER_OPTIONS);
  // deno-lint-ignore no-explicit-any
  const loaded = grpc.loadPackageDefinition(packageDefinition) as any;
  const service: grpc.ServiceDefinition = loaded.qlorad.v1.QLoRA.service;
  const jobs = await JobManager.open({ dataDir, logger: silentLogger });
  const gpu = new GpuHolder(silentLogger);
  const ctx: ServiceContext = {
    jobs,
    dataDir,
    logger: silentLogger,
    hostDirs: [dataDir],
    quantize: quantizeModel,
    gpu: gpu.get,
    streams: new StreamLimiter(),
  };
  const server = new grpc.Server();
  server.addService(
    service,
    wrapHandlers({
      Quantize: quantizeHandler(ctx),
      Train: trainHandler(ctx),
      Evaluate: evaluateHandler(ctx),
      ...jobHandlers(ctx),
    }, service),
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (err, p) => err ? reject(err) : resolve(p),
    )
  );
  const client: AnyClient = new loaded.qlorad.v1.QLoRA(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );
  return {
    client,
    async close() {
      client.close();
      await jobs.close();
      await gpu.close();
      server.forceShutdown();
    },
  };
}

function unary(client: AnyClient, method: string, req: Msg, md: grpc.Metadata) {
  return new Promise<{ err: grpc.ServiceError | null; res?: Msg }>((resolve) =>
    client[method](req, md, (err: grpc.ServiceError | null, res: Msg) => resolve({ err, res }))
  );
}

function hex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function tensorNames(file: string): Promise<string[]> {
  const f = await SafetensorsFile.open(file);
  try {
    return f.names();
  } finally {
    f.close();
  }
}

Deno.test({
  name: "tracing: a Quantize call continues the caller's trace; job phases are its children",
  // The job opens the GPU device (GpuHolder), whose Dawn callbacks outlive the test body.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const receiver = startOtlpReceiver();
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-tracing-" });
    const telemetry = await setupTelemetry({
      serviceName: "qlorad-test",
      env: new Map([
        ["OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url],
        ["OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"],
        ["OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,team=ml%20infra"],
        ["OTEL_METRICS_EXPORTER", "none"],
      ]),
    });
    let server: Awaited<ReturnType<typeof startTracedServer>> | undefined;
    try {
      assert.equal(telemetry.tracing, true);
      assert.equal(telemetry.metrics, false);
      assert.equal(tracingEnabled(), true);
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      const tensors = await tensorNames(path.join(dataDir, "models", "tiny", "model.safetensors"));
      server = await startTracedServer(dataDir);

      // The caller's span: a trace id and span id of our own, sampled.
      const callerTrace = hex(16);
      const callerSpan = hex(8);
      const md = new grpc.Metadata();
      md.set("traceparent", `00-${callerTrace}-${callerSpan}-01`);
      md.set("tracestate", "vendor=abc");
      const out = await collect(
        server.client.Quantize({ model_path: "models/tiny", output_path: "out/tiny-nf4" }, md),
      );
      assert.equal(out.code, grpc.status.OK, out.details);
      const progress = out.events.filter((e) => e.payload === "progress").map((e) => e.progress);
      assert.equal(progress.length, tensors.length);
      const jobId = out.events[0].job_id;

      // A unary call with no trace context: a new trace; NOT_FOUND is the client's fault.
      const missing = await unary(server.client, "GetJob", { job_id: "nope" }, new grpc.Metadata());
      assert.equal(missing.err?.code, grpc.status.NOT_FOUND);

      // A stream refused before any job: its status is on the span.
      const bad = await collect(
        server.client.Quantize({ model_path: "models/none", output_path: "out/x" }, md),
      );
      assert.notEqual(bad.code, grpc.status.OK);

      await server.close();
      server = undefined;
      await telemetry.shutdown(); // flushes the batch processor
      const spans = receiver.spans;

      const byName = (name: string) => spans.filter((s) => s.name === name);
      const quantizeSpans = byName("qlorad.v1.QLoRA/Quantize")
        .sort((a, b) => Number(a.startNs - b.startNs));
      assert.equal(quantizeSpans.length, 2);
      const [rpc, refused] = quantizeSpans;
      assert.equal(refused.attributes["rpc.grpc.status_code"], bad.code);
      assert.equal(refused.parentSpanId, callerSpan);
      assert.equal(byName("job quantize").length, 1, "the refused call made no job");
      assert.ok(rpc, `no RPC span among ${spans.map((s) => s.name).join(", ")}`);
      assert.equal(rpc.traceId, callerTrace);
      assert.equal(rpc.parentSpanId, callerSpan);
      assert.equal(rpc.kind, 2); // SERVER
      assert.equal(rpc.attributes["rpc.system"], "grpc");
      assert.equal(rpc.attributes["rpc.service"], "qlorad.v1.QLoRA");
      assert.equal(rpc.attributes["rpc.method"], "Quantize");
      assert.equal(rpc.attributes["rpc.grpc.status_code"], grpc.status.OK);
      assert.equal(rpc.attributes["network.peer.address"], "127.0.0.1");
      assert.equal(rpc.statusCode, 0);
      assert.equal(rpc.scope, "qlorad");
      assert.equal(rpc.resource["service.name"], "qlorad-test");
      assert.equal(rpc.resource["deployment.environment.name"], "test");
      assert.equal(rpc.resource["team"], "ml infra");

      const [job] = byName("job quantize");
      assert.ok(job, "no job span");
      assert.equal(job.traceId, callerTrace);
      assert.equal(job.parentSpanId, rpc.spanId);
      assert.equal(job.attributes["qlorad.job.id"], jobId);
      assert.equal(job.attributes["qlorad.model"], "models/tiny");
      assert.equal(job.attributes["qlorad.job.outcome"], "succeeded");
      // The RPC streams until the job ends: the job span lies inside it.
      assert.ok(job.startNs >= rpc.startNs && job.endNs <= rpc.endNs);

      // One span per tensor, in the order of the Progress events, inside the job span, one
      // after another.
      const perTensor = byName("quantize tensor").sort((a, b) =>
        Number(a.attributes["qlorad.tensor.index"]) - Number(b.attributes["qlorad.tensor.index"])
      );
      assert.deepEqual(
        perTensor.map((s) => s.attributes["qlorad.tensor"]),
        progress.map((p: Msg) => p.tensor),
      );
      assert.deepEqual(
        perTensor.map((s) => s.attributes["qlorad.bytes_in"]),
        progress.map((p: Msg) => p.bytes_in),
      );
      assert.deepEqual(
        perTensor.map((s) => s.attributes["qlorad.quantized"]),
        progress.map((p: Msg) => p.quantized),
      );
      for (const s of perTensor) {
        assert.equal(s.traceId, callerTrace);
        assert.equal(s.parentSpanId, job.spanId);
        assert.ok(s.startNs >= job.startNs && s.endNs <= job.endNs, s.name);
      }
      for (let i = 1; i < perTensor.length; i++) {
        assert.ok(perTensor[i].startNs >= perTensor[i - 1].endNs);
      }
      const [write] = byName("write output");
      assert.equal(write?.parentSpanId, job.spanId);

      const [get] = byName("qlorad.v1.QLoRA/GetJob");
      assert.ok(get, "no GetJob span");
      assert.notEqual(get.traceId, callerTrace);
      assert.equal(get.parentSpanId, "");
      assert.equal(get.attributes["rpc.grpc.status_code"], grpc.status.NOT_FOUND);
      assert.equal(get.statusCode, 0, "a client error is not a server span error");

      assert.ok(receiver.requests.every((r) => r.contentType.startsWith("application/json")));
    } finally {
      await server?.close();
      await telemetry.shutdown();
      await receiver.close();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

function traceparent(): { md: grpc.Metadata; traceId: string; spanId: string } {
  const traceId = hex(16);
  const spanId = hex(8);
  const md = new grpc.Metadata();
  md.set("traceparent", `00-${traceId}-${spanId}-01`);
  return { md, traceId, spanId };
}

function near(a: unknown, b: number): boolean {
  return typeof a === "number" && Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));
}

Deno.test({
  name: "tracing: Train and Evaluate phases (load, train step, eval, checkpoint write) as spans",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const receiver = startOtlpReceiver();
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-tracing-" });
    const telemetry = await setupTelemetry({
      serviceName: "qlorad-test",
      env: new Map([
        ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", `${receiver.url}/v1/traces`],
        ["OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"],
      ]),
    });
    let server: Awaited<ReturnType<typeof startTracedServer>> | undefined;
    try {
      await makeTinyLlama(path.join(dataDir, "tiny"));
      server = await startTracedServer(dataDir);
      const q = await collect(
        server.client.Quantize(
          { model_path: "tiny", output_path: "tiny-nf4" },
          new grpc.Metadata(),
        ),
      );
      assert.equal(q.code, grpc.status.OK, q.details);

      const trainCaller = traceparent();
      const train = await collect(server.client.Train({
        base_model_path: "tiny-nf4",
        dataset_path: "tiny/train.jsonl",
        eval_dataset_path: "tiny/eval.jsonl",
        output_path: "adapters/run1",
        lora: { r: 4, alpha: 8 },
        hyperparameters: {
          learning_rate: 5e-3,
          max_steps: 3,
          micro_batch_size: 2,
          max_seq_len: 48,
          save_steps: 2,
          eval_steps: 2,
        },
      }, trainCaller.md));
      assert.equal(train.code, grpc.status.OK, train.details);
      const metrics = train.events.filter((e) => e.payload === "train_metrics")
        .map((e) => e.train_metrics);
      const evals = train.events.filter((e) => e.payload === "eval_result")
        .map((e) => e.eval_result);
      const loads = train.events.filter((e) =>
        e.payload === "progress" && e.progress.message.startsWith("loading ")
      );

      const evalCaller = traceparent();
      const ev = await collect(server.client.Evaluate({
        base_model_path: "tiny-nf4",
        adapter_path: "adapters/run1",
        dataset_path: "tiny/eval.jsonl",
        max_seq_len: 48,
        batch_size: 4,
      }, evalCaller.md));
      assert.equal(ev.code, grpc.status.OK, ev.details);
      const evalBatches = ev.events.filter((e) =>
        e.payload === "progress" && e.progress.message === "evaluating"
      ).length;

      await server.close();
      server = undefined;
      await telemetry.shutdown();
      const spans = receiver.spans;
      const childrenOf = (id: string, name: string) =>
        spans.filter((s) => s.parentSpanId === id && s.name === name);

      // Train: RPC span <- caller, job span <- RPC span, phases <- job span.
      const [rpc] = spans.filter((s) => s.name === "qlorad.v1.QLoRA/Train");
      assert.equal(rpc.traceId, trainCaller.traceId);
      assert.equal(rpc.parentSpanId, trainCaller.spanId);
      const [job] = childrenOf(rpc.spanId, "job train");
      assert.ok(job, "no train job span");
      assert.equal(job.attributes["qlorad.model"], "tiny-nf4");
      assert.equal(childrenOf(job.spanId, "read datasets").length, 1);
      const [load] = childrenOf(job.spanId, "load");
      assert.equal(load.attributes["qlorad.load.tensors"], loads.length);
      const steps = childrenOf(job.spanId, "train step")
        .sort((a, b) => Number(a.startNs - b.startNs));
      assert.deepEqual(steps.map((s) => s.attributes["qlorad.step"]), [1, 2, 3]);
      assert.deepEqual(metrics.map((m) => m.step), [1, 2, 3]);
      for (let i = 0; i < 3; i++) {
        const a = steps[i].attributes;
        assert.ok(near(a["qlorad.loss"], metrics[i].loss), `loss ${a["qlorad.loss"]}`);
        assert.ok(near(a["qlorad.learning_rate"], metrics[i].learning_rate));
        assert.ok(near(a["qlorad.grad_norm"], metrics[i].grad_norm));
        assert.equal(a["qlorad.tokens"], metrics[i].tokens);
        assert.equal(steps[i].traceId, trainCaller.traceId);
        assert.ok(steps[i].startNs >= load.endNs, "a step starts after the load");
      }
      const evalSpans = childrenOf(job.spanId, "eval").sort((a, b) =>
        Number(a.startNs - b.startNs)
      );
      assert.deepEqual(evalSpans.map((s) => s.attributes["qlorad.step"]), evals.map((e) => e.step));
      assert.deepEqual(evals.map((e) => e.step), [2, 3]);
      assert.ok(near(evalSpans[1].attributes["qlorad.loss"], evals[1].loss));
      const ckpts = childrenOf(job.spanId, "checkpoint write")
        .sort((a, b) => Number(a.startNs - b.startNs));
      assert.deepEqual(ckpts.map((s) => s.attributes["qlorad.step"]), [2, 3]);
      assert.deepEqual(ckpts.map((s) => s.attributes["qlorad.checkpoint.final"]), [false, true]);
      assert.equal(childrenOf(job.spanId, "write adapter").length, 1);
      for (const s of spans.filter((x) => x.parentSpanId === job.spanId)) {
        assert.ok(s.startNs >= job.startNs && s.endNs <= job.endNs, `${s.name} outside the job`);
      }

      // Evaluate: load then one eval span over the batches.
      const [erpc] = spans.filter((s) => s.name === "qlorad.v1.QLoRA/Evaluate");
      assert.equal(erpc.parentSpanId, evalCaller.spanId);
      const [ejob] = childrenOf(erpc.spanId, "job evaluate");
      assert.equal(ejob.attributes["qlorad.adapter"], "adapters/run1");
      const [eload] = childrenOf(ejob.spanId, "load");
      const [eeval] = childrenOf(ejob.spanId, "eval");
      assert.equal(eeval.attributes["qlorad.eval.batches"], evalBatches);
      assert.ok(eeval.startNs >= eload.endNs);
    } finally {
      await server?.close();
      await telemetry.shutdown();
      await receiver.close();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test("tracing: nothing configured registers nothing and the helpers run untraced", async () => {
  const telemetry = await setupTelemetry({ serviceName: "qlorad-test", env: new Map() });
  try {
    assert.equal(telemetry.tracing, false);
    assert.equal(telemetry.metrics, false);
    assert.equal(telemetry.prometheusPort, undefined);
    assert.equal(tracingEnabled(), false);
    assert.equal(metricsEnabled(), false);
    // The API's no-op providers: spans do not record, instruments are no-ops.
    const span = trace.getTracer("x").startSpan("y");
    assert.equal(span.isRecording(), false);
    assert.equal(span.spanContext().traceId, "00000000000000000000000000000000");
    span.end();
    assert.deepEqual(propagation.fields(), []);
    assert.equal(metrics.getMeterProvider().constructor.name, "NoopMeterProvider");

    // rpcSpan runs the handler as it is, with no span.
    const md = new grpc.Metadata();
    md.set("traceparent", `00-${hex(16)}-${hex(8)}-01`);
    let seen: unknown = "not called";
    const got = rpcSpan("qlorad.v1.QLoRA/GetJob", md, (end, s) => {
      seen = s;
      end(grpc.status.OK);
      return 42;
    });
    assert.equal(got, 42);
    assert.equal(seen, undefined);
    // A job's trace records nothing and runs the body.
    const job = jobTrace("quantize");
    assert.equal(job.recording, false);
    assert.equal(await job.run("j", () => Promise.resolve("done")), "done");
  } finally {
    await telemetry.shutdown();
  }
});

Deno.test("tracing: OTEL_SDK_DISABLED wins over an endpoint", async () => {
  const telemetry = await setupTelemetry({
    serviceName: "qlorad-test",
    env: new Map([
      ["OTEL_SDK_DISABLED", "true"],
      ["OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"],
      ["QLORAD_PROMETHEUS_PORT", "0"],
    ]),
  });
  assert.equal(telemetry.tracing, false);
  assert.equal(telemetry.metrics, false);
  assert.equal(tracingEnabled(), false);
  await telemetry.shutdown();
});
