/**
 * What a job is, as stored and as served: its record, its events and their payloads. Shared by the
 * job store (which keeps them), the manager (which makes them) and the gRPC handlers (which
 * translate them). Plain JSON objects only: payloads use the proto's field names.
 */
import type { ErrorKind } from "../../util/errors.ts";

export type JobKind = "quantize" | "train" | "evaluate" | "generate" | "export";
export type JobState = "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";

export function isTerminal(state: JobState): boolean {
  return state === "SUCCEEDED" || state === "FAILED" || state === "CANCELLED";
}

/** Why a job failed or was cancelled: an error kind (mapped to a status code) and a safe message. */
export interface JobErrorInfo {
  kind: ErrorKind;
  message: string;
}

export interface ProgressPayload {
  message?: string;
  tensor?: string;
  index?: number;
  total?: number;
  bytes_in?: number;
  bytes_out?: number;
  quantized?: boolean;
}

/** One event payload: exactly one key, named like the JobEvent oneof field it becomes. */
export type JobPayload =
  | { progress: ProgressPayload }
  | { train_metrics: Record<string, unknown> }
  | { checkpoint: { path: string; step: number; is_final?: boolean } }
  | { eval_result: Record<string, unknown> }
  | { quantize_result: Record<string, unknown> }
  | { train_result: Record<string, unknown> }
  | { generated_text: { text: string; token_ids: number[] } }
  | { generate_result: Record<string, unknown> }
  | { export_result: Record<string, unknown> }
  | { error: JobErrorInfo }
  | { log: { level: "info" | "warning"; message: string } };

export interface JobEvent {
  job_id: string;
  /** 1, 2, 3, ... without gaps. */
  seq: number;
  /** Unix milliseconds. */
  time_ms: number;
  /** The job's state as of this event. */
  state: JobState;
  /** Absent for a plain state change. */
  payload?: JobPayload;
}

export interface JobRecord {
  job_id: string;
  kind: JobKind;
  state: JobState;
  created_ms: number;
  started_ms?: number;
  finished_ms?: number;
  /** One line for humans. */
  summary: string;
  /** The request with defaults filled in (plain JSON). */
  request: unknown;
  last_seq: number;
  error?: JobErrorInfo;
  last_event?: JobEvent;
  /** The client's idempotency key, when it gave one. */
  request_id?: string;
  /** A digest of the request as received, to tell a retry from a different request. */
  fingerprint?: string;
  /** The replica that runs (or last ran) the job, with a shared store (fleet mode). */
  owner?: string;
  /**
   * CancelJob reached a replica that does not run the job (fleet mode): the owner sees this at its
   * next lease renewal and stops the job at a step boundary.
   */
  cancel_requested?: boolean;
}

export interface ListFilter {
  kind?: JobKind;
  /** Empty or absent: every state. */
  states?: JobState[];
  /** 0 or absent: no limit. */
  limit?: number;
}

/** The event that follows a record's last one. */
export function nextEvent(record: JobRecord, state: JobState, payload?: JobPayload): JobEvent {
  return {
    job_id: record.job_id,
    seq: record.last_seq + 1,
    time_ms: Date.now(),
    state,
    ...(payload ? { payload: structuredClone(payload) } : {}),
  };
}

/** The record of a job whose log ends with the terminal event `last`. */
export function endedRecord(record: JobRecord, last: JobEvent): JobRecord {
  const payload = last.payload;
  return {
    ...record,
    state: last.state,
    finished_ms: last.time_ms,
    last_seq: last.seq,
    last_event: last,
    ...(payload && "error" in payload ? { error: payload.error } : {}),
  };
}

/** `records` matching `filter`, newest first (ties by job id, descending). */
export function selectRecords(records: Iterable<JobRecord>, filter: ListFilter = {}): JobRecord[] {
  const states = filter.states?.length ? new Set(filter.states) : undefined;
  const out = [...records]
    .filter((r) => (!filter.kind || r.kind === filter.kind) && (!states || states.has(r.state)))
    .sort((a, b) => b.created_ms - a.created_ms || (b.job_id < a.job_id ? -1 : 1));
  return filter.limit ? out.slice(0, filter.limit) : out;
}
