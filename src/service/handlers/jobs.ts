/**
 * WatchJob, GetJob, ListJobs, CancelJob, and the translation between the JobManager's plain
 * objects and the proto's messages (enum names, Timestamps, the payload oneof).
 */
import type {
  sendUnaryData,
  ServerUnaryCall,
  ServerWritableStream,
  UntypedHandleCall,
} from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { QloradError } from "../../util/errors.ts";
import { isTerminal } from "../jobs.ts";
import type { JobEvent, JobKind, JobManager, JobPayload, JobRecord, JobState } from "../jobs.ts";
import { codeName, grpcCodeOf, serviceErrorOf, toServiceError } from "../status.ts";
import type { Logger } from "../status.ts";
import type { quantizeModel } from "../../quant/quantize_model.ts";
import type { GpuContext } from "../../gpu/context.ts";

/** What every handler needs. */
export interface ServiceContext {
  jobs: JobManager;
  /** The data directory, realpath'd. */
  dataDir: string;
  logger: Logger;
  /** Host folders scrubbed from error messages. */
  hostDirs: string[];
  /** The quantizer (tests substitute a fake). */
  quantize: typeof quantizeModel;
  /** The shared GPU device, opened on first use. */
  gpu: () => Promise<GpuContext>;
}

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

// ------------------------------------------------------------------ translation

const KINDS: Record<JobKind, string> = {
  quantize: "JOB_KIND_QUANTIZE",
  train: "JOB_KIND_TRAIN",
  evaluate: "JOB_KIND_EVALUATE",
};

export function timestampOf(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

export function jobStateEnum(state: JobState): string {
  return `JOB_STATE_${state}`;
}

function payloadMessage(payload: JobPayload): Msg {
  if ("error" in payload) {
    const e = payload.error;
    return { error: { code: codeName(grpcCodeOf(e.kind)), message: e.message } };
  }
  if ("log" in payload) {
    const level = payload.log.level === "warning" ? "LOG_LEVEL_WARNING" : "LOG_LEVEL_INFO";
    return { log: { level, message: payload.log.message } };
  }
  return payload;
}

/** A JobEvent message. */
export function eventMessage(ev: JobEvent): Msg {
  return {
    job_id: ev.job_id,
    seq: ev.seq,
    time: timestampOf(ev.time_ms),
    state: jobStateEnum(ev.state),
    ...(ev.payload ? payloadMessage(ev.payload) : {}),
  };
}

/** A Job message. */
export function jobMessage(r: JobRecord): Msg {
  return {
    job_id: r.job_id,
    kind: KINDS[r.kind] ?? "JOB_KIND_UNSPECIFIED",
    state: jobStateEnum(r.state),
    created_time: timestampOf(r.created_ms),
    ...(r.started_ms !== undefined ? { started_time: timestampOf(r.started_ms) } : {}),
    ...(r.finished_ms !== undefined ? { finished_time: timestampOf(r.finished_ms) } : {}),
    summary: r.summary,
    last_seq: r.last_seq,
    ...(r.error
      ? { error: { code: codeName(grpcCodeOf(r.error.kind)), message: r.error.message } }
      : {}),
    ...(r.last_event ? { last_event: eventMessage(r.last_event) } : {}),
    ...(r.request && KINDS[r.kind] ? { [r.kind]: r.request } : {}),
  };
}

// ------------------------------------------------------------------ streaming

/**
 * Writes a job's events to a server stream from `fromSeq` until the job ends. The client
 * going away stops the stream, never the job. With `endWithJobStatus` (the RPC that started the
 * job) a FAILED or CANCELLED job ends the stream with its error as the status; otherwise the
 * stream ends OK after the final event.
 *
 * Note: a grpc-js client (1.14, seen in tests) drops messages it has not yet delivered when an
 * error status arrives right behind them, so it may miss the final FAILED/CANCELLED event; the
 * status carries the same code and message, and WatchJob replays the whole log.
 */
export async function streamJob(
  call: ServerWritableStream<Msg, Msg>,
  ctx: ServiceContext,
  jobId: string,
  fromSeq: number,
  opts: { endWithJobStatus: boolean },
): Promise<void> {
  const disconnected = new AbortController();
  const onCancelled = () => disconnected.abort();
  call.on("cancelled", onCancelled);
  try {
    let last: JobEvent | undefined;
    for await (const ev of ctx.jobs.watch(jobId, fromSeq, disconnected.signal)) {
      if (call.cancelled) break;
      call.write(eventMessage(ev));
      last = ev;
    }
    if (call.cancelled || disconnected.signal.aborted) return;
    const finalState = last?.state ?? ctx.jobs.get(jobId).state;
    if (!isTerminal(finalState)) {
      // The watch ended without the job ending: the server is shutting down.
      call.emit("error", toServiceError(status.UNAVAILABLE, "the server is shutting down"));
      return;
    }
    const error = ctx.jobs.get(jobId).error;
    if (opts.endWithJobStatus && finalState !== "SUCCEEDED" && error) {
      call.emit("error", toServiceError(grpcCodeOf(error.kind), error.message));
      return;
    }
    call.end();
  } catch (err) {
    if (!call.cancelled) call.emit("error", errorFor(err, ctx, "stream"));
  } finally {
    call.off("cancelled", onCancelled);
  }
}

function errorFor(err: unknown, ctx: ServiceContext, context: string) {
  return serviceErrorOf(err, { logger: ctx.logger, hostDirs: ctx.hostDirs, context });
}

/** Job ids are short ("train-<time>-<hex>"); a longer one is refused without being echoed. */
const MAX_JOB_ID_CHARS = 128;

function requireJobId(req: Msg): string {
  const id = req.job_id;
  if (typeof id !== "string" || id === "") {
    throw new QloradError("invalid_argument", "job_id is required");
  }
  if (id.length > MAX_JOB_ID_CHARS) {
    throw new QloradError("invalid_argument", `job_id: longer than ${MAX_JOB_ID_CHARS} characters`);
  }
  return id;
}

/** A uint64 field as a safe integer: 0 (unset) up to 2^53 - 1. */
function safeCount(value: unknown, field: string): number {
  const v = Number(value ?? 0);
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new QloradError("invalid_argument", `${field}: ${value} is outside 0..2^53-1`);
  }
  return v;
}

