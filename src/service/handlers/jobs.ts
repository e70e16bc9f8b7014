/**
 * WatchJob, GetJob, ListJobs, CancelJob, the translation between the JobManager's plain
 * objects and the proto's messages (enum names, Timestamps, the payload oneof), and the event
 * stream every job RPC writes (streamJob), which follows the client's flow control. What the
 * job-starting RPCs share besides is in job_rpc.ts.
 */
import type { sendUnaryData, UntypedHandleCall } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { QloradError } from "../../util/errors.ts";
import { isTerminal } from "../jobs.ts";
import type {
  JobEvent as JobRecordEvent,
  JobKind,
  JobManager,
  JobPayload,
  JobRecord,
  JobState,
} from "../jobs.ts";
import type { StreamLimiter } from "../streams.ts";
import type { JobRunner } from "./job_rpc.ts";
import { codeName, grpcCodeOf, serviceErrorOf, toServiceError } from "../status.ts";
import type { Logger } from "../status.ts";
import type { quantizeModel } from "../../quant/quantize_model.ts";
import type { GpuContext } from "../../gpu/context.ts";
import type {
  CancelJobRequest,
  CancelJobResponse,
  GetJobRequest,
  Job,
  JobEvent,
  JobEventStream,
  JobKindName,
  JobStateName,
  ListJobsRequest,
  ListJobsResponse,
  UnaryCall,
  WatchJobRequest,
} from "../messages.ts";

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
  /** Open job streams, per connection and in all (absent: unlimited, for hand-built contexts). */
  streams?: StreamLimiter;
  /** GPU memory a Train or Evaluate job may use; jobs estimated above it are refused. */
  gpuMemoryBudgetBytes?: number;
  /** kind -> its job body from a stored request (job_rpc.ts fills it; fleet mode uses it). */
  runners?: Map<JobKind, JobRunner>;
}

// ------------------------------------------------------------------ translation

const KINDS: Record<JobKind, JobKindName> = {
  quantize: "JOB_KIND_QUANTIZE",
  train: "JOB_KIND_TRAIN",
  evaluate: "JOB_KIND_EVALUATE",
  generate: "JOB_KIND_GENERATE",
  export: "JOB_KIND_EXPORT",
};

export function timestampOf(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

export function jobStateEnum(state: JobState): JobStateName {
  return `JOB_STATE_${state}`;
}

/**
 * The payload oneof of a JobEvent. The job bodies build the payloads in the proto's field names
 * (JobPayload keeps them as plain objects); the error and log payloads differ and are mapped.
 */
function payloadMessage(payload: JobPayload): Partial<JobEvent> {
  if ("error" in payload) {
    const e = payload.error;
    return { error: { code: codeName(grpcCodeOf(e.kind)), message: e.message } };
  }
  if ("log" in payload) {
    const level = payload.log.level === "warning" ? "LOG_LEVEL_WARNING" : "LOG_LEVEL_INFO";
    return { log: { level, message: payload.log.message } };
  }
  return payload as Partial<JobEvent>;
}

/** A JobEvent message. */
export function eventMessage(ev: JobRecordEvent): JobEvent {
  return {
    job_id: ev.job_id,
    seq: ev.seq,
    time: timestampOf(ev.time_ms),
    state: jobStateEnum(ev.state),
    ...(ev.payload ? payloadMessage(ev.payload) : {}),
  };
}

/** A Job message. */
export function jobMessage(r: JobRecord): Job {
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
    ...(r.owner ? { owner: r.owner } : {}),
    ...(r.cancel_requested ? { cancel_requested: true } : {}),
    // The request each job kind's handler echoed (its request message, defaults filled in).
    ...(r.request && KINDS[r.kind] ? { [r.kind]: r.request as Job[JobKind] } : {}),
  };
}

// ------------------------------------------------------------------ streaming

/**
 * Resolves when the stream can take more (drain), or when the client has gone (`gone` aborts).
 */
function drained(call: JobEventStream<unknown>, gone: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("close", done);
      gone.removeEventListener("abort", done);
      resolve();
    };
    call.on("drain", done);
    call.on("close", done);
    gone.addEventListener("abort", done);
    if (gone.aborted) done();
  });
}

