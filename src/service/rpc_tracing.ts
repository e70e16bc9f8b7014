/**
 * Spans for qlorad's RPCs: one SERVER span per call that continues the caller's W3C trace context
 * from the gRPC metadata (`traceparent`, `tracestate`) and records the call's status, and the RPC
 * metrics. It lives in src/service because it knows gRPC; the job spans under these RPC spans are
 * src/telemetry/tracing.ts.
 *
 * With tracing and metrics off, a wrapped handler is called as it is, and rpcSpan runs the handler
 * directly.
 */
import {
  type Attributes,
  type Context,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import type {
  Metadata,
  sendUnaryData,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  ServiceError,
  UntypedHandleCall,
} from "@grpc/grpc-js";
import { status as grpcStatus } from "@grpc/grpc-js";
import { ATTR, metricsEnabled, recordRpc } from "../telemetry/metrics.ts";
import { nowMs, tracer, tracingEnabled } from "../telemetry/tracing.ts";

/** The service whose methods wrapHandlers names spans after, unless given a definition. */
export const RPC_SERVICE = "qlorad.v1.QLoRA";

/** Reads propagation headers from gRPC metadata (keys are lower case there, as in W3C). */
export const metadataGetter: TextMapGetter<Metadata> = {
  keys: (md) => Object.keys(md.getMap()),
  get(md, key) {
    const values = md.get(key.toLowerCase()).map((v) => typeof v === "string" ? v : v.toString());
    if (values.length === 0) return undefined;
    return values.length === 1 ? values[0] : values;
  },
};

/** The caller's context from the metadata (the active context when nothing was propagated). */
export function extractContext(metadata: Metadata): Context {
  return propagation.extract(context.active(), metadata, metadataGetter);
}

/** Ends an RPC's span once with a gRPC status code; later calls are ignored. */
export type EndRpc = (code: grpcStatus, details?: string) => void;

/**
 * Runs `fn` inside a new SERVER span `<method>` (e.g. `qlorad.v1.QLoRA/Quantize`) whose parent is
 * the caller's span from `metadata`. `fn` ends the span through `end` when the call finishes (a
 * stream ends after fn returns); a throw or rejection ends it UNKNOWN. `end` also counts the call
 * in the RPC metrics, so those work with tracing off.
 */
export function rpcSpan<T>(
  method: string,
  metadata: Metadata,
  fn: (end: EndRpc, span: Span | undefined) => T,
  attributes: Attributes = {},
): T {
  const started = performance.now();
  const parent = tracingEnabled() ? extractContext(metadata) : undefined;
  const slash = method.lastIndexOf("/");
  const span = parent
    ? tracer().startSpan(method, {
      kind: SpanKind.SERVER,
      startTime: nowMs(),
      attributes: {
        [ATTR.rpcSystem]: "grpc",
        [ATTR.rpcService]: slash >= 0 ? method.slice(0, slash) : RPC_SERVICE,
        [ATTR.rpcMethod]: slash >= 0 ? method.slice(slash + 1) : method,
        ...attributes,
      },
    }, parent)
    : undefined;
  let ended = false;
  const end: EndRpc = (code, details) => {
    if (ended) return;
    ended = true;
    recordRpc(method, code, (performance.now() - started) / 1000);
    if (!span) return;
    span.setAttribute(ATTR.rpcStatus, code);
    // Server spans: only server-side faults are errors (OpenTelemetry's gRPC conventions).
    if (SERVER_FAULTS.has(code)) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: details ?? grpcStatus[code] });
    }
    span.end(nowMs());
  };
  const guarded = (): T => {
    try {
      const out = fn(end, span);
      if (out instanceof Promise) {
        out.catch((err) => {
          span?.recordException(err as Error);
          end(grpcStatus.UNKNOWN, String((err as Error)?.message ?? err));
        });
      }
      return out;
    } catch (err) {
      span?.recordException(err as Error);
      end(grpcStatus.UNKNOWN, String((err as Error)?.message ?? err));
      throw err;
    }
  };
  if (!parent || !span) return guarded();
  return context.with(trace.setSpan(parent, span), guarded);
}

