/**
 * Job manager: one job runs at a time (one GPU), the others wait in a bounded FIFO queue. Each job
 * has an append-only event log (seq 1, 2, ...) that subscribers replay from any seq and then
 * follow live; a job never depends on its subscribers. Records and logs persist under
 * `<dataDir>/.qlorad/jobs/` (`<id>.json` written atomically, `<id>.events.jsonl` appended), and a
 * job that was queued or running when the server died is marked FAILED when the server starts.
 * On a graceful shutdown (close) a training job that stopped at a checkpoint ends FAILED at once,
 * with a message that says how to resume it.
 *
 * Plain objects only: payloads use the proto's field names, and the gRPC handlers translate.
 */
import * as path from "node:path";
import { CancelledError, QloradError } from "../util/errors.ts";
import type { ErrorKind } from "../util/errors.ts";
import { consoleLogger, publicError } from "./status.ts";
import type { Logger } from "./status.ts";
import { RESERVED_DIR } from "./paths.ts";
import { appendFileDurably, PARTIAL_MARK, writeFileAtomic } from "../io/atomic.ts";
import { readLines } from "../data/dataset.ts";

export type JobKind = "quantize" | "train" | "evaluate";
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
}

export interface JobContext {
  jobId: string;
  /** Aborted by CancelJob or server shutdown; the job should throw CancelledError soon after. */
  signal: AbortSignal;
  /** Appends an event (state RUNNING) to the job's log. */
  emit(payload: JobPayload): void;
  /**
   * The point of no return, called just before the job makes its result visible (renames its
   * output into place): throws CancelledError if the job was cancelled or the server is stopping;
   * afterwards CancelJob is refused (failed_precondition) and the job runs to its end.
   */
  commit(): void;
}

/** A job's body. What it resolves to is the payload of the final SUCCEEDED event. */
export type JobRun = (ctx: JobContext) => Promise<JobPayload | void>;

export interface JobSubmission {
  kind: JobKind;
  summary: string;
  request: unknown;
  run: JobRun;
  /** Idempotency key: a submission with a known key returns that job instead of a new one. */
  requestId?: string;
  /** Digest of the request as received; the same key with another digest is refused. */
  fingerprint?: string;
  /** The error of a job stopped by a shutdown, when it can be resumed (e.g. from a checkpoint). */
  resumeHint?: () => string | undefined;
}

export interface ListFilter {
  kind?: JobKind;
  /** Empty or absent: every state. */
  states?: JobState[];
  /** 0 or absent: no limit. */
  limit?: number;
}

export interface JobManagerOptions {
  dataDir: string;
  /** Jobs that may wait behind the running one; more is RESOURCE_EXHAUSTED. Default 16. */
  maxQueued?: number;
  logger?: Logger;
  /** Absolute host folders replaced by relative paths in error messages (see redactPaths). */
  hostDirs?: string[];
  /** How long close() waits for the running job to stop after aborting it. Default 30 s. */
  closeTimeoutMs?: number;
}

export const RESTARTED_WHILE_RUNNING = "server restarted while the job was running";
export const RESTARTED_WHILE_QUEUED = "server restarted while the job was queued";

/** The error of a training job that a shutdown stopped at a checkpoint. */
export function shutDownAtCheckpoint(step: number, checkpoint: string, output: string): string {
  return `server shut down at step ${step} (checkpoint ${checkpoint}); ` +
    `resume with resume_from=${JSON.stringify(output)}`;
}

interface Entry {
  record: JobRecord;
  /** The whole log while the job is active; ended jobs' logs are read from disk. */
  events?: JobEvent[];
  run?: JobRun;
  resumeHint?: () => string | undefined;
  controller?: AbortController;
  cancelRequested?: boolean;
  /** Past its point of no return (JobContext.commit): no longer cancellable. */
  committed?: boolean;
  /** Its terminal event is being made durable; resolves once it is published. */
  ending?: Promise<void>;
  finished?: Promise<void>;
  waiters: Set<() => void>;
}

const RECORD_VERSION = 1;

export class JobManager {
  readonly #dir: string;
  readonly #maxQueued: number;
  readonly #logger: Logger;
  readonly #hostDirs: string[];
  readonly #closeTimeoutMs: number;
  readonly #jobs = new Map<string, Entry>();
  /** `${kind}\0${request_id}` -> the job it created. */
  readonly #requests = new Map<string, Entry>();
  readonly #queue: Entry[] = [];
  #running?: Entry;
  /** close() was called: no new jobs; the running one is being stopped. */
  #closed = false;
  /** close() has returned: nothing more is written, every watch has ended. */
  #stopped = false;
  #lastCreatedMs = 0;
  /** Disk writes, in order. */
  #io: Promise<void> = Promise.resolve();

