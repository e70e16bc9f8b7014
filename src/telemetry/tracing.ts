/**
 * Spans for qlorad's jobs: a job span with one child span per phase (load, quantize tensor, train
 * step, eval, checkpoint write), under the RPC span that made the job (the gRPC side, which opens
 * that RPC span, is src/service/rpc_tracing.ts: nothing below src/service knows gRPC).
 *
 * A job outlives the stream that started it, so a job's trace is captured where the job is made
 * (inside the RPC span) and carried with the job; its spans are children of that RPC span even
 * when the caller has gone. Phase hooks fire when a phase ends, and the job bodies run phases one
 * after another, so a phase began when the previous one ended (`JobTrace.boundary`).
 *
 * With tracing off (setup.ts registered nothing) jobTrace returns an object whose methods return
 * at once.
 */
import {
  type Attributes,
  type Context,
  context,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { ATTR } from "./metrics.ts";

/** The tracer (instrumentation scope) name. */
export const TRACER_NAME = "qlorad";

let enabled = false;

/** Set by setup.ts when a tracer provider is registered. */
export function setTracingEnabled(on: boolean): void {
  enabled = on;
}

export function tracingEnabled(): boolean {
  return enabled;
}

/**
 * Milliseconds since the epoch, sub-millisecond. Every span here gets its times from this one
 * clock: the SDK's own clock is anchored to Date.now() per span, and mixing the two could put a
 * phase a fraction of a millisecond outside its job.
 */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** qlorad's tracer (the global provider's, or a no-op one). */
export function tracer() {
  return trace.getTracer(TRACER_NAME);
}

/** A job's spans: a job span under the RPC span that made the job, and its phases under that. */
export interface JobTrace {
  /** False when tracing is off: then every method returns at once. */
  readonly recording: boolean;
  /** When the last phase ended (or the job started, or `mark` was called); epoch ms. */
  readonly boundary: number;
  /**
   * Runs the job body inside the job span `job <kind>`; ends it with the outcome (an error is
   * recorded; an aborted `signal` marks it cancelled).
   */
  run<T>(jobId: string, body: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /**
   * Records a finished phase span under the job span, from `start` (default: the boundary) to
   * `end` (default: now), and moves the boundary to its end.
   */
  phase(name: string, attributes?: Attributes, start?: number, end?: number): void;
  /** Moves the boundary (a phase not worth a span ended here). */
  mark(at?: number): void;
  /** An event on the job span (log lines, warnings). */
  event(name: string, attributes?: Attributes): void;
  /** Attributes on the job span. */
  set(attributes: Attributes): void;
}

const NO_JOB_TRACE: JobTrace = {
  recording: false,
  boundary: 0,
  run: (_jobId, body) => body(),
  phase() {},
  mark() {},
  event() {},
  set() {},
};

/**
 * The trace of a job about to be submitted: call it where the job is made (the RPC handler, so
 * inside the RPC span) and run the job body through `run`.
 */
export function jobTrace(kind: string, attributes: Attributes = {}): JobTrace {
  if (!enabled) return NO_JOB_TRACE;
  return new RecordingJobTrace(context.active(), kind, attributes);
}

class RecordingJobTrace implements JobTrace {
  readonly recording = true;
  #parent: Context;
  #kind: string;
  #attributes: Attributes;
  #created = nowMs();
  #span: Span | undefined;
  #ctx: Context | undefined;
  #boundary = nowMs();

  constructor(parent: Context, kind: string, attributes: Attributes) {
    this.#parent = parent;
    this.#kind = kind;
    this.#attributes = attributes;
  }

  get boundary(): number {
    return this.#boundary;
  }

  async run<T>(jobId: string, body: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const start = nowMs();
    this.#boundary = start;
    const span = tracer().startSpan(`job ${this.#kind}`, {
      kind: SpanKind.INTERNAL,
      startTime: start,
      attributes: {
        [ATTR.jobId]: jobId,
        [ATTR.jobKind]: this.#kind,
        "qlorad.job.queued_seconds": (start - this.#created) / 1000,
        ...this.#attributes,
      },
    }, this.#parent);
    this.#span = span;
    this.#ctx = trace.setSpan(this.#parent, span);
    try {
      const out = await context.with(this.#ctx, body);
      span.setAttribute("qlorad.job.outcome", "succeeded");
      return out;
    } catch (err) {
      if (signal?.aborted) {
        span.setAttribute("qlorad.job.outcome", "cancelled");
      } else {
        span.setAttribute("qlorad.job.outcome", "failed");
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: String((err as Error)?.message) });
      }
      throw err;
    } finally {
      span.end(nowMs());
    }
  }

  phase(name: string, attributes: Attributes = {}, start?: number, end?: number): void {
    if (!this.#ctx) return;
    const to = end ?? nowMs();
    const from = Math.min(start ?? this.#boundary, to);
    tracer().startSpan(name, { kind: SpanKind.INTERNAL, startTime: from, attributes }, this.#ctx)
      .end(to);
    this.#boundary = to;
  }

  mark(at = nowMs()): void {
    this.#boundary = at;
  }

  event(name: string, attributes?: Attributes): void {
    this.#span?.addEvent(name, attributes);
  }

  set(attributes: Attributes): void {
    this.#span?.setAttributes(attributes);
  }
}