const SERVER_FAULTS = new Set<grpcStatus>([
  grpcStatus.UNKNOWN,
  grpcStatus.DEADLINE_EXCEEDED,
  grpcStatus.UNIMPLEMENTED,
  grpcStatus.INTERNAL,
  grpcStatus.UNAVAILABLE,
  grpcStatus.DATA_LOSS,
]);

/** `network.peer.*` from grpc-js's peer string ("127.0.0.1:5000", "[::1]:5000"). */
function peerAttributes(peer: string | undefined): Attributes {
  if (!peer) return {};
  const m = /^(?:ipv[46]:)?\[?([^\]]*?)\]?:(\d+)$/.exec(peer);
  return m
    ? { "network.peer.address": m[1], "network.peer.port": Number(m[2]) }
    : { "network.peer.address": peer };
}

function peerOf(call: { getPeer(): string }): string | undefined {
  try {
    return call.getPeer();
  } catch {
    return undefined;
  }
}

/**
 * Wraps each unary and server-streaming handler so that a span covers the call and records its
 * status (client-streaming and bidi handlers are passed through). The span is named after the
 * method's path in `definition` when given (what server.addService gets), else
 * `<service>/<key>`; without a definition a handler's arity tells unary `(call, callback)` from
 * streaming `(call)`.
 */
export function wrapHandlers(
  handlers: Record<string, UntypedHandleCall>,
  definition?: ServiceDefinition,
  service = RPC_SERVICE,
): Record<string, UntypedHandleCall> {
  const out: Record<string, UntypedHandleCall> = {};
  for (const [key, handler] of Object.entries(handlers)) {
    const def = definition?.[key];
    const method = def ? def.path.replace(/^\//, "") : `${service}/${key}`;
    const h = handler as (...args: unknown[]) => unknown;
    if (def ? def.requestStream : false) {
      out[key] = handler;
    } else if (def ? !def.responseStream : h.length >= 2) {
      out[key] = wrapUnary(method, h) as UntypedHandleCall;
    } else {
      out[key] = wrapServerStream(method, h) as UntypedHandleCall;
    }
  }
  return out;
}

/** Neither spans nor RPC metrics are recorded: a wrapped handler is called as it is. */
function untraced(): boolean {
  return !tracingEnabled() && !metricsEnabled();
}

function wrapUnary(method: string, handler: (...args: unknown[]) => unknown) {
  return (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) =>
    untraced() ? handler(call, callback) : rpcSpan(
      method,
      call.metadata,
      (end) =>
        handler(call, (err: Partial<ServiceError> | null, ...rest: unknown[]) => {
          if (err) end(err.code ?? grpcStatus.UNKNOWN, err.details ?? err.message);
          else end(grpcStatus.OK);
          (callback as (...args: unknown[]) => void)(err, ...rest);
        }),
      peerAttributes(peerOf(call)),
    );
}

function wrapServerStream(method: string, handler: (...args: unknown[]) => unknown) {
  return (call: ServerWritableStream<unknown, unknown>) =>
    untraced() ? handler(call) : rpcSpan(method, call.metadata, (end) => {
      let failure: Partial<ServiceError> | undefined;
      // grpc-js turns an emitted error into the status, then ends the stream ("finish").
      call.on("error", (err: Partial<ServiceError>) => failure ??= err);
      call.once(
        "finish",
        () =>
          failure
            ? end(failure.code ?? grpcStatus.UNKNOWN, failure.details ?? failure.message)
            : end(grpcStatus.OK),
      );
      call.once("cancelled", () => end(grpcStatus.CANCELLED, "the client cancelled the call"));
      return handler(call);
    }, peerAttributes(peerOf(call)));
}