  private constructor(opts: JobManagerOptions) {
    this.#dir = path.join(opts.dataDir, RESERVED_DIR, "jobs");
    this.#maxQueued = opts.maxQueued ?? 16;
    this.#logger = opts.logger ?? consoleLogger;
    this.#hostDirs = opts.hostDirs ?? [opts.dataDir];
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? 30_000;
  }

  /** Opens (creating if needed) the job store and reloads earlier jobs. */
  static async open(opts: JobManagerOptions): Promise<JobManager> {
    const m = new JobManager(opts);
    await Deno.mkdir(m.#dir, { recursive: true });
    await m.#load();
    return m;
  }

  /**
   * Queues a job; it starts when the jobs ahead of it have ended. With a request id already known
   * for this kind, returns that job's record instead (failed_precondition when the request
   * differs).
   */
  submit(sub: JobSubmission): JobRecord {
    const known = this.findRequest(sub.kind, sub.requestId, sub.fingerprint);
    if (known) return known;
    if (this.#closed) throw new QloradError("unavailable", "the server is shutting down");
    const busy = this.#running !== undefined || this.#queue.length > 0;
    if (busy && this.#queue.length >= this.#maxQueued) {
      throw new QloradError(
        "resource_exhausted",
        `job queue is full (${this.#queue.length} waiting behind the running job); try again later`,
      );
    }
    // Strictly increasing within a process, so "newest first" is well defined.
    const now = Math.max(Date.now(), this.#lastCreatedMs + 1);
    this.#lastCreatedMs = now;
    const entry: Entry = {
      record: {
        job_id: newJobId(sub.kind, now),
        kind: sub.kind,
        state: "QUEUED",
        created_ms: now,
        summary: sub.summary,
        request: sub.request,
        last_seq: 0,
        ...(sub.requestId ? { request_id: sub.requestId, fingerprint: sub.fingerprint } : {}),
      },
      events: [],
      run: sub.run,
      resumeHint: sub.resumeHint,
      waiters: new Set(),
    };
    this.#jobs.set(entry.record.job_id, entry);
    if (sub.requestId) this.#requests.set(requestKey(sub.kind, sub.requestId), entry);
    this.#append(entry, "QUEUED");
    this.#queue.push(entry);
    this.#pump();
    return this.get(entry.record.job_id);
  }

  /**
   * The job a request id created, if any (a snapshot); failed_precondition when `fingerprint`
   * says the request differs from the one that created it.
   */
  findRequest(kind: JobKind, requestId?: string, fingerprint?: string): JobRecord | undefined {
    if (!requestId) return undefined;
    const entry = this.#requests.get(requestKey(kind, requestId));
    if (!entry) return undefined;
    if (fingerprint !== undefined && entry.record.fingerprint !== fingerprint) {
      throw new QloradError(
        "failed_precondition",
        `request_id ${JSON.stringify(requestId)} was used for job ${entry.record.job_id} with a ` +
          `different request; use a new request_id`,
      );
    }
    return structuredClone(entry.record);
  }

  /** A snapshot of one job's record; NOT_FOUND for an unknown id. */
  get(jobId: string): JobRecord {
    return structuredClone(this.#entry(jobId).record);
  }

  /** Snapshots of jobs, newest first. */
  list(filter: ListFilter = {}): JobRecord[] {
    const states = filter.states?.length ? new Set(filter.states) : undefined;
    const out = [...this.#jobs.values()]
      .map((e) => e.record)
      .filter((r) => (!filter.kind || r.kind === filter.kind) && (!states || states.has(r.state)))
      .sort((a, b) => b.created_ms - a.created_ms || (b.job_id < a.job_id ? -1 : 1));
    return structuredClone(filter.limit ? out.slice(0, filter.limit) : out);
  }

  /**
   * Cancels a job: a queued one ends CANCELLED at once; a running one has its signal aborted and
   * ends CANCELLED when it stops; an ended (or ending) one is left as it is. Returns the record
   * after the call. A running job past its point of no return (JobContext.commit) is not
   * cancelled: failed_precondition, since it will end SUCCEEDED (or FAILED), never CANCELLED.
   */
  async cancel(jobId: string): Promise<JobRecord> {
    const entry = this.#entry(jobId);
    if (entry.ending) {
      await entry.ending;
      return this.get(jobId);
    }
    const state = entry.record.state;
    if (state === "QUEUED") {
      const at = this.#queue.indexOf(entry);
      if (at >= 0) this.#queue.splice(at, 1);
      await this.#finish(entry, "CANCELLED", {
        error: { kind: "cancelled", message: "cancelled before it started" },
      });
    } else if (state === "RUNNING" && entry.committed) {
      throw new QloradError(
        "failed_precondition",
        `job ${jobId} is writing its result and can no longer be cancelled; it ends shortly ` +
          `(see WatchJob)`,
      );
    } else if (state === "RUNNING" && !entry.cancelRequested) {
      entry.cancelRequested = true;
      entry.controller?.abort(new CancelledError("cancelled by CancelJob"));
    }
    return this.get(jobId);
  }

  /**
   * The job's events from `fromSeq` (0 or 1: from the first), then live ones, ending after the
   * final event, when `signal` aborts, or when the manager closes. NOT_FOUND (thrown at once) for
   * an unknown id.
   */
  watch(jobId: string, fromSeq = 1, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    const entry = this.#entry(jobId);
    return this.#follow(entry, Math.max(1, fromSeq), signal);
  }

  /** The whole event log of a job (a snapshot). */
  async events(jobId: string): Promise<JobEvent[]> {
    const entry = this.#entry(jobId);
    return structuredClone(entry.events ?? await this.#readEvents(entry));
  }

  /**
   * Stops taking jobs, aborts the running one and waits for it (at most the close timeout), ends
   * every watch, and flushes the store. A training job that stopped at a checkpoint ends FAILED
   * with a resume hint (`shutDownAtCheckpoint`), and its watchers see that final event; other
   * unfinished jobs stay QUEUED/RUNNING on disk, so the next start marks them FAILED.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Watches of queued jobs end now; those of the running job follow it until it stops.
    for (const entry of this.#jobs.values()) wake(entry);
    const running = this.#running;
    if (running) {
      running.controller?.abort(new CancelledError("server shutting down"));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.#logger.warn(`job ${running.record.job_id} did not stop within the close timeout`);
          resolve();
        }, this.#closeTimeoutMs);
      });
      await Promise.race([running.finished, timeout]);
      clearTimeout(timer);
    }
    this.#stopped = true;
    for (const entry of this.#jobs.values()) wake(entry);
    await this.#io;
  }

  // ---------------------------------------------------------------- running jobs

  #entry(jobId: string): Entry {
    const entry = this.#jobs.get(jobId);
    if (!entry) throw new QloradError("not_found", `job_id ${JSON.stringify(jobId)}: no such job`);
    return entry;
  }

  #pump(): void {
    if (this.#running || this.#closed) return;
    const entry = this.#queue.shift();
    if (!entry) return;
    this.#running = entry;
    entry.controller = new AbortController();
    entry.record.state = "RUNNING";
    entry.record.started_ms = Date.now();
    this.#append(entry, "RUNNING");
    entry.finished = this.#execute(entry);
  }

  async #execute(entry: Entry): Promise<void> {
    const signal = entry.controller!.signal;
    const ctx: JobContext = {
      jobId: entry.record.job_id,
      signal,
      emit: (payload) => {
        // While closing, the job's last events (its checkpoint) still count.
        if (entry.record.state === "RUNNING" && !this.#stopped && !entry.ending) {
          this.#append(entry, "RUNNING", payload);
        }
      },
      commit: () => {
        if (signal.aborted) {
          throw signal.reason instanceof QloradError ? signal.reason : new CancelledError();
        }
        entry.committed = true;
      },
    };
    let outcome: { state: JobState; payload?: JobPayload };
    try {
      const result = await entry.run!(ctx);
      if (entry.cancelRequested && !entry.committed) {
        // Cancelled, and the job never passed a point of no return: its result is dropped, as
        // CancelJob promised.
        throw signal.reason;
      }
      outcome = { state: "SUCCEEDED", payload: result || undefined };
    } catch (err) {
      if (signal.aborted) {
        const message = signal.reason instanceof Error ? signal.reason.message : "cancelled";
        outcome = { state: "CANCELLED", payload: { error: { kind: "cancelled", message } } };
      } else {
        const e = publicError(err, {
          logger: this.#logger,
          hostDirs: this.#hostDirs,
          context: `job ${entry.record.job_id}`,
        });
        outcome = { state: "FAILED", payload: { error: e } };
      }
    }
    entry.run = undefined;
    entry.controller = undefined;
    // Too late: close() gave up waiting; the next start marks the record FAILED.
    if (this.#stopped) {
      this.#running = undefined;
      return;
    }
    if (this.#closed && signal.aborted && !entry.cancelRequested && outcome.state !== "SUCCEEDED") {
      // Stopped by the shutdown. A job that can be resumed (a training job at a checkpoint) says
      // so now; anything else stays RUNNING on disk and is marked FAILED by the next start.
      const hint = entry.resumeHint?.();
      if (!hint) {
        this.#running = undefined;
        return;
      }
      outcome = { state: "FAILED", payload: { error: { kind: "unavailable", message: hint } } };
    }
    await this.#finish(entry, outcome.state, outcome.payload);
    this.#running = undefined;
    this.#pump();
  }

  /**
   * Ends a job: its terminal event and record are written and fsynced first, and only then
   * published (state, watchers, log out of memory), so nobody sees an outcome a crash could undo.
   */
  #finish(entry: Entry, state: JobState, payload?: JobPayload): Promise<void> {
    const record = entry.record;
    const event = this.#event(record, state, payload);
    const ended: JobRecord = {
      ...record,
      state,
      finished_ms: event.time_ms,
      last_seq: event.seq,
      last_event: event,
      ...(payload && "error" in payload ? { error: payload.error } : {}),
    };
    const line = JSON.stringify(event) + "\n";
    const snapshot = JSON.stringify({ version: RECORD_VERSION, ...ended });
    entry.ending = new Promise<void>((resolve) => {
      this.#write(async () => {
        try {
          await appendFileDurably(this.#eventsPath(record.job_id), line);
          await writeFileAtomic(this.#recordPath(record.job_id), snapshot);
        } finally {
          // Published even when the disk failed (logged by #write): a job never hangs half-ended.
          Object.assign(record, ended);
          entry.events?.push(event);
          entry.events = undefined;
          entry.ending = undefined;
          wake(entry);
          resolve();
        }
      });
    });
    return entry.ending;
  }

  /** The next event of a job's log. */
  #event(record: JobRecord, state: JobState, payload?: JobPayload): JobEvent {
    return {
      job_id: record.job_id,
      seq: record.last_seq + 1,
      time_ms: Date.now(),
      state,
      ...(payload ? { payload: structuredClone(payload) } : {}),
    };
  }

  /**
   * Appends a non-terminal event, persists it (and the record on a state change), and wakes
   * watchers. (Terminal events go through #finish.)
   */
  #append(entry: Entry, state: JobState, payload?: JobPayload): void {
    const record = entry.record;
    const event = this.#event(record, state, payload);
    const stateChanged = record.last_event?.state !== state;
    record.last_seq = event.seq;
    record.last_event = event;
    entry.events!.push(event);
    const line = JSON.stringify(event) + "\n";
    const snapshot = stateChanged ? JSON.stringify({ version: RECORD_VERSION, ...record }) : "";
    this.#write(async () => {
      await Deno.writeTextFile(this.#eventsPath(record.job_id), line, { append: true });
      if (snapshot) await writeFileAtomic(this.#recordPath(record.job_id), snapshot);
    });
    wake(entry);
  }

  async *#follow(entry: Entry, fromSeq: number, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    let next = fromSeq;
    while (true) {
      if (!entry.events) {
        // An ended job's log has left memory: stream it from disk, a chunk at a time, so a slow
        // watcher of a long log holds a few events, not the whole log.
        yield* this.#streamLog(entry, next, signal);
        return;
      }
      const events = entry.events;
      while (next <= events.length) {
        const ev = events[next - 1];
        next++;
        yield structuredClone(ev);
        if (isTerminal(ev.state)) return;
      }
      if (isTerminal(entry.record.state) || signal?.aborted) return;
      if (this.#stopped || (this.#closed && entry !== this.#running)) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          entry.waiters.delete(done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        entry.waiters.add(done);
        signal?.addEventListener("abort", done);
      });
    }
  }

  // ---------------------------------------------------------------- store

  #recordPath(jobId: string): string {
    return path.join(this.#dir, `${jobId}.json`);
  }

  #eventsPath(jobId: string): string {
    return path.join(this.#dir, `${jobId}.events.jsonl`);
  }

  #write(op: () => Promise<void>): void {
    this.#io = this.#io.then(op).catch((err) =>
      this.#logger.error(`could not write the job store in ${this.#dir}`, err)
    );
  }

  /** An ended job's events from `fromSeq`, read from its log as they are consumed. */
  async *#streamLog(entry: Entry, fromSeq: number, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    await this.#io;
    let seq = 0;
    try {
      for await (
        const { text } of readLines(this.#eventsPath(entry.record.job_id), {
          label: `job ${entry.record.job_id} log`,
          maxLineBytes: MAX_EVENT_LINE_BYTES,
        })
      ) {
        // (Not ended by close(): the log is complete on disk, and a watcher that was following
        // the job when it ended must still get its final event.)
        if (signal?.aborted) return;
        if (!text.trim()) continue;
        let ev: JobEvent;
        try {
          ev = JSON.parse(text) as JobEvent;
        } catch {
          return; // a torn last line
        }
        if (ev.seq !== seq + 1) continue;
        seq = ev.seq;
        if (seq < fromSeq) continue;
        yield ev;
        if (isTerminal(ev.state)) return;
      }
    } catch (err) {
      if (err instanceof QloradError && err.kind === "not_found") return;
      throw err;
    }
  }

  /** Reads a job's log, skipping a torn last line (a crash mid-append). */
  async #readEvents(entry: Entry): Promise<JobEvent[]> {
    await this.#io;
    let text: string;
    try {
      text = await Deno.readTextFile(this.#eventsPath(entry.record.job_id));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return [];
      throw err;
    }
    const events: JobEvent[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        const ev = JSON.parse(line) as JobEvent;
        if (ev.seq === events.length + 1) events.push(ev);
      } catch {
        break;
      }
    }
    return events;
  }

  async #load(): Promise<void> {
    // List first: repairing writes (and renames) files in the same folder.
    const items = await Array.fromAsync(Deno.readDir(this.#dir));
    items.sort((a, b) => a.name < b.name ? -1 : 1);
    for (const item of items) {
      const file = path.join(this.#dir, item.name);
      if (item.name.includes(PARTIAL_MARK)) {
        await Deno.remove(file).catch(() => {});
        continue;
      }
      if (!item.isFile || !item.name.endsWith(".json")) continue;
      let record: JobRecord;
      try {
        const parsed = JSON.parse(await Deno.readTextFile(file));
        const { version: _version, ...rest } = parsed;
        record = rest as JobRecord;
        if (typeof record.job_id !== "string" || typeof record.state !== "string") {
          throw new Error("not a job record");
        }
      } catch (err) {
        this.#logger.warn(`skipping unreadable job record ${item.name}: ${err}`);
        continue;
      }
      const entry: Entry = { record, waiters: new Set() };
      this.#jobs.set(record.job_id, entry);
      if (record.request_id) this.#requests.set(requestKey(record.kind, record.request_id), entry);
      if (!isTerminal(record.state)) await this.#markInterrupted(entry);
    }
  }

  /**
   * A job the previous server left QUEUED/RUNNING: repair its log and end it FAILED, unless the
   * log already ends with a terminal event (the server died between the log and the record):
   * that outcome stands, and the record catches up with it.
   */
  async #markInterrupted(entry: Entry): Promise<void> {
    const record = entry.record;
    const message = record.state === "RUNNING" ? RESTARTED_WHILE_RUNNING : RESTARTED_WHILE_QUEUED;
    const events = await this.#readEvents(entry);
    // Rewrite the log without any torn tail, so the next append starts on a fresh line.
    await writeFileAtomic(
      this.#eventsPath(record.job_id),
      events.map((e) => JSON.stringify(e) + "\n").join(""),
    );
    const last = events.at(-1);
    if (last && isTerminal(last.state)) {
      const payload = last.payload;
      Object.assign(record, {
        state: last.state,
        finished_ms: last.time_ms,
        last_seq: last.seq,
        last_event: last,
        ...(payload && "error" in payload ? { error: payload.error } : {}),
      });
      await writeFileAtomic(
        this.#recordPath(record.job_id),
        JSON.stringify({ version: RECORD_VERSION, ...record }),
      );
      this.#logger.warn(`job ${record.job_id}: record repaired from its log (${last.state})`);
      return;
    }
    record.last_seq = events.length;
    if (last) record.last_event = last;
    entry.events = events;
    await this.#finish(entry, "FAILED", { error: { kind: "unavailable", message } });
    await this.#io;
    this.#logger.warn(`job ${record.job_id} marked FAILED: ${message}`);
  }
}

/** An event line longer than this is not read back (a log line is an event, at most ~2 MiB). */
const MAX_EVENT_LINE_BYTES = 64 << 20;

function requestKey(kind: JobKind, requestId: string): string {
  return `${kind}\0${requestId}`;
}

function wake(entry: Entry): void {
  for (const w of [...entry.waiters]) w();
}

function newJobId(kind: JobKind, now: number): string {
  const rand = crypto.getRandomValues(new Uint8Array(4));
  const hex = [...rand].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${kind}-${now.toString(36)}-${hex}`;
}
