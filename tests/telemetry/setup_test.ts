/**
 * setupTelemetry's reading of the standard OTEL_* variables (telemetryConfig, no side effects),
 * and the default OTLP protocol (http/protobuf) reaching a local receiver at the signal URL.
 */
import assert from "node:assert/strict";
import { trace } from "@opentelemetry/api";
import { parseKeyValues, setupTelemetry, telemetryConfig } from "../../src/telemetry/setup.ts";
import { startOtlpReceiver } from "./otlp_receiver.ts";

function config(vars: Record<string, string>) {
  const warnings: string[] = [];
  const c = telemetryConfig(new Map(Object.entries(vars)), "qlorad", (w) => warnings.push(w));
  return { c, warnings };
}

Deno.test("setup: nothing configured asks for nothing", () => {
  const { c, warnings } = config({});
  assert.equal(c.traces, undefined);
  assert.equal(c.metrics, undefined);
  assert.deepEqual(c.resource, { "service.name": "qlorad" });
  assert.deepEqual(warnings, []);
  // Blank values count as unset.
  assert.equal(config({ OTEL_EXPORTER_OTLP_ENDPOINT: "  " }).c.traces, undefined);
});

Deno.test("setup: the generic endpoint gets /v1/<signal>; a signal endpoint is used as is", () => {
  const { c } = config({
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/",
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://metrics:9000/custom/path",
    OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20abc,x-team=ml",
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-team=tracing",
    OTEL_EXPORTER_OTLP_TIMEOUT: "2500",
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
  });
  assert.equal(c.traces?.otlp?.url, "http://collector:4318/v1/traces");
  assert.equal(c.traces?.otlp?.protocol, "http/protobuf");
  assert.deepEqual(c.traces?.otlp?.headers, { authorization: "Bearer abc", "x-team": "tracing" });
  assert.equal(c.traces?.otlp?.timeoutMillis, 2500);
  assert.equal(c.metrics?.otlp?.url, "http://metrics:9000/custom/path");
  assert.equal(c.metrics?.otlp?.protocol, "http/json");
  assert.deepEqual(c.metrics?.otlp?.headers, { authorization: "Bearer abc", "x-team": "ml" });
  assert.equal(c.metrics?.exportIntervalMillis, 60_000);
  assert.equal(c.metrics?.prometheus, undefined);
  assert.deepEqual(c.traces?.sampler, { kind: "parentbased", root: "always_on", ratio: 1 });
});

Deno.test("setup: exporters, sampler, resource and the Prometheus port", () => {
  const { c, warnings } = config({
    OTEL_TRACES_EXPORTER: "otlp",
    OTEL_METRICS_EXPORTER: "none",
    OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
    OTEL_TRACES_SAMPLER_ARG: "0.25",
    OTEL_SERVICE_NAME: "qlorad-prod",
    OTEL_RESOURCE_ATTRIBUTES: "service.name=ignored,k8s.pod.name=qlorad-0,note=a%2Cb",
    OTEL_BSP_SCHEDULE_DELAY: "200",
    OTEL_METRIC_EXPORT_INTERVAL: "not a number",
  });
  // otlp without an endpoint: the spec's default.
  assert.equal(c.traces?.otlp?.url, "http://localhost:4318/v1/traces");
  assert.deepEqual(c.traces?.sampler, { kind: "parentbased", root: "traceidratio", ratio: 0.25 });
  assert.equal(c.traces?.batch.scheduledDelayMillis, 200);
  assert.equal(c.metrics, undefined);
  assert.deepEqual(c.resource, {
    "service.name": "qlorad-prod",
    "k8s.pod.name": "qlorad-0",
    note: "a,b",
  });
  assert.deepEqual(warnings, []); // the bad interval is only read when metrics are on

  const prom = config({ QLORAD_PROMETHEUS_PORT: "9464", OTEL_METRIC_EXPORT_INTERVAL: "x" });
  assert.deepEqual(prom.c.metrics?.prometheus, { host: "0.0.0.0", port: 9464 });
  assert.equal(prom.c.metrics?.otlp, undefined);
  assert.equal(prom.c.traces, undefined);
  assert.equal(prom.c.metrics?.exportIntervalMillis, 60_000);
  assert.equal(prom.warnings.length, 1);
  assert.match(prom.warnings[0], /OTEL_METRIC_EXPORT_INTERVAL/);

  const std = config({
    OTEL_METRICS_EXPORTER: "prometheus",
    OTEL_EXPORTER_PROMETHEUS_PORT: "9100",
  });
  assert.deepEqual(std.c.metrics?.prometheus, { host: "0.0.0.0", port: 9100 });

  const bad = config({
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317",
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
    OTEL_TRACES_SAMPLER: "sometimes",
    QLORAD_PROMETHEUS_PORT: "99999",
  });
  assert.equal(bad.c.traces?.otlp?.protocol, "http/protobuf");
  assert.deepEqual(bad.c.traces?.sampler, { kind: "parentbased", root: "always_on", ratio: 1 });
  assert.equal(bad.c.metrics?.prometheus, undefined);
  assert.equal(bad.warnings.filter((w) => /protocol "grpc"/.test(w)).length, 2); // both signals
  assert.ok(bad.warnings.some((w) => /OTEL_TRACES_SAMPLER "sometimes"/.test(w)));
  assert.ok(bad.warnings.some((w) => /99999/.test(w)));

  const off = config({ OTEL_SDK_DISABLED: "TRUE", OTEL_TRACES_EXPORTER: "otlp" });
  assert.equal(off.c.traces, undefined);
  assert.equal(off.c.metrics, undefined);
});

