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
import { PARTIAL_MARK, writeFileAtomic } from "../io/atomic.ts";

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
}

export interface JobContext {
  jobId: string;
  /** Aborted by CancelJob or server shutdown; the job should throw CancelledError soon after. */
  signal: AbortSignal;
  /** Appends an event (state RUNNING) to the job's log. */
  emit(payload: JobPayload): void;
}

/** A job's body. What it resolves to is the payload of the final SUCCEEDED event. */
export type JobRun = (ctx: JobContext) => Promise<JobPayload | void>;

export interface JobSubmission {
  kind: JobKind;
  summary: string;
  request: unknown;
  run: JobRun;
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
  controller?: AbortController;
  cancelRequested?: boolean;
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

  /** Queues a job; it starts when the jobs ahead of it have ended. */
  submit(sub: JobSubmission): JobRecord {
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
      },
      events: [],
      run: sub.run,
      waiters: new Set(),
    };
    this.#jobs.set(entry.record.job_id, entry);
    this.#append(entry, "QUEUED");
    this.#queue.push(entry);
    this.#pump();
    return this.get(entry.record.job_id);
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
   * ends CANCELLED when it stops; an ended one is left as it is. Returns the record after the call.
   */
  cancel(jobId: string): JobRecord {
    const entry = this.#entry(jobId);
    const state = entry.record.state;
    if (state === "QUEUED") {
      this.#queue.splice(this.#queue.indexOf(entry), 1);
      this.#finish(entry, "CANCELLED", {
        error: { kind: "cancelled", message: "cancelled before it started" },
      });
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
        if (entry.record.state === "RUNNING" && !this.#stopped) {
          this.#append(entry, "RUNNING", payload);
        }
      },
    };
    let outcome: { state: JobState; payload?: JobPayload };
    try {
      const result = await entry.run!(ctx);
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
    this.#running = undefined;
    // Too late: close() gave up waiting; the next start marks the record FAILED.
    if (this.#stopped) return;
    if (this.#closed && signal.aborted && !entry.cancelRequested) {
      // Stopped by the shutdown. A training job that checkpointed can be resumed: say so now.
      // Anything else stays RUNNING on disk and is marked FAILED by the next start.
      const hint = this.#resumeHint(entry);
      if (!hint) return;
      outcome = { state: "FAILED", payload: { error: { kind: "unavailable", message: hint } } };
    }
    this.#finish(entry, outcome.state, outcome.payload);
    this.#pump();
  }

  /** For a training job with a checkpoint: how to resume it (`shutDownAtCheckpoint`). */
  #resumeHint(entry: Entry): string | undefined {
    const output = (entry.record.request as { output_path?: unknown } | undefined)?.output_path;
    if (entry.record.kind !== "train" || typeof output !== "string" || !output) return undefined;
    const last = entry.events?.findLast((e) => e.payload && "checkpoint" in e.payload);
    if (!last?.payload || !("checkpoint" in last.payload)) return undefined;
    const { step, path: checkpoint } = last.payload.checkpoint;
    return shutDownAtCheckpoint(step, checkpoint, output);
  }

  #finish(entry: Entry, state: JobState, payload?: JobPayload): void {
    entry.record.state = state;
    entry.record.finished_ms = Date.now();
    if (payload && "error" in payload) entry.record.error = payload.error;
    this.#append(entry, state, payload);
    // Once the log is on disk, an ended job's events leave memory (watches read the file).
    this.#write(() => {
      entry.events = undefined;
      return Promise.resolve();
    });
  }

  /** Appends an event, persists it (and the record on a state change), and wakes watchers. */
  #append(entry: Entry, state: JobState, payload?: JobPayload): void {
    const record = entry.record;
    const event: JobEvent = {
      job_id: record.job_id,
      seq: record.last_seq + 1,
      time_ms: Date.now(),
      state,
      ...(payload ? { payload: structuredClone(payload) } : {}),
    };
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
      // An ended job's log may have left memory: it is on disk then.
      const events = entry.events ?? await this.#readEvents(entry);
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
      if (!isTerminal(record.state)) await this.#markInterrupted(entry);
    }
  }

  /** A job the previous server left QUEUED/RUNNING: repair its log and end it FAILED. */
  async #markInterrupted(entry: Entry): Promise<void> {
    const record = entry.record;
    const message = record.state === "RUNNING" ? RESTARTED_WHILE_RUNNING : RESTARTED_WHILE_QUEUED;
    const events = await this.#readEvents(entry);
    // Rewrite the log without any torn tail, so the next append starts on a fresh line.
    await writeFileAtomic(
      this.#eventsPath(record.job_id),
      events.map((e) => JSON.stringify(e) + "\n").join(""),
    );
    record.last_seq = events.length;
    entry.events = events;
    this.#finish(entry, "FAILED", { error: { kind: "unavailable", message } });
    await this.#io;
    this.#logger.warn(`job ${record.job_id} marked FAILED: ${message}`);
  }
}

function wake(entry: Entry): void {
  for (const w of [...entry.waiters]) w();
}

function newJobId(kind: JobKind, now: number): string {
  const rand = crypto.getRandomValues(new Uint8Array(4));
  const hex = [...rand].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${kind}-${now.toString(36)}-${hex}`;
}
