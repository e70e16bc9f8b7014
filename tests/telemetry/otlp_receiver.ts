/**
 * A local OTLP/HTTP receiver for tests: accepts POST /v1/traces and /v1/metrics, decodes JSON
 * bodies (the exporters' http/json protocol) and keeps what arrived, spans flattened. Protobuf
 * bodies are accepted and counted, not decoded.
 */

/** An OTLP attribute value, as the JSON encoding writes it. */
// deno-lint-ignore no-explicit-any
type AnyValue = Record<string, any>;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client. */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, unknown>;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  statusCode: number;
  resource: Record<string, unknown>;
  scope: string;
}

export interface OtlpReceiver {
  /** e.g. http://127.0.0.1:43123 */
  url: string;
  spans: ReceivedSpan[];
  /** Metric names per export request, in arrival order. */
  metricNames: string[][];
  /** Every request: path, content type, body size. */
  requests: Array<{ path: string; contentType: string; bytes: number }>;
  close(): Promise<void>;
}

function valueOf(v: AnyValue | undefined): unknown {
  if (!v) return undefined;
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) return Number(v.intValue);
  if ("doubleValue" in v) return v.doubleValue;
  if ("boolValue" in v) return v.boolValue;
  if ("arrayValue" in v) return (v.arrayValue.values ?? []).map(valueOf);
  return undefined;
}

function attributesOf(list: Array<{ key: string; value: AnyValue }> = []): Record<string, unknown> {
  return Object.fromEntries(list.map((a) => [a.key, valueOf(a.value)]));
}

export function startOtlpReceiver(): OtlpReceiver {
  const spans: ReceivedSpan[] = [];
  const metricNames: string[][] = [];
  const requests: OtlpReceiver["requests"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    const contentType = req.headers.get("content-type") ?? "";
    const raw = new Uint8Array(await req.arrayBuffer());
    requests.push({ path, contentType, bytes: raw.byteLength });
    if (req.method !== "POST") return new Response("POST only", { status: 405 });
    if (contentType.startsWith("application/x-protobuf")) return new Response(null);
    if (!contentType.startsWith("application/json")) {
      return new Response("json or protobuf only", { status: 415 });
    }
    const body = JSON.parse(new TextDecoder().decode(raw));
    if (path === "/v1/traces") {
      for (const rs of body.resourceSpans ?? []) {
        const resource = attributesOf(rs.resource?.attributes);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? "",
              name: s.name,
              kind: s.kind,
              startNs: BigInt(s.startTimeUnixNano),
              endNs: BigInt(s.endTimeUnixNano),
              attributes: attributesOf(s.attributes),
              statusCode: s.status?.code ?? 0,
              resource,
              scope: ss.scope?.name ?? "",
            });
          }
        }
      }
    } else if (path === "/v1/metrics") {
      const names: string[] = [];
      for (const rm of body.resourceMetrics ?? []) {
        for (const sm of rm.scopeMetrics ?? []) {
          for (const m of sm.metrics ?? []) names.push(m.name);
        }
      }
      metricNames.push(names);
    } else {
      return new Response("not found", { status: 404 });
    }
    return Response.json({});
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    spans,
    metricNames,
    requests,
    close: () => server.shutdown(),
  };
}