/** A unary handler that maps thrown errors to statuses. */
export function unary(
  ctx: ServiceContext,
  name: string,
  body: (req: Msg) => Msg | Promise<Msg>,
): UntypedHandleCall {
  return async (call: ServerUnaryCall<Msg, Msg>, callback: sendUnaryData<Msg>) => {
    try {
      callback(null, await body(call.request));
    } catch (err) {
      callback(errorFor(err, ctx, name));
    }
  };
}

// ------------------------------------------------------------------ handlers

const JOB_KIND_OF: Record<string, JobKind | undefined> = {
  JOB_KIND_UNSPECIFIED: undefined,
  JOB_KIND_QUANTIZE: "quantize",
  JOB_KIND_TRAIN: "train",
  JOB_KIND_EVALUATE: "evaluate",
};

function jobStateOf(value: unknown): JobState {
  const s = typeof value === "string" ? value.replace(/^JOB_STATE_/, "") : "";
  if (s === "QUEUED" || s === "RUNNING" || isTerminal(s as JobState)) return s as JobState;
  throw new QloradError("invalid_argument", `states: ${JSON.stringify(value)} is not a job state`);
}

/** WatchJob, GetJob, ListJobs and CancelJob. */
export function jobHandlers(ctx: ServiceContext): Record<string, UntypedHandleCall> {
  return {
    WatchJob: async (call: ServerWritableStream<Msg, Msg>) => {
      let jobId: string;
      let fromSeq: number;
      try {
        jobId = requireJobId(call.request);
        fromSeq = safeCount(call.request.from_seq, "from_seq") || 1;
        ctx.jobs.get(jobId);
      } catch (err) {
        call.emit("error", errorFor(err, ctx, "WatchJob"));
        return;
      }
      await streamJob(call, ctx, jobId, fromSeq, {
        endWithJobStatus: false,
      });
    },
    GetJob: unary(ctx, "GetJob", (req) => jobMessage(ctx.jobs.get(requireJobId(req)))),
    ListJobs: unary(ctx, "ListJobs", (req) => {
      if (!(req.kind in JOB_KIND_OF)) {
        throw new QloradError(
          "invalid_argument",
          `kind: ${JSON.stringify(req.kind)} is not a kind`,
        );
      }
      const kind = JOB_KIND_OF[req.kind];
      const states = ((req.states ?? []) as unknown[])
        .filter((s) => s !== "JOB_STATE_UNSPECIFIED")
        .map(jobStateOf);
      const limit = safeCount(req.limit, "limit");
      return { jobs: ctx.jobs.list({ kind, states, limit }).map(jobMessage) };
    }),
    CancelJob: unary(
      ctx,
      "CancelJob",
      (req) => ({ job: jobMessage(ctx.jobs.cancel(requireJobId(req))) }),
    ),
  };
}
