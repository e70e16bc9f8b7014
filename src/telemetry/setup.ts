/**
 * OpenTelemetry setup from the standard OTEL_* environment variables (and
 * QLORAD_PROMETHEUS_PORT for a scrape endpoint). Nothing configured means nothing registered:
 * the API's no-op providers stay in place, the SDK is not even loaded, and the span and metric
 * helpers return at their first line.
 *
 * Traces go over OTLP/HTTP when OTEL_TRACES_EXPORTER says otlp or an OTLP endpoint is set;
 * metrics over OTLP/HTTP likewise (OTEL_METRICS_EXPORTER), and to a Prometheus scrape endpoint
 * when QLORAD_PROMETHEUS_PORT (or OTEL_METRICS_EXPORTER=prometheus) asks for one.
 *
 *   OTEL_SDK_DISABLED=true                      everything off
 *   OTEL_EXPORTER_OTLP_ENDPOINT                 base URL; /v1/traces and /v1/metrics appended
 *   OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT  full URL for one signal
 *   OTEL_EXPORTER_OTLP[_{TRACES,METRICS}]_PROTOCOL  http/protobuf (default) | http/json
 *   OTEL_EXPORTER_OTLP[_{TRACES,METRICS}]_HEADERS   k=v,k2=v2 (URL-encoded values)
 *   OTEL_EXPORTER_OTLP[_{TRACES,METRICS}]_TIMEOUT   ms
 *   OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER  otlp | console | none (metrics: prometheus)
 *   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
 *   OTEL_TRACES_SAMPLER(_ARG)                   always_on | always_off | traceidratio |
 *                                               parentbased_* (default parentbased_always_on)
 *   OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
 *   OTEL_BSP_EXPORT_TIMEOUT
 *   OTEL_METRIC_EXPORT_INTERVAL (default 60000 ms), OTEL_METRIC_EXPORT_TIMEOUT
 *   OTEL_LOG_LEVEL                              the SDK's own diagnostics to stderr
 *   QLORAD_PROMETHEUS_PORT, QLORAD_PROMETHEUS_HOST (default 0.0.0.0)   GET /metrics
 */
import {
  context,
  diag,
  DiagConsoleLogger,
  DiagLogLevel,
  metrics,
  propagation,
  trace,
} from "@opentelemetry/api";
import type { Attributes } from "@opentelemetry/api";
import { setTracingEnabled, TRACER_NAME } from "./tracing.ts";
import { METER_NAME, startMetrics, stopMetrics } from "./metrics.ts";

/** Where settings come from: Deno.env, or a Map in tests. */
export interface TelemetryEnv {
  get(name: string): string | undefined;
}

export interface TelemetryOptions {
  /** service.name unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names one. */
  serviceName: string;
  serviceVersion?: string;
  env?: TelemetryEnv;
  /** Configuration problems (a bad value is ignored with a warning). Default: stderr. */
  warn?: (message: string) => void;
}

export type OtlpProtocol = "http/protobuf" | "http/json";

export interface OtlpTarget {
  url: string;
  protocol: OtlpProtocol;
  headers: Record<string, string>;
  timeoutMillis?: number;
}

export type SamplerConfig =
  | { kind: "always_on" }
  | { kind: "always_off" }
  | { kind: "traceidratio"; ratio: number }
  | { kind: "parentbased"; root: "always_on" | "always_off" | "traceidratio"; ratio: number };

/** What the environment asks for; undefined signals are off. */
export interface TelemetryConfig {
  resource: Attributes;
  traces?: {
    otlp?: OtlpTarget;
    console: boolean;
    sampler: SamplerConfig;
    batch: {
      scheduledDelayMillis?: number;
      maxQueueSize?: number;
      maxExportBatchSize?: number;
      exportTimeoutMillis?: number;
    };
  };
  metrics?: {
    otlp?: OtlpTarget;
    console: boolean;
    prometheus?: { host: string; port: number };
    exportIntervalMillis: number;
    exportTimeoutMillis: number;
  };
  logLevel?: DiagLogLevel;
}