/**
 * Writes a job's events to a server stream from `fromSeq` until the job ends. The client
 * going away stops the stream, never the job. With `endWithJobStatus` (the RPC that started the
 * job) a FAILED or CANCELLED job ends the stream with its error as the status; otherwise the
 * stream ends OK after the final event. Flow control is respected: when the stream's buffer is
 * full the next event waits until the client has read, so a client that does not read holds a
 * few events in the server, never the whole log.
 *
 * Note: a grpc-js client (1.14, seen in tests) drops messages it has not yet delivered when an
 * error status arrives right behind them, so it may miss the final FAILED/CANCELLED event; the
 * status carries the same code and message, and WatchJob replays the whole log.
 */
export async function streamJob(
  call: JobEventStream<unknown>,
  ctx: ServiceContext,
  jobId: string,
  fromSeq: number,
  opts: { endWithJobStatus: boolean },
): Promise<void> {
  const disconnected = new AbortController();
  const onCancelled = () => disconnected.abort();
  call.on("cancelled", onCancelled);
  try {
    let last: JobRecordEvent | undefined;
    for await (const ev of ctx.jobs.watch(jobId, fromSeq, disconnected.signal)) {
      if (call.cancelled) break;
      last = ev;
      if (!call.write(eventMessage(ev))) await drained(call, disconnected.signal);
    }
    if (call.cancelled || disconnected.signal.aborted) return;
    const finalState = last?.state ?? (await ctx.jobs.lookup(jobId)).state;
    if (!isTerminal(finalState)) {
      // The watch ended without the job ending: the server is shutting down.
      call.emit("error", toServiceError(status.UNAVAILABLE, "the server is shutting down"));
      return;
    }
    const error = (await ctx.jobs.lookup(jobId)).error;
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

export function errorFor(err: unknown, ctx: ServiceContext, context: string) {
  return serviceErrorOf(err, { logger: ctx.logger, hostDirs: ctx.hostDirs, context });
}

/** Job ids are short ("train-<time>-<hex>"); a longer one is refused without being echoed. */
const MAX_JOB_ID_CHARS = 128;

function requireJobId(req: { job_id: string }): string {
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
export function unary<Req, Res>(
  ctx: ServiceContext,
  name: string,
  body: (req: Req) => Res | Promise<Res>,
): UntypedHandleCall {
  return async (call: UnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
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
  JOB_KIND_GENERATE: "generate",
  JOB_KIND_EXPORT: "export",
};

function jobStateOf(value: unknown): JobState {
  const s = typeof value === "string" ? value.replace(/^JOB_STATE_/, "") : "";
  if (s === "QUEUED" || s === "RUNNING" || isTerminal(s as JobState)) return s as JobState;
  throw new QloradError("invalid_argument", `states: ${JSON.stringify(value)} is not a job state`);
}

/** WatchJob, GetJob, ListJobs and CancelJob. */
export function jobHandlers(ctx: ServiceContext): Record<string, UntypedHandleCall> {
  return {
    WatchJob: async (call: JobEventStream<WatchJobRequest>) => {
      let jobId: string;
      let fromSeq: number;
      let release: () => void;
      try {
        jobId = requireJobId(call.request);
        fromSeq = safeCount(call.request.from_seq, "from_seq") || 1;
        await ctx.jobs.lookup(jobId);
        release = acquireStream(ctx, call);
      } catch (err) {
        call.emit("error", errorFor(err, ctx, "WatchJob"));
        return;
      }
      try {
        await streamJob(call, ctx, jobId, fromSeq, { endWithJobStatus: false });
      } finally {
        release();
      }
    },
    GetJob: unary(
      ctx,
      "GetJob",
      async (req: GetJobRequest): Promise<Job> =>
        jobMessage(await ctx.jobs.lookup(requireJobId(req))),
    ),
    ListJobs: unary(ctx, "ListJobs", async (req: ListJobsRequest): Promise<ListJobsResponse> => {
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
      return { jobs: (await ctx.jobs.listJobs({ kind, states, limit })).map(jobMessage) };
    }),
    CancelJob: unary(
      ctx,
      "CancelJob",
      async (req: CancelJobRequest): Promise<CancelJobResponse> => ({
        job: jobMessage(await ctx.jobs.cancel(requireJobId(req))),
      }),
    ),
  };
}

/** A stream slot for `call` (see streams.ts); returns its release. */
export function acquireStream(ctx: ServiceContext, call: JobEventStream<unknown>): () => void {
  return ctx.streams?.acquire(call.getPeer()) ?? (() => {});
}
