/**
 * Metrics: the Prometheus scrape endpoint (QLORAD_PROMETHEUS_PORT=0 on loopback) shows every
 * instrument with the values recorded and observed, and the same instruments reach a local OTLP
 * receiver over http/json.
 */
import assert from "node:assert/strict";
import { setupTelemetry } from "../../src/telemetry/setup.ts";
import {
  metricsEnabled,
  observeGpuMemory,
  observeJobs,
  recordEval,
  recordGpuKernel,
  recordQuantizedTensor,
  recordRpc,
  recordTrainStep,
} from "../../src/telemetry/metrics.ts";
import type { MemoryBytes } from "../../src/gpu/memory.ts";
import { startOtlpReceiver } from "./otlp_receiver.ts";

/** Prometheus text: `name{labels} value` lines -> value by `name{labels}` (labels sorted). */
function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not an exposition line: ${line}`);
    const labels = (m[2] ?? "").match(/\w+="(?:[^"\\]|\\.)*"/g) ?? [];
    const kept = labels.filter((l) => !l.startsWith("otel_scope_")).sort();
    out.set(`${m[1]}{${kept.join(",")}}`, Number(m[3]));
  }
  return out;
}

Deno.test({
  name: "metrics: the scrape endpoint and OTLP show the instruments",
  fn: async () => {
    const receiver = startOtlpReceiver();
    const telemetry = await setupTelemetry({
      serviceName: "qlorad-test",
      env: new Map([
        ["QLORAD_PROMETHEUS_PORT", "0"],
        ["QLORAD_PROMETHEUS_HOST", "127.0.0.1"],
        ["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", `${receiver.url}/v1/metrics`],
        ["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"],
        // Exported by forceFlush below, not by the timer.
        ["OTEL_METRIC_EXPORT_INTERVAL", "600000"],
      ]),
    });
    const unobserve = observeJobs(() => [
      { kind: "train", state: "QUEUED" },
      { kind: "train", state: "QUEUED" },
      { kind: "quantize", state: "RUNNING" },
      { kind: "evaluate", state: "FAILED" },
      { kind: "train", state: "SUCCEEDED" },
    ]);
    const memory: MemoryBytes = {
      base_weights: 287_495,
      lora: 12_288,
      gradients: 12_288,
      optimizer: 24_576,
      activations: 1_040_384,
      scratch: 272,
    };
    observeGpuMemory({ current: () => memory });
    try {
      assert.equal(telemetry.tracing, false);
      assert.equal(telemetry.metrics, true);
      assert.equal(metricsEnabled(), true);
      const port = telemetry.prometheusPort;
      assert.ok(port && port > 0);

      recordTrainStep({ seconds: 0.75, tokens: 96, tokensPerSecond: 128, loss: 2.875 });
      recordTrainStep({ seconds: 0.25, tokens: 64, tokensPerSecond: 256, loss: 2.5 });
      recordEval(1.625);
      recordRpc("qlorad.v1.QLoRA/Quantize", 0, 0.125);
      recordRpc("qlorad.v1.QLoRA/Quantize", 0, 0.5);
      recordRpc("qlorad.v1.QLoRA/GetJob", 5, 0.001);
      recordGpuKernel("micro-batch", 0.003, "wall");
      recordGpuKernel("adamw", 0.0005, "wall");
      recordQuantizedTensor(true, 4560);
      recordQuantizedTensor(false, 160);
      recordQuantizedTensor(true, 2910);

      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      const m = parseExposition(await res.text());
      const expect = (key: string, value: number) => assert.equal(m.get(key), value, key);

      expect('qlorad_jobs{qlorad_job_kind="train",qlorad_job_state="QUEUED"}', 2);
      expect('qlorad_jobs{qlorad_job_kind="train",qlorad_job_state="SUCCEEDED"}', 1);
      expect('qlorad_jobs{qlorad_job_kind="train",qlorad_job_state="RUNNING"}', 0);
      expect('qlorad_jobs{qlorad_job_kind="quantize",qlorad_job_state="RUNNING"}', 1);
      expect('qlorad_jobs{qlorad_job_kind="evaluate",qlorad_job_state="FAILED"}', 1);
      expect('qlorad_jobs{qlorad_job_kind="evaluate",qlorad_job_state="CANCELLED"}', 0);
      expect("qlorad_jobs_queue_depth{}", 2);
      for (const [category, bytes] of Object.entries(memory)) {
        expect(`qlorad_gpu_memory_usage{qlorad_memory_category="${category}"}`, bytes);
      }
      expect("qlorad_train_step_duration_count{}", 2);
      expect("qlorad_train_step_duration_sum{}", 1);
      expect('qlorad_train_step_duration_bucket{le="0.5"}', 1);
      expect('qlorad_train_step_duration_bucket{le="1"}', 2);
      expect("qlorad_train_tokens_total{}", 160);
      expect("qlorad_train_tokens_per_second{}", 256);
      expect("qlorad_train_loss{}", 2.5);
      expect("qlorad_eval_loss{}", 1.625);
      const quantize =
        'rpc_grpc_status_code="0",rpc_method="Quantize",rpc_service="qlorad.v1.QLoRA"';
      expect(`qlorad_rpc_server_calls_total{${quantize}}`, 2);
      expect(`rpc_server_call_duration_count{${quantize}}`, 2);
      expect(`rpc_server_call_duration_sum{${quantize}}`, 0.625);
      expect(
        'qlorad_rpc_server_calls_total{rpc_grpc_status_code="5",rpc_method="GetJob",rpc_service="qlorad.v1.QLoRA"}',
        1,
      );
      expect(
        'qlorad_gpu_kernel_duration_count{qlorad_kernel_family="micro-batch",qlorad_timing_method="wall"}',
        1,
      );
      expect(
        'qlorad_gpu_kernel_duration_sum{qlorad_kernel_family="adamw",qlorad_timing_method="wall"}',
        0.0005,
      );
      expect('qlorad_quantize_tensors_total{qlorad_quantized="true"}', 2);
      expect('qlorad_quantize_tensors_total{qlorad_quantized="false"}', 1);
      expect('qlorad_quantize_output_total{qlorad_quantized="true"}', 7470);

      const other = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(other.status, 404);
      await other.body?.cancel();

      // The same instruments over OTLP.
      await telemetry.forceFlush();
      const names = new Set(receiver.metricNames.flat());
      for (
        const name of [
          "qlorad.jobs",
          "qlorad.jobs.queue.depth",
          "qlorad.gpu.memory.usage",
          "qlorad.train.step.duration",
          "qlorad.train.tokens_per_second",
          "qlorad.train.loss",
          "qlorad.train.tokens",
          "qlorad.eval.loss",
          "qlorad.rpc.server.calls",
          "rpc.server.call.duration",
          "qlorad.gpu.kernel.duration",
          "qlorad.quantize.tensors",
        ]
      ) assert.ok(names.has(name), `${name} not exported over OTLP (got ${[...names]})`);

      await telemetry.shutdown();
      assert.equal(metricsEnabled(), false);
      // The scrape endpoint is gone with the provider.
      await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`));
    } finally {
      unobserve();
      observeGpuMemory(undefined);
      await telemetry.shutdown();
      await receiver.close();
    }
  },
});

Deno.test("metrics: with telemetry off, recording is a no-op", () => {
  assert.equal(metricsEnabled(), false);
  recordTrainStep({ seconds: 1, tokens: 1, tokensPerSecond: 1, loss: 1 });
  recordRpc("qlorad.v1.QLoRA/GetJob", 0, 0.001);
  recordGpuKernel("fill", 0.001, "wall");
});
