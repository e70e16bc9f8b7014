/**
 * What the job-starting RPCs (Quantize, Train, Evaluate) share: one handler shell (validate ->
 * submit -> stream, jobRpcHandler and startJob), the idempotency key (request_id), no job for a
 * call whose deadline has passed, and the job body's shell (jobBody): its trace, its pinned paths
 * and its errors told in the user's paths. Also the runner registry (kind -> request -> body) that
 * a replica of a fleet uses to run a job another replica received (rebuildJob).
 */
import { createHash } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { diskFullError, isDiskFullError } from "../../io/atomic.ts";
import { QloradError } from "../../util/errors.ts";
import type { jobTrace } from "../../telemetry/tracing.ts";
import type { JobContext, JobEvent, JobKind, JobPayload, JobRecord, JobRun } from "../jobs.ts";
import { Pins } from "../confine.ts";
import { toServiceError } from "../status.ts";
import type {
  Echoed,
  EvaluateRequest,
  ExportRequest,
  GenerateRequest,
  JobEventStream,
  QuantizeRequest,
  TrainRequest,
} from "../messages.ts";
import { acquireStream, errorFor, type ServiceContext, streamJob } from "./jobs.ts";

/** The request a job record keeps (its kind's request message, defaults filled in). */
export type JobRequest =
  | Echoed<QuantizeRequest>
  | Echoed<TrainRequest>
  | Echoed<EvaluateRequest>
  | Echoed<GenerateRequest>
  | Echoed<ExportRequest>;

/** A job-starting RPC: its checks, and the job a checked request becomes. */
export interface JobRpc<Req, V> {
  kind: JobKind;
  /** The RPC's name, for logs and errors. */
  method: string;
  /** Checks the request (every field, path and file) before any job exists. */
  validate(req: Req, dataDir: string): Promise<V>;
  job(v: V, ctx: ServiceContext): JobStart;
}

/** The handler of a job-starting RPC: validate, submit, stream (see startJob). */
export function jobRpcHandler<Req extends { request_id?: unknown }, V>(
  ctx: ServiceContext,
  rpc: JobRpc<Req, V>,
): (call: JobEventStream<Req>) => Promise<void> {
  // A job of this kind submitted on another replica is rebuilt from its stored request.
  ctx.runners?.set(
    rpc.kind,
    async (request) => rpc.job(await rpc.validate(request as Req, ctx.dataDir), ctx),
  );
  return (call) =>
    startJob(call, ctx, rpc.kind, rpc.method, async () => {
      const v = await rpc.validate(call.request, ctx.dataDir);
      return rpc.job(v, ctx);
    });
}

/** The longest request_id accepted. */
export const MAX_REQUEST_ID_CHARS = 128;

/** request_id: empty (none) or 1..128 visible ASCII characters. */
export function requestIdOf(req: { request_id?: unknown }): string | undefined {
  const id = req.request_id;
  if (id === undefined || id === null || id === "") return undefined;
  if (typeof id !== "string" || id.length > MAX_REQUEST_ID_CHARS || !/^[\x21-\x7e]+$/.test(id)) {
    throw new QloradError(
      "invalid_argument",
      `request_id: 1..${MAX_REQUEST_ID_CHARS} visible ASCII characters (no spaces)`,
    );
  }
  return id;
}

/** A digest of the request as received, request_id left out (a retry sends the same message). */
export function fingerprintOf(req: { request_id?: unknown }): string {
  const { request_id: _id, ...rest } = req;
  return createHash("sha256").update(JSON.stringify(rest)).digest("hex");
}

/** The call's client has gone, or its deadline has passed: nobody will see a job started now. */
export function callGone(call: JobEventStream<unknown>): boolean {
  if (call.cancelled) return true;
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  return Number.isFinite(ms) && ms <= Date.now();
}

/** What a job-starting RPC's validation produces. */
export interface JobStart {
  summary: string;
  /** The request with defaults filled in (what GetJob shows). */
  request: JobRequest;
  run: JobRun;
  resumeHint?: () => string | undefined;
}

/**
 * The body of Quantize, Train and Evaluate: takes a stream slot, returns the job a known
 * request_id created (same request) or validates and submits a new one, and streams its events.
 * Nothing is created when the call has ended (deadline passed, client gone) by the time the
 * request is valid; so a client whose deadline expired can retry with the same request_id and
 * get the one job either way.
 */
export async function startJob<Req extends { request_id?: unknown }>(
  call: JobEventStream<Req>,
  ctx: ServiceContext,
  kind: JobKind,
  method: string,
  validate: () => Promise<JobStart>,
  opts: { cancelWithCall?: boolean } = {},
): Promise<void> {
  let release: (() => void) | undefined;
  let jobId: string;
  try {
    release = acquireStream(ctx, call);
    const requestId = requestIdOf(call.request);
    const fingerprint = requestId ? fingerprintOf(call.request) : undefined;
    const known = await ctx.jobs.findRequestAsync(kind, requestId, fingerprint);
    if (known) {
      jobId = known.job_id;
    } else {
      ctx.logger.debug?.(`${method}: validating the request`);
      const v = await validate();
      if (callGone(call)) {
        ctx.logger.info(`${method}: the call ended before its job was created; no job`);
        release();
        if (!call.cancelled) {
          call.emit(
            "error",
            toServiceError(
              status.DEADLINE_EXCEEDED,
              "the deadline passed before the job was created",
            ),
          );
        }
        return;
      }
      jobId = (await ctx.jobs.submitJob({
        kind,
        summary: v.summary,
        request: { ...v.request, request_id: requestId ?? "" },
        run: v.run,
        requestId,
        fingerprint,
        resumeHint: v.resumeHint,
      })).job_id;
    }
  } catch (err) {
    release?.();
    if (!call.cancelled) call.emit("error", errorFor(err, ctx, method));
    return;
  }
  // A job that is its call's (Generate) is cancelled when the call ends early, on whichever
  // replica runs it (a no-op once it has ended). A call that ended during the submit has fired
  // its event already.
  const cancel = () => void ctx.jobs.cancel(jobId).catch(() => {});
  if (opts.cancelWithCall) {
    call.on("cancelled", cancel);
    if (call.cancelled) cancel();
  }
  try {
    await streamJob(call, ctx, jobId, 1, { endWithJobStatus: true });
  } finally {
    if (opts.cancelWithCall) call.off("cancelled", cancel);
    release();
  }
}