export interface Telemetry {
  readonly tracing: boolean;
  readonly metrics: boolean;
  /** The bound port of the Prometheus scrape endpoint, when one is served. */
  readonly prometheusPort?: number;
  /** One line for the log: what is exported where. */
  readonly description: string;
  /** Exports what is buffered now. */
  forceFlush(): Promise<void>;
  /**
   * Flushes, stops the exporters and the scrape endpoint, and unregisters the global providers.
   * Waits at most `timeoutMs` (default 5 s) for the last exports (a collector that is down must
   * not hold up a server's shutdown); the providers are unregistered either way.
   */
  shutdown(timeoutMs?: number): Promise<void>;
}

const DEFAULT_OTLP_BASE = "http://localhost:4318";
const DEFAULT_PROMETHEUS_PORT = 9464;

/** Reads the environment into a TelemetryConfig; no side effects. */
export function telemetryConfig(
  env: TelemetryEnv,
  serviceName: string,
  warn: (message: string) => void = () => {},
  serviceVersion?: string,
): TelemetryConfig {
  const get = (name: string) => {
    const v = env.get(name)?.trim();
    return v ? v : undefined;
  };
  const resource: Attributes = {
    ...parseKeyValues(get("OTEL_RESOURCE_ATTRIBUTES")),
  };
  resource["service.name"] = get("OTEL_SERVICE_NAME") ?? resource["service.name"] ?? serviceName;
  if (serviceVersion && resource["service.version"] === undefined) {
    resource["service.version"] = serviceVersion;
  }
  const config: TelemetryConfig = { resource };
  if (get("OTEL_SDK_DISABLED")?.toLowerCase() === "true") return config;

  const level = get("OTEL_LOG_LEVEL")?.toUpperCase();
  if (level) {
    const value = (DiagLogLevel as unknown as Record<string, number>)[level];
    if (typeof value === "number") config.logLevel = value;
    else warn(`OTEL_LOG_LEVEL ${JSON.stringify(level)}: not a level; ignored`);
  }

  const int = (name: string, min: number): number | undefined => {
    const raw = get(name);
    if (raw === undefined) return undefined;
    const n = Number(raw);
    if (Number.isInteger(n) && n >= min) return n;
    warn(`${name} ${JSON.stringify(raw)}: expected an integer >= ${min}; ignored`);
    return undefined;
  };

  const otlpTarget = (signal: "TRACES" | "METRICS", path: string): OtlpTarget | undefined => {
    const specific = get(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`);
    const base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
    const url = specific ?? (base ? joinUrl(base, path) : undefined);
    if (!url) return undefined;
    try {
      new URL(url);
    } catch {
      warn(`OTLP ${signal.toLowerCase()} endpoint ${JSON.stringify(url)}: not a URL; ignored`);
      return undefined;
    }
    const rawProtocol = get(`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`) ??
      get("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/protobuf";
    let protocol: OtlpProtocol = "http/protobuf";
    if (rawProtocol === "http/json") protocol = "http/json";
    else if (rawProtocol !== "http/protobuf") {
      warn(
        `OTLP protocol ${
          JSON.stringify(rawProtocol)
        }: not supported (http/protobuf or http/json); using http/protobuf (the OTLP/HTTP port is usually 4318)`,
      );
    }
    return {
      url,
      protocol,
      headers: {
        ...parseKeyValues(get("OTEL_EXPORTER_OTLP_HEADERS")),
        ...parseKeyValues(get(`OTEL_EXPORTER_OTLP_${signal}_HEADERS`)),
      },
      timeoutMillis: int(`OTEL_EXPORTER_OTLP_${signal}_TIMEOUT`, 1) ??
        int("OTEL_EXPORTER_OTLP_TIMEOUT", 1),
    };
  };

  const exporters = (name: string, allowed: string[]): Set<string> | undefined => {
    const raw = get(name);
    if (raw === undefined) return undefined;
    const out = new Set<string>();
    for (const e of raw.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean)) {
      if (allowed.includes(e)) out.add(e);
      else warn(`${name}: exporter ${JSON.stringify(e)} is not supported; ignored`);
    }
    out.delete("none");
    return out;
  };

  // Traces.
  const tracesAsked = exporters("OTEL_TRACES_EXPORTER", ["otlp", "console", "none"]);
  let traceTarget = otlpTarget("TRACES", "v1/traces");
  if (tracesAsked && !tracesAsked.has("otlp")) traceTarget = undefined;
  else if (tracesAsked?.has("otlp") && !traceTarget) {
    traceTarget = { url: `${DEFAULT_OTLP_BASE}/v1/traces`, protocol: "http/protobuf", headers: {} };
  }
  const traceConsole = tracesAsked?.has("console") ?? false;
  if (traceTarget || traceConsole) {
    config.traces = {
      otlp: traceTarget,
      console: traceConsole,
      sampler: parseSampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"), warn),
      batch: {
        scheduledDelayMillis: int("OTEL_BSP_SCHEDULE_DELAY", 0),
        maxQueueSize: int("OTEL_BSP_MAX_QUEUE_SIZE", 1),
        maxExportBatchSize: int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1),
        exportTimeoutMillis: int("OTEL_BSP_EXPORT_TIMEOUT", 1),
      },
    };
  }

  // Metrics.
  const metricsAsked = exporters("OTEL_METRICS_EXPORTER", [
    "otlp",
    "prometheus",
    "console",
    "none",
  ]);
  let metricTarget = otlpTarget("METRICS", "v1/metrics");
  if (metricsAsked && !metricsAsked.has("otlp")) metricTarget = undefined;
  else if (metricsAsked?.has("otlp") && !metricTarget) {
    metricTarget = {
      url: `${DEFAULT_OTLP_BASE}/v1/metrics`,
      protocol: "http/protobuf",
      headers: {},
    };
  }
  // QLORAD_PROMETHEUS_PORT alone turns the scrape endpoint on; 0 picks a free port.
  const qloradPort = get("QLORAD_PROMETHEUS_PORT");
  let prometheus: { host: string; port: number } | undefined;
  if (qloradPort !== undefined || metricsAsked?.has("prometheus")) {
    const port = qloradPort !== undefined
      ? int("QLORAD_PROMETHEUS_PORT", 0)
      : int("OTEL_EXPORTER_PROMETHEUS_PORT", 0) ?? DEFAULT_PROMETHEUS_PORT;
    if (port !== undefined && port <= 65535) {
      const host = get("QLORAD_PROMETHEUS_HOST") ?? get("OTEL_EXPORTER_PROMETHEUS_HOST") ??
        "0.0.0.0";
      prometheus = { host, port };
    } else if (port !== undefined) {
      warn(`Prometheus port ${port}: out of range; no scrape endpoint`);
    }
  }
  const metricConsole = metricsAsked?.has("console") ?? false;
  if (metricTarget || prometheus || metricConsole) {
    config.metrics = {
      otlp: metricTarget,
      console: metricConsole,
      prometheus,
      exportIntervalMillis: int("OTEL_METRIC_EXPORT_INTERVAL", 1) ?? 60_000,
      exportTimeoutMillis: int("OTEL_METRIC_EXPORT_TIMEOUT", 1) ?? 30_000,
    };
  }
  return config;
}

/** `base` + "/" + `path`, with one slash between. */
function joinUrl(base: string, path: string): string {
  return base.replace(/\/+$/, "") + "/" + path;
}

/** `k=v,k2=v2` with URL-encoded keys and values (W3C Baggage style, as OTEL_* uses). */
export function parseKeyValues(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const part of raw.split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    try {
      const key = decodeURIComponent(part.slice(0, eq).trim());
      const value = decodeURIComponent(part.slice(eq + 1).trim());
      if (key) out[key] = value;
    } catch {
      // a malformed %-escape: skip the pair
    }
  }
  return out;
}

function parseSampler(
  name: string | undefined,
  arg: string | undefined,
  warn: (message: string) => void,
): SamplerConfig {
  const ratio = (() => {
    if (arg === undefined) return 1;
    const r = Number(arg);
    if (Number.isFinite(r) && r >= 0 && r <= 1) return r;
    warn(`OTEL_TRACES_SAMPLER_ARG ${JSON.stringify(arg)}: expected a ratio in [0, 1]; using 1`);
    return 1;
  })();
  switch ((name ?? "parentbased_always_on").toLowerCase()) {
    case "always_on":
      return { kind: "always_on" };
    case "always_off":
      return { kind: "always_off" };
    case "traceidratio":
      return { kind: "traceidratio", ratio };
    case "parentbased_always_on":
      return { kind: "parentbased", root: "always_on", ratio };
    case "parentbased_always_off":
      return { kind: "parentbased", root: "always_off", ratio };
    case "parentbased_traceidratio":
      return { kind: "parentbased", root: "traceidratio", ratio };
    default:
      warn(
        `OTEL_TRACES_SAMPLER ${JSON.stringify(name)}: not supported; using parentbased_always_on`,
      );
      return { kind: "parentbased", root: "always_on", ratio };
  }
}

let active = false;

/**
 * Registers the global tracer and meter providers the environment asks for (none when nothing is
 * configured). One setup at a time: shut it down before setting up again.
 */
export async function setupTelemetry(opts: TelemetryOptions): Promise<Telemetry> {
  const warn = opts.warn ?? ((m: string) => console.error(`qlorad: telemetry: ${m}`));
  const config = telemetryConfig(opts.env ?? Deno.env, opts.serviceName, warn, opts.serviceVersion);
  if (!config.traces && !config.metrics) {
    return {
      tracing: false,
      metrics: false,
      description: "telemetry off",
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
    };
  }
  if (active) throw new Error("telemetry is already set up; shut it down first");
  active = true;
  try {
    return await start(config, warn);
  } catch (err) {
    active = false;
    throw err;
  }
}

/** A started signal: `stop` flushes and shuts its provider down; `unregister` drops the globals. */
interface Part {
  stop(): Promise<void>;
  unregister(): void;
}

async function start(config: TelemetryConfig, warn: (m: string) => void): Promise<Telemetry> {
  if (config.logLevel !== undefined) diag.setLogger(new DiagConsoleLogger(), config.logLevel);
  const { resourceFromAttributes, defaultResource } = await import("@opentelemetry/resources");
  const resource = defaultResource().merge(
    resourceFromAttributes({
      "service.instance.id": crypto.randomUUID(),
      ...config.resource,
    }),
  );
  const started: Part[] = [];
  const flushes: Array<() => Promise<void>> = [];
  const parts: string[] = [];
  let prometheusPort: number | undefined;

  try {
    if (config.traces) {
      const t = config.traces;
      const sdk = await import("@opentelemetry/sdk-trace");
      const { AsyncLocalStorageContextManager } = await import(
        "@opentelemetry/context-async-hooks"
      );
      const core = await import("@opentelemetry/core");
      const processors = [];
      if (t.otlp) {
        const exporter = await traceExporter(t.otlp);
        processors.push(new sdk.BatchSpanProcessor({ exporter, ...definedOnly(t.batch) }));
        parts.push(`traces -> ${t.otlp.url} (${t.otlp.protocol})`);
      }
      if (t.console) {
        processors.push(new sdk.SimpleSpanProcessor({ exporter: new sdk.ConsoleSpanExporter() }));
        parts.push("traces -> console");
      }
      const simple = (kind: "always_on" | "always_off" | "traceidratio", r: number) =>
        kind === "always_on"
          ? new sdk.AlwaysOnSampler()
          : kind === "always_off"
          ? new sdk.AlwaysOffSampler()
          : new sdk.TraceIdRatioBasedSampler(r);
      const s = t.sampler;
      const sampler = s.kind === "parentbased"
        ? new sdk.ParentBasedSampler({ root: simple(s.root, s.ratio) })
        : simple(s.kind, s.kind === "traceidratio" ? s.ratio : 1);
      const provider = new sdk.TracerProvider({ resource, sampler, spanProcessors: processors });
      const part: Part = {
        stop: () => provider.shutdown(),
        unregister: () => {
          setTracingEnabled(false);
          trace.disable();
          propagation.disable();
          context.disable();
        },
      };
      started.push(part);
      const registered = context.setGlobalContextManager(
        new AsyncLocalStorageContextManager().enable(),
      ) &&
        propagation.setGlobalPropagator(
          new core.CompositePropagator({
            propagators: [new core.W3CTraceContextPropagator(), new core.W3CBaggagePropagator()],
          }),
        ) &&
        trace.setGlobalTracerProvider(provider);
      if (!registered) throw new Error("another OpenTelemetry tracer provider is registered");
      trace.getTracer(TRACER_NAME);
      setTracingEnabled(true);
      flushes.push(() => provider.forceFlush());
    }

    if (config.metrics) {
      const m = config.metrics;
      const sdk = await import("@opentelemetry/sdk-metrics");
      const readers = [];
      if (m.otlp) {
        readers.push(
          new sdk.PeriodicExportingMetricReader({
            exporter: await metricExporter(m.otlp),
            exportIntervalMillis: m.exportIntervalMillis,
            exportTimeoutMillis: Math.min(m.exportTimeoutMillis, m.exportIntervalMillis),
          }),
        );
        parts.push(
          `metrics -> ${m.otlp.url} (${m.otlp.protocol}, every ${m.exportIntervalMillis} ms)`,
        );
      }
      if (m.console) {
        readers.push(
          new sdk.PeriodicExportingMetricReader({
            exporter: new sdk.ConsoleMetricExporter(),
            exportIntervalMillis: m.exportIntervalMillis,
            exportTimeoutMillis: Math.min(m.exportTimeoutMillis, m.exportIntervalMillis),
          }),
        );
        parts.push("metrics -> console");
      }
      let scrape: Deno.HttpServer<Deno.NetAddr> | undefined;
      if (m.prometheus) {
        const prom = await import("@opentelemetry/exporter-prometheus");
        const reader = new prom.PrometheusExporter({ preventServerStart: true });
        const serializer = new prom.PrometheusSerializer();
        readers.push(reader);
        scrape = Deno.serve({
          hostname: m.prometheus.host,
          port: m.prometheus.port,
          onListen: () => {},
        }, async (req) => {
          if (new URL(req.url).pathname !== "/metrics") {
            return new Response("not found; metrics are at /metrics\n", { status: 404 });
          }
          const { resourceMetrics, errors } = await reader.collect();
          if (errors.length) diag.error("prometheus: metric collection errors", ...errors);
          return new Response(serializer.serialize(resourceMetrics), {
            headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
          });
        });
        prometheusPort = scrape.addr.port;
        parts.push(`metrics -> http://${m.prometheus.host}:${prometheusPort}/metrics`);
      }
      const provider = new sdk.MeterProvider({ resource, readers });
      started.push({
        stop: async () => {
          await scrape?.shutdown();
          await provider.shutdown();
        },
        unregister: () => {
          stopMetrics();
          metrics.disable();
        },
      });
      if (!metrics.setGlobalMeterProvider(provider)) {
        throw new Error("another OpenTelemetry meter provider is registered");
      }
      startMetrics(metrics.getMeter(METER_NAME));
      flushes.push(() => provider.forceFlush());
    }
  } catch (err) {
    await stopAll(started, 5_000);
    diag.disable();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    tracing: config.traces !== undefined,
    metrics: config.metrics !== undefined,
    prometheusPort,
    description: `telemetry: ${parts.join("; ")}`,
    forceFlush: async () => {
      await Promise.all(flushes.map((f) => f()));
    },
    shutdown: (timeoutMs = 5_000) =>
      stopping ??= (async () => {
        const outcome = await stopAll(started, timeoutMs);
        diag.disable();
        active = false;
        if (outcome === "timeout") {
          warn(`the last exports did not finish within ${timeoutMs} ms; dropped`);
        } else if (outcome) throw outcome;
      })(),
  };
}