Deno.test("setup: parseKeyValues decodes and skips malformed pairs", () => {
  assert.deepEqual(parseKeyValues("a=1, b = two%20words ,=x,c,d=%zz,e=f=g"), {
    a: "1",
    b: "two words",
    e: "f=g",
  });
  assert.deepEqual(parseKeyValues(undefined), {});
});

Deno.test("setup: http/protobuf by default, to the signal URL; shutdown unregisters", async () => {
  const receiver = startOtlpReceiver();
  const telemetry = await setupTelemetry({
    serviceName: "qlorad-test",
    env: new Map([["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", `${receiver.url}/v1/traces`]]),
  });
  try {
    assert.equal(telemetry.tracing, true);
    assert.equal(telemetry.metrics, false);
    await assert.rejects(
      setupTelemetry({ serviceName: "x", env: new Map([["OTEL_TRACES_EXPORTER", "otlp"]]) }),
      /already set up/,
    );
    const span = trace.getTracer("qlorad").startSpan("probe");
    assert.equal(span.isRecording(), true);
    span.end();
    await telemetry.forceFlush();
    assert.equal(receiver.requests.length, 1);
    assert.equal(receiver.requests[0].path, "/v1/traces");
    assert.equal(receiver.requests[0].contentType, "application/x-protobuf");
    assert.ok(receiver.requests[0].bytes > 0);
    await telemetry.shutdown();
    assert.equal(trace.getTracer("qlorad").startSpan("after").isRecording(), false);
  } finally {
    await telemetry.shutdown();
    await receiver.close();
  }
});

Deno.test({
  name: "setup: shutdown gives up on a collector that never answers, and still unregisters",
  // The abandoned export request is still open when the test body ends.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // Accepts connections and never answers.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const c of listener) conns.push(c);
    })();
    const warnings: string[] = [];
    const telemetry = await setupTelemetry({
      serviceName: "qlorad-test",
      warn: (w) => warnings.push(w),
      env: new Map([
        ["OTEL_EXPORTER_OTLP_ENDPOINT", `http://127.0.0.1:${listener.addr.port}`],
        ["OTEL_EXPORTER_OTLP_TIMEOUT", "60000"],
        ["OTEL_METRICS_EXPORTER", "none"],
      ]),
    });
    try {
      trace.getTracer("qlorad").startSpan("stuck").end();
      await telemetry.shutdown(100);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /did not finish within 100 ms/);
      assert.equal(trace.getTracer("qlorad").startSpan("after").isRecording(), false);
      // A new setup is allowed at once.
      const again = await setupTelemetry({
        serviceName: "x",
        env: new Map([
          ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces"],
          ["OTEL_METRICS_EXPORTER", "none"],
        ]),
      });
      assert.equal(again.tracing, true);
      await again.shutdown(); // nothing was recorded, so nothing is sent
    } finally {
      listener.close();
      for (const c of conns) c.close();
      await accepting.catch(() => {});
    }
  },
});