/** Makes a job's body from its stored request (validated again: the files may have changed). */
export type JobRunner = (request: unknown) => Promise<JobStart>;

/**
 * The body of a job submitted on another replica (fleet mode), from the runner its kind
 * registered; undefined for a kind without one. A Generate runs anywhere while QUEUED, but one its
 * replica had started is not taken over (it throws: the job ends FAILED). A training
 * job taken over resumes from the newest checkpoint its log names; without one it starts again,
 * replacing the folder its previous owner began (overwrite).
 */
export async function rebuildJob(
  ctx: ServiceContext,
  record: JobRecord,
  events: JobEvent[],
): Promise<{ run: JobRun; resumeHint?: () => string | undefined; note?: string } | undefined> {
  const runner = ctx.runners?.get(record.kind);
  if (!runner) return undefined;
  let request = record.request as Record<string, unknown>;
  let note: string | undefined;
  if (record.kind === "generate" && events.some((e) => e.state === "RUNNING")) {
    // Its tokens so far went to its caller: a second run would stream them again from the start.
    throw new QloradError(
      "unavailable",
      "the replica running this generation stopped; a generation is not taken over " +
        "(its caller got part of it): submit it again",
    );
  }
  if (record.kind === "train" && events.some((e) => e.state === "RUNNING")) {
    const checkpoint = events.findLast((e) =>
      e.payload && "checkpoint" in e.payload && !e.payload.checkpoint.is_final
    )?.payload as { checkpoint: { path: string; step: number } } | undefined;
    if (checkpoint) {
      request = { ...request, resume_from: checkpoint.checkpoint.path };
      note = `resuming from checkpoint ${checkpoint.checkpoint.path} ` +
        `(step ${checkpoint.checkpoint.step})`;
    } else if (!request.resume_from) {
      request = { ...request, overwrite: true };
      note = "no checkpoint yet: training starts again";
    }
  }
  const start = await runner(request);
  return { run: start.run, resumeHint: start.resumeHint, note };
}

/** A job's trace (tracing.ts's jobTrace). */
type JobSpans = ReturnType<typeof jobTrace>;

/** How a job body's errors are told: paths the user's, a full disk named on the output. */
export interface JobBodyOptions {
  /** A host path as the user named it (pinned paths are mapped back first). */
  userPath: (hostPath: string) => string;
  /** The output being written (a full disk is RESOURCE_EXHAUSTED on it). */
  output?: string;
  /** Applied to an error's message before the pinned paths are renamed. */
  rewrite?: (message: string) => string;
  /** Undoes what a failed or stopped body left (awaited, its own errors ignored). */
  onError?: () => Promise<unknown> | undefined;
  /** Runs last, whatever happened (before the pins close). */
  finish?: () => Promise<void>;
}

/**
 * A job body with its shell: it runs inside the job's trace, with its own pinned paths (closed
 * when it ends), and its errors come out in the user's terms (jobError).
 */
export function jobBody(
  spans: JobSpans,
  options: (job: JobContext) => JobBodyOptions,
  body: (job: JobContext, pins: Pins) => Promise<JobPayload | void>,
): JobRun {
  const run: JobRun = async (job) => {
    const pins = new Pins();
    const o = options(job);
    try {
      return await body(job, pins);
    } catch (err) {
      await Promise.resolve(o.onError?.()).catch(() => {});
      const rewrite = o.rewrite ?? ((m: string) => m);
      throw jobError(err, (m) => pins.rename(rewrite(m), o.userPath), o.output);
    } finally {
      await o.finish?.();
      await pins.close();
    }
  };
  return (job) => spans.run(job.jobId, () => run(job), job.signal);
}

/** A host path inside the data directory as the user named it (relative to it). */
export function dataRelative(dataDir: string | undefined): (hostPath: string) => string {
  return (p) => dataDir && p.startsWith(dataDir + "/") ? p.slice(dataDir.length + 1) : p;
}

/**
 * A job's error as the user should see it: pinned (/proc/self/fd) and temporary paths replaced
 * by the user's, and a full disk named as RESOURCE_EXHAUSTED on the output being written.
 */
export function jobError(
  err: unknown,
  rewrite: (message: string) => string,
  output?: string,
): unknown {
  if (output && isDiskFullError(err)) return diskFullError(output, err);
  if (err instanceof QloradError) {
    const message = rewrite(err.message);
    if (message !== err.message) return new QloradError(err.kind, message, { cause: err });
  }
  return err;
}