/**
 * Stops every part (no new spans or measurements from the moment this is called), waits for
 * their last exports at most `timeoutMs`, and unregisters the globals. Resolves to the first
 * error, "timeout", or undefined.
 */
async function stopAll(parts: Part[], timeoutMs: number): Promise<unknown> {
  setTracingEnabled(false);
  stopMetrics();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const results = await Promise.race([Promise.allSettled(parts.map((p) => p.stop())), timeout]);
  clearTimeout(timer);
  for (const p of parts) p.unregister();
  if (results === "timeout") return "timeout";
  return results.find((r): r is PromiseRejectedResult => r.status === "rejected")?.reason;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

async function traceExporter(t: OtlpTarget) {
  const options = { url: t.url, headers: t.headers, timeoutMillis: t.timeoutMillis };
  if (t.protocol === "http/json") {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    return new OTLPTraceExporter(options);
  }
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
  return new OTLPTraceExporter(options);
}

async function metricExporter(t: OtlpTarget) {
  const options = { url: t.url, headers: t.headers, timeoutMillis: t.timeoutMillis };
  if (t.protocol === "http/json") {
    const { OTLPMetricExporter } = await import("@opentelemetry/exporter-metrics-otlp-http");
    return new OTLPMetricExporter(options);
  }
  const { OTLPMetricExporter } = await import("@opentelemetry/exporter-metrics-otlp-proto");
  return new OTLPMetricExporter(options);
}
