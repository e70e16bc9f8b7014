/**
 * The job manager: the queue and scheduler of one server. One job runs at a time (one GPU), the
 * others wait in a bounded FIFO queue. Each job has an append-only event log (seq 1, 2, ...) that
 * subscribers replay from any seq and then follow live; a job never depends on its subscribers.
 * Records and logs are kept by a JobStore (store.ts; the local one by default), written in call
 * order behind the manager's own in-memory view, which answers get/list/watch at once. A job ends
 * only once its terminal event and record are durable in the store. On a graceful shutdown
 * (close) a training job that stopped at a checkpoint ends FAILED at once, with a message that
 * says how to resume it; at start, jobs a dead server left unended are ended FAILED (recovery.ts).
 *
 * Fleet mode (`fleet: true`, a store shared by several replicas, issue 11): dispatch is BullMQ's
 * (fleet_queue.ts). submit stores the job QUEUED, then adds it to the fleet queue under its own
 * id; each replica's one worker (concurrency 1: only while its GPU is free) is given a job, and
 * `#take` runs it to its end here, rebuilding its body from its kind and stored request
 * (useRebuilder) when it was submitted elsewhere. BullMQ's stalled-job check gives a dead or
 * frozen replica's job to another worker: a takeover (a Train resumes from its checkpoint).
 * Reads (lookup, listJobs, watch) go to the store, so every replica answers for every job;
 * CancelJob for a job another replica runs marks it cancel_requested in the store, and the owner
 * sees that at its next lease renewal. Nothing is ended FAILED at start.
 *
 * Who holds what: BullMQ's lock says which worker holds a job in the queue; its token is random,
 * so it cannot fence. The store's lease on the job (claim/renew/release, TTL = BullMQ's
 * lockDuration, both renewed every third of it) carries the fencing token, a number that grows
 * with every claim: every write of a running job (append, put, end) names it and the store refuses
 * it once another claim took the job, and commit() checks the lease is live. The worker claims
 * the lease before it runs a job (and hands the job back for a moment while another owner's
 * lease still holds); a job whose end the store refused, or that a shutdown left unended, goes
 * back to the queue rather than being completed there, so the two locks cannot leave a job
 * unended with nobody to run it.
 *
 * Plain objects only: payloads use the proto's field names, and the gRPC handlers translate.
 */
import { CancelledError, QloradError } from "../../util/errors.ts";
import { consoleLogger, publicError } from "../status.ts";
import type { Logger } from "../status.ts";
import { endedRecord, isTerminal, nextEvent, selectRecords } from "./records.ts";
import type {
  JobErrorInfo,
  JobEvent,
  JobKind,
  JobPayload,
  JobRecord,
  JobState,
  ListFilter,
} from "./records.ts";
import { StoreConflictError } from "./store.ts";
import type { JobStore, Lease, StoredJob } from "./store.ts";
import { localJobsDir, LocalJobStore } from "./local_store.ts";
import { endInterrupted } from "./recovery.ts";
import type { DispatchData, FleetQueue, TakeOutcome } from "./fleet_queue.ts";

export interface JobContext {
  jobId: string;
  /** Aborted by CancelJob or server shutdown; the job should throw CancelledError soon after. */
  signal: AbortSignal;
  /** Appends an event (state RUNNING) to the job's log. */
  emit(payload: JobPayload): void;
  /**
   * The point of no return, called just before the job makes its result visible (renames its
   * output into place): throws CancelledError if the job was cancelled or the server is stopping;
   * afterwards CancelJob is refused (failed_precondition) and the job runs to its end. In fleet
   * mode it also throws (unavailable) unless this replica's lease is still live by the store's
   * expiry time, so a stale owner (paused past its lease) cannot commit.
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

/** A job's body rebuilt on a replica that did not receive its request (fleet mode). */
export interface RebuiltJob {
  run: JobRun;
  resumeHint?: () => string | undefined;
  /** Said in the job's log when it is taken over (e.g. "resuming from checkpoint ..."). */
  note?: string;
}

/** Rebuilds job bodies from their kind and stored request (the handlers' runner registry). */
export interface JobRebuilder {
  /** Whether jobs of this kind can be rebuilt here at all. */
  has(kind: JobKind): boolean;
  /** The body of `record` (its log so far in `events`); undefined when it cannot be rebuilt. */
  build(record: JobRecord, events: JobEvent[]): Promise<RebuiltJob | undefined>;
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
  /**
   * Where jobs are kept. Default: the local store under `<dataDir>/.qlorad/jobs`, which the
   * manager opens and closes; a store given here is the caller's to close.
   */
  store?: JobStore;
  /** This server's name on the leases it takes. Default `local:<pid>`. */
  owner?: string;
  /** How long a running job's lease lasts; renewed every third of it. Default 30 s. */
  leaseTtlMs?: number;
  /**
   * The store is shared with other replicas (see the header): jobs are dispatched by its fleet
   * queue, reads answered from it, nothing failed at start. Needs a shared `store` with a
   * `fleetQueue` (Redis) and a unique `owner`.
   */
  fleet?: boolean;
  /**
   * Fleet mode: start taking jobs from the queue as soon as the manager is open (default). A
   * server passes false and calls `startFleetWorker()` once its handlers have registered the
   * runners its rebuilder uses: a job taken before could not be rebuilt and would end FAILED.
   */
  startFleetWorker?: boolean;
}

/** The error of a training job that a shutdown stopped at a checkpoint. */
export function shutDownAtCheckpoint(step: number, checkpoint: string, output: string): string {
  return `server shut down at step ${step} (checkpoint ${checkpoint}); ` +
    `resume with resume_from=${JSON.stringify(output)}`;
}

/**
 * How long a lease on a running job lasts (the local store's last until released); the manager
 * renews it every third of that while the job runs, so a shared store's lease outlives the job.
 */
const LEASE_TTL_MS = 30_000;

interface Entry {
  record: JobRecord;
  /** The store's generation of the record as last written (0: not created yet). */
  generation: number;
  /** The lease this server holds while it runs the job. */
  lease?: Lease;
  /** Renews `lease` while the job runs (#keepLease). */
  renewal?: ReturnType<typeof setInterval>;
  /** The whole log while the job is active; ended jobs' logs are read from the store. */
  events?: JobEvent[];
  /** The last seq the store has (events after it are still to be written, or failed to be). */
  storedSeq: number;
  run?: JobRun;
  resumeHint?: () => string | undefined;
  controller?: AbortController;
  cancelRequested?: boolean;
  /** Past its point of no return (JobContext.commit): no longer cancellable. */
  committed?: boolean;
  /** Its terminal event is being made durable; resolves once it is published. */
  ending?: Promise<void>;
  /** The store said another server took the job over (#keepLease). */
  leaseLost?: boolean;
  finished?: Promise<void>;
  waiters: Set<() => void>;
}

export class JobManager {
  readonly #store: JobStore;
  readonly #ownsStore: boolean;
  readonly #owner: string;
  readonly #maxQueued: number;
  readonly #logger: Logger;
  readonly #hostDirs: string[];
  readonly #closeTimeoutMs: number;
  readonly #leaseTtlMs: number;
  readonly #fleet: boolean;
  /** Fleet mode: the BullMQ dispatch queue, and this replica's worker on it. */
  #fleetQueue?: FleetQueue;
  #workerStarted = false;
  /** Fleet mode: how long a job this replica cannot run waits before it is offered again. */
  readonly #handBackMs: number;
  #rebuilder?: JobRebuilder;
  /** Fleet mode: bodies of jobs submitted here, for when this replica claims them. */
  readonly #localRuns = new Map<
    string,
    { run: JobRun; resumeHint?: () => string | undefined; since: number }
  >();
  /** Aborted by close(): ends fleet-mode watches of the store. */
  readonly #closing = new AbortController();
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
  /** Store writes, in order. */
  #io: Promise<void> = Promise.resolve();

  private constructor(opts: JobManagerOptions, store: JobStore, ownsStore: boolean) {
    this.#store = store;
    this.#ownsStore = ownsStore;
    this.#owner = opts.owner ?? `local:${Deno.pid}`;
    this.#maxQueued = opts.maxQueued ?? 16;
    this.#logger = opts.logger ?? consoleLogger;
    this.#hostDirs = opts.hostDirs ?? [opts.dataDir];
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? 30_000;
    this.#leaseTtlMs = opts.leaseTtlMs ?? LEASE_TTL_MS;
    this.#fleet = opts.fleet ?? false;
    this.#handBackMs = Math.min(1000, Math.max(20, Math.floor(this.#leaseTtlMs / 5)));
  }

  /** Opens (creating if needed) the job store and reloads earlier jobs. */
  static async open(opts: JobManagerOptions): Promise<JobManager> {
    const logger = opts.logger ?? consoleLogger;
    const store = opts.store ?? await LocalJobStore.open(localJobsDir(opts.dataDir), logger);
    const m = new JobManager(opts, store, !opts.store);
    if (m.#fleet) {
      if (!opts.store?.fleetQueue) {
        throw new Error("fleet mode needs a shared job store with a fleet queue (Redis)");
      }
      // The store is the truth; a dead replica's jobs are taken over, never failed here.
      m.#fleetQueue = opts.store.fleetQueue(m.#owner, m.#leaseTtlMs);
      await m.#requeueUnended();
      if (opts.startFleetWorker ?? true) await m.startFleetWorker();
    } else {
      await m.#load();
    }
    return m;
  }

  /** Whether the store is shared with other replicas (fleet mode). */
  get fleet(): boolean {
    return this.#fleet;
  }

  /** Fleet mode: how bodies of jobs submitted on other replicas are rebuilt here. */
  useRebuilder(rebuilder: JobRebuilder): void {
    this.#rebuilder = rebuilder;
  }

  /**
   * Fleet mode: this replica's worker starts taking jobs from the queue (once; resolves when it
   * is connected). Called by open() unless `startFleetWorker` was false.
   */
  async startFleetWorker(): Promise<void> {
    if (!this.#fleetQueue) throw new Error("startFleetWorker: not in fleet mode");
    if (this.#workerStarted) return;
    this.#workerStarted = true;
    await this.#fleetQueue.run((jobId, data) => this.#take(jobId, data));
  }

  /**
   * submit, in either mode: in fleet mode the job is stored QUEUED (the store enforces the
   * request id across replicas) and whichever replica is free runs it.
   */
  async submitJob(sub: JobSubmission): Promise<JobRecord> {
    if (!this.#fleet) return this.submit(sub);
    const known = await this.findRequestAsync(sub.kind, sub.requestId, sub.fingerprint);
    if (known) return known;
    if (this.#closed) throw new QloradError("unavailable", "the server is shutting down");
    const depth = (await this.fleetCounts().catch((err) => {
      throw this.#queueUnreachable(err);
    })).waiting;
    if (depth >= this.#maxQueued) {
      throw new QloradError(
        "resource_exhausted",
        `job queue is full (${depth} jobs waiting in the fleet); try again later`,
      );
    }
    const now = Math.max(Date.now(), this.#lastCreatedMs + 1);
    this.#lastCreatedMs = now;
    const record: JobRecord = {
      job_id: newJobId(sub.kind, now),
      kind: sub.kind,
      state: "QUEUED",
      created_ms: now,
      summary: sub.summary,
      request: sub.request,
      last_seq: 0,
      ...(sub.requestId ? { request_id: sub.requestId, fingerprint: sub.fingerprint } : {}),
    };
    const created = await this.#store.create(record);
    if (!created.created) {
      return this.#checkFingerprint(created.job.record, sub.requestId!, sub.fingerprint);
    }
    await this.#forgetLocalRuns();
    this.#localRuns.set(record.job_id, {
      run: sub.run,
      resumeHint: sub.resumeHint,
      since: Date.now(),
    });
    // A replica runs a job only once its log has this first event (#adopt).
    const event = nextEvent(record, "QUEUED");
    await this.#store.append(event);
    record.last_seq = event.seq;
    record.last_event = event;
    // The record catches up with its log; a replica that claimed it meanwhile has written it.
    await this.#store.put(record, { expectGeneration: created.job.generation }).catch(() => {});
    // Queued last: a worker is given only a job whose record and first event are stored.
    try {
      await this.#fleetQueue!.add(record.job_id, { submitter: this.#owner });
    } catch (err) {
      await this.#endUnqueued(record.job_id, err);
      throw this.#queueUnreachable(err);
    }
    return structuredClone(record);
  }

  /** A fleet queue call that failed (Redis away): UNAVAILABLE, naming where the queue is. */
  #queueUnreachable(err: unknown): QloradError {
    if (err instanceof QloradError) return err;
    return new QloradError(
      "unavailable",
      `the fleet queue on ${this.#store.location} is unreachable ` +
        `(${err instanceof Error ? err.message : err}); try again`,
      { cause: err },
    );
  }

  /** findRequest, in either mode (fleet mode asks the store). */
  async findRequestAsync(
    kind: JobKind,
    requestId?: string,
    fingerprint?: string,
  ): Promise<JobRecord | undefined> {
    if (!this.#fleet) return this.findRequest(kind, requestId, fingerprint);
    if (!requestId) return undefined;
    const stored = await this.#store.findRequest(kind, requestId);
    return stored && this.#checkFingerprint(stored.record, requestId, fingerprint);
  }

  /** get, in either mode (fleet mode: this replica's running job from memory, others from the store). */
  async lookup(jobId: string): Promise<JobRecord> {
    if (!this.#fleet) return this.get(jobId);
    const running = this.#running;
    if (running?.record.job_id === jobId && !isTerminal(running.record.state)) {
      return structuredClone(running.record);
    }
    const stored = await this.#store.get(jobId);
    if (!stored) throw noSuchJob(jobId);
    return stored.record;
  }

  /** list, in either mode (fleet mode: every replica's jobs, from the store). */
  async listJobs(filter: ListFilter = {}): Promise<JobRecord[]> {
    if (!this.#fleet) return this.list(filter);
    return (await this.#store.list(filter)).map((s) => s.record);
  }

  #checkFingerprint(record: JobRecord, requestId: string, fingerprint?: string): JobRecord {
    if (fingerprint !== undefined && record.fingerprint !== fingerprint) {
      throw new QloradError(
        "failed_precondition",
        `request_id ${JSON.stringify(requestId)} was used for job ${record.job_id} with a ` +
          `different request; use a new request_id`,
      );
    }
    return structuredClone(record);
  }

  /**
   * Queues a job; it starts when the jobs ahead of it have ended. With a request id already known
   * for this kind, returns that job's record instead (failed_precondition when the request
   * differs).
   */
  submit(sub: JobSubmission): JobRecord {
    if (this.#fleet) throw new Error("fleet mode: submit through submitJob (the store's queue)");
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
      generation: 0,
      events: [],
      storedSeq: 0,
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
    return structuredClone(selectRecords([...this.#jobs.values()].map((e) => e.record), filter));
  }

  /**
   * Cancels a job: a queued one ends CANCELLED at once; a running one has its signal aborted and
   * ends CANCELLED when it stops; an ended (or ending) one is left as it is. Returns the record
   * after the call. A running job past its point of no return (JobContext.commit) is not
   * cancelled: failed_precondition, since it will end SUCCEEDED (or FAILED), never CANCELLED.
   */
  async cancel(jobId: string): Promise<JobRecord> {
    if (this.#fleet && this.#running?.record.job_id !== jobId) {
      return await this.#cancelRemote(jobId);
    }
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
    // Fleet mode: always the store's log, the one seq order every replica shows (an owner's
    // events not yet stored could still be refused by the fence).
    if (this.#fleet) return this.#followStore(jobId, Math.max(1, fromSeq), signal);
    const entry = this.#entry(jobId);
    return this.#follow(entry, Math.max(1, fromSeq), signal);
  }

  /** The whole event log of a job (a snapshot). */
  async events(jobId: string): Promise<JobEvent[]> {
    const entry = this.#entry(jobId);
    if (entry.events) return structuredClone(entry.events);
    await this.#io;
    return await Array.fromAsync(this.#store.read(jobId, 1));
  }

  /**
   * Stops taking jobs, aborts the running one and waits for it (at most the close timeout), ends
   * every watch, and flushes the store. A training job that stopped at a checkpoint ends FAILED
   * with a resume hint (`shutDownAtCheckpoint`), and its watchers see that final event; other
   * unfinished jobs stay QUEUED/RUNNING in the store, so the next start marks them FAILED.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // The worker takes no new job; the one it holds goes back to the queue once it has stopped.
    const queueClosed = this.#fleetQueue?.close().catch((err) =>
      this.#logger.warn(`could not close the fleet queue: ${err}`)
    );
    this.#closing.abort();
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
    if (queueClosed) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        queueClosed,
        new Promise((resolve) => timer = setTimeout(resolve, this.#closeTimeoutMs)),
      ]);
      clearTimeout(timer);
    }
    this.#stopped = true;
    for (const entry of this.#jobs.values()) wake(entry);
    await this.#io;
    if (this.#ownsStore) await this.#store.close();
  }

  // ---------------------------------------------------------------- running jobs

  #entry(jobId: string): Entry {
    const entry = this.#jobs.get(jobId);
    if (!entry) throw noSuchJob(jobId);
    return entry;
  }

  #pump(): void {
    // Fleet mode: the fleet queue's worker asks for the next job itself (#take).
    if (this.#fleet) return;
    if (this.#running || this.#closed) return;
    const entry = this.#queue.shift();
    if (!entry) return;
    this.#running = entry;
    entry.controller = new AbortController();
    entry.record.state = "RUNNING";
    entry.record.started_ms = Date.now();
    // The lease comes first in the write order, so the RUNNING event and everything after it
    // are written under its fence.
    const claimed = this.#write(async () => {
      const lease = await this.#store.claim(entry.record.job_id, this.#owner, this.#leaseTtlMs);
      if (!lease) throw new Error(`job ${entry.record.job_id} is claimed by another server`);
      entry.lease = lease;
      this.#keepLease(entry);
    });
    this.#append(entry, "RUNNING");
    entry.finished = this.#execute(entry, claimed);
  }

  async #execute(entry: Entry, claimed: Promise<boolean>): Promise<void> {
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
        if (this.#fleet) this.#checkLease(entry);
        entry.committed = true;
      },
    };
    let outcome: { state: JobState; payload?: JobPayload };
    try {
      // A job runs only under its lease (a store that could not grant it: the job fails).
      if (!await claimed) {
        throw new QloradError(
          "unavailable",
          "this server could not claim the job in the job store",
        );
      }
      // Cancelled (or shut down) before it started: it never runs.
      if (signal.aborted) throw signal.reason;
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
      clearInterval(entry.renewal);
      this.#running = undefined;
      return;
    }
    if (this.#closed && signal.aborted && !entry.cancelRequested && outcome.state !== "SUCCEEDED") {
      // Stopped by the shutdown. A job that can be resumed (a training job at a checkpoint) says
      // so now; anything else stays RUNNING in the store and is marked FAILED by the next start.
      // In a fleet another replica takes the job over (a training job from its checkpoint).
      const hint = this.#fleet ? undefined : entry.resumeHint?.();
      if (!hint) {
        this.#release(entry);
        this.#running = undefined;
        return;
      }
      outcome = { state: "FAILED", payload: { error: { kind: "unavailable", message: hint } } };
    }
    await this.#finish(entry, outcome.state, outcome.payload);
    this.#release(entry);
    this.#running = undefined;
    this.#pump();
  }

  /**
   * Ends a job: its terminal event and record are made durable in the store first, and only then
   * published (state, watchers, log out of memory), so nobody sees an outcome a crash could undo.
   */
  #finish(entry: Entry, state: JobState, payload?: JobPayload): Promise<void> {
    const record = entry.record;
    const event = nextEvent(record, state, payload);
    const ended = endedRecord(record, event);
    entry.ending = new Promise<void>((resolve) => {
      this.#write(async () => {
        try {
          await this.#untilStoreAnswers(entry, async () => {
            await this.#storeEvents(entry, event.seq - 1);
            entry.generation = await this.#fencedWrite(
              entry,
              ended,
              (generation) =>
                this.#store.end(event, ended, {
                  expectGeneration: generation,
                  fence: entry.lease?.token,
                }),
            );
          });
        } finally {
          // Published even when the store failed (logged by #write): a job never hangs
          // half-ended.
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

  /**
   * Runs a job's end write again while the store is unreachable and the job's lease still holds
   * (the renewals keep it alive meanwhile): an end lost to a store outage would leave the job
   * RUNNING in the store, and another server would end it FAILED or run it again. Gives up when
   * the lease is lost (the new owner decides the outcome) or the server shuts down.
   */
  async #untilStoreAnswers(entry: Entry, write: () => Promise<void>): Promise<void> {
    for (let delayMs = 100;; delayMs = Math.min(2000, delayMs * 2)) {
      try {
        return await write();
      } catch (err) {
        const unreachable = err instanceof QloradError && err.kind === "unavailable";
        if (!unreachable || !entry.lease || entry.leaseLost || this.#closing.signal.aborted) {
          throw err;
        }
        this.#logger.warn(
          `job ${entry.record.job_id}: the job store is unreachable; writing its end again in ` +
            `${delayMs} ms`,
        );
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }

  /**
   * Renews the job's lease every third of its time while the job runs. A lease the store says is
   * lost (another server took the job over) stops the job: its writes would be refused anyway.
   */
  #keepLease(entry: Entry): void {
    const jobId = entry.record.job_id;
    const timer = setInterval(async () => {
      const lease = entry.lease;
      if (!lease) return;
      try {
        const renewed = await this.#store.renew(lease, this.#leaseTtlMs);
        if (entry.lease !== lease) return; // released meanwhile
        if (renewed) {
          entry.lease = renewed;
          if (this.#fleet) await this.#checkCancelRequested(entry);
          return;
        }
        clearInterval(timer);
        entry.leaseLost = true;
        const lost = `job ${jobId} lost its lease in the job store (another server took it over)`;
        this.#logger.error(lost);
        entry.controller?.abort(new QloradError("unavailable", lost));
      } catch (err) {
        // The store is unreachable: try again at the next tick (the lease may still be live).
        this.#logger.warn(`job ${jobId}: could not renew its lease: ${err}`);
      }
    }, Math.max(1, Math.floor(this.#leaseTtlMs / 3)));
    // Never what keeps a process alive.
    Deno.unrefTimer(timer);
    entry.renewal = timer;
  }

  /** Gives up the job's lease (after its end, or when a shutdown leaves it unended). */
  #release(entry: Entry): void {
    clearInterval(entry.renewal);
    entry.renewal = undefined;
    this.#write(async () => {
      const lease = entry.lease;
      entry.lease = undefined;
      if (lease) await this.#store.release(lease);
    });
  }

  /**
   * Appends a non-terminal event, stores it (and the record on a state change), and wakes
   * watchers. (Terminal events go through #finish.)
   */
  #append(entry: Entry, state: JobState, payload?: JobPayload, storeRecord = false): void {
    const record = entry.record;
    const event = nextEvent(record, state, payload);
    const stateChanged = storeRecord || record.last_event?.state !== state;
    record.last_seq = event.seq;
    record.last_event = event;
    entry.events!.push(event);
    const snapshot = stateChanged ? structuredClone(record) : undefined;
    this.#write(async () => {
      if (entry.generation === 0) {
        // The job's first write: the store learns of it before its log starts.
        const created = await this.#store.create(snapshot ?? structuredClone(record));
        entry.generation = created.job.generation;
        await this.#storeEvents(entry, event.seq);
        return;
      }
      await this.#storeEvents(entry, event.seq);
      if (snapshot) {
        entry.generation = await this.#fencedWrite(
          entry,
          snapshot,
          (generation) =>
            this.#store.put(snapshot, {
              expectGeneration: generation,
              fence: entry.lease?.token,
            }),
        );
      }
    });
    wake(entry);
  }

  /**
   * Appends the job's events up to `seq` that the store does not have yet, in order: an append
   * that failed (a full disk) is tried again with the next one, so the log never has a gap.
   */
  async #storeEvents(entry: Entry, seq: number): Promise<void> {
    while (entry.storedSeq < seq) {
      const event = entry.events![entry.storedSeq];
      await this.#store.append(event, { fence: entry.lease?.token });
      entry.storedSeq = event.seq;
    }
  }

  async *#follow(entry: Entry, fromSeq: number, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    let next = fromSeq;
    while (true) {
      if (!entry.events) {
        // An ended job's log has left memory: stream it from the store, a chunk at a time, so a
        // slow watcher of a long log holds a few events, not the whole log. (Not ended by
        // close(): the log is complete, and a watcher that was following the job when it ended
        // must still get its final event.)
        await this.#io;
        yield* this.#store.read(entry.record.job_id, next, { signal });
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

  // ---------------------------------------------------------------- fleet mode

  /**
   * The fleet queue's processor: runs the job `jobId` here to its end (done), or hands it back
   * to the queue. A job that has ended already (cancelled while queued) is done at once. One
   * only its submitter can run goes back, delayed, while that replica lives, and ends FAILED
   * once it is gone; a RUNNING one nobody can rebuild (its owner died) ends FAILED.
   */
  async #take(jobId: string, data: DispatchData): Promise<TakeOutcome> {
    while (true) {
      if (this.#closed) return { done: false, delayMs: 0 };
      try {
        const stored = await this.#store.get(jobId);
        if (!stored || isTerminal(stored.record.state)) {
          this.#localRuns.delete(jobId);
          return { done: true };
        }
        const record = stored.record;
        const runnable = this.#localRuns.has(jobId) ||
          (this.#rebuilder?.has(record.kind) ?? false);
        if (!runnable && record.state === "QUEUED" && await this.#submitterLives(data)) {
          return { done: false, delayMs: this.#handBackMs };
        }
        // Held: a lapsing owner's lease (its job came back through BullMQ's stalled check
        // first), a live owner that lost only BullMQ's lock (a Redis outage longer than it), or a
        // CancelJob ending the job. Back to the queue for a moment, rather than keeping this GPU
        // idle while another replica may run the job to its end.
        const lease = await this.#store.claim(jobId, this.#owner, this.#leaseTtlMs);
        if (!lease) return { done: false, delayMs: this.#handBackMs };
        if (!runnable) {
          await this.#endOrphan(lease, record.state, data.submitter);
          continue;
        }
        let entry: Entry | undefined;
        try {
          entry = await this.#adopt(lease);
        } finally {
          if (!entry) await this.#store.release(lease).catch(() => {});
        }
        if (!entry) {
          // Not started: ended meanwhile, failed to rebuild (ended FAILED), or no first event
          // yet: look again.
          await sleep(this.#handBackMs);
          continue;
        }
        await entry.finished;
        // Ended in the store: done. Refused by the fence (another replica holds the job now) or
        // left unended by a shutdown: back to the queue, for whoever runs it next.
        const after = await this.#store.get(jobId).catch(() => undefined);
        if (after && isTerminal(after.record.state)) return { done: true };
        return { done: false, delayMs: 0 };
      } catch (err) {
        this.#logger.warn(`job ${jobId}: could not take it from ${this.#store.location}: ${err}`);
        await sleep(this.#handBackMs * 5);
      }
    }
  }

  /**
   * A job stored but not queued (Redis failed in between): ended FAILED, so that it is not left
   * QUEUED with no worker ever given it. If even that fails, a replica's next start queues it.
   * (Should the add have reached Redis after all, the worker given it finds it ended.)
   */
  async #endUnqueued(jobId: string, err: unknown): Promise<void> {
    try {
      const lease = await this.#store.claim(jobId, this.#owner, this.#leaseTtlMs);
      if (!lease) return;
      await this.#endClaimed(lease, "QUEUED", "FAILED", {
        kind: "unavailable",
        message: `the job could not be queued (${err instanceof Error ? err.message : err}); ` +
          "submit it again",
      });
      this.#localRuns.delete(jobId);
    } catch (again) {
      this.#logger.warn(
        `job ${jobId} is stored but not queued; the next start queues it: ${again}`,
      );
    }
  }

  /**
   * Whether the replica that submitted a job still has its worker connected: looked at twice,
   * half a lease apart, so that a reconnecting replica is not taken for a dead one.
   */
  async #submitterLives(data: DispatchData): Promise<boolean> {
    if ((await this.#fleetQueue!.liveReplicas()).has(data.submitter)) return true;
    await sleep(this.#leaseTtlMs / 2);
    return (await this.#fleetQueue!.liveReplicas()).has(data.submitter);
  }

  /**
   * At start: every unended job in the store is on the fleet queue (an add of a job already
   * there is a no-op), so a job whose submitter died between storing and queueing it still runs.
   */
  async #requeueUnended(): Promise<void> {
    const unended = await this.#store.list({ states: ["QUEUED", "RUNNING"] });
    for (const { record } of unended) {
      await this.#fleetQueue!.add(record.job_id, { submitter: record.owner ?? "" });
    }
  }

  /** Fleet-wide: jobs waiting in the fleet queue, and jobs held by a replica's worker. */
  async fleetCounts(): Promise<{ waiting: number; active: number }> {
    if (!this.#fleetQueue) throw new Error("fleetCounts: not in fleet mode");
    return await this.#fleetQueue.counts();
  }

  /**
   * Drops the bodies of jobs submitted here that another replica has taken (rebuilt from their
   * request) or that have ended. Only those older than a minute: a young one may wait still.
   */
  async #forgetLocalRuns(): Promise<void> {
    const before = Date.now() - 60_000;
    for (const [id, local] of this.#localRuns) {
      if (local.since >= before) continue;
      const stored = await this.#store.get(id).catch(() => undefined);
      if (stored?.record.state !== "QUEUED") this.#localRuns.delete(id);
    }
  }

  /** Starts the job `lease` was taken on; undefined when it is not (or not yet) one to run here. */
  async #adopt(lease: Lease): Promise<Entry | undefined> {
    const id = lease.job_id;
    const stored = await this.#store.get(id);
    if (!stored || isTerminal(stored.record.state)) return undefined;
    const events = await Array.fromAsync(this.#store.read(id, 1));
    // Its submitter has not logged it yet (it does so right after creating it).
    if (events.length === 0 || isTerminal(events.at(-1)!.state)) return undefined;
    const takeover = stored.record.state === "RUNNING";
    // A job submitted here runs its own body, unless it is taken over: then it is rebuilt from
    // its log (a training job resumes from its last checkpoint, not from step 0).
    const local = this.#localRuns.get(id);
    const canRebuild = this.#rebuilder?.has(stored.record.kind) ?? false;
    let body: RebuiltJob | undefined;
    try {
      body = local && !(takeover && canRebuild)
        ? local
        : await this.#rebuilder?.build(stored.record, events);
    } catch (err) {
      // Its request no longer holds here (an input removed since, ...): it would fail on every
      // replica, so it ends FAILED now with the reason, as the RPC would have refused it.
      const error = publicError(err, {
        logger: this.#logger,
        hostDirs: this.#hostDirs,
        context: `job ${id}`,
      });
      await this.#endClaimed(lease, stored.record.state, "FAILED", error);
      this.#logger.warn(`job ${id} marked FAILED: ${error.message}`);
      return undefined;
    }
    if (!body || this.#running || this.#closed) return undefined;
    this.#localRuns.delete(id);
    const record: JobRecord = {
      ...stored.record,
      state: "RUNNING",
      started_ms: stored.record.started_ms ?? Date.now(),
      last_seq: events.length,
      last_event: events.at(-1),
      owner: this.#owner,
    };
    const entry: Entry = {
      record,
      generation: stored.generation,
      lease,
      events,
      storedSeq: events.length,
      run: body.run,
      resumeHint: body.resumeHint,
      controller: new AbortController(),
      waiters: new Set(),
    };
    this.#jobs.set(id, entry);
    if (record.request_id) this.#requests.set(requestKey(record.kind, record.request_id), entry);
    this.#running = entry;
    this.#keepLease(entry);
    const note = takeover
      ? `taken over by ${this.#owner} (its previous owner's lease lapsed)` +
        (body.note ? `; ${body.note}` : "")
      : undefined;
    this.#logger.info(`job ${id}: running on ${this.#owner}${takeover ? " (taken over)" : ""}`);
    this.#append(
      entry,
      "RUNNING",
      note ? { log: { level: "info", message: note } } : undefined,
      true,
    );
    if (record.cancel_requested) {
      entry.cancelRequested = true;
      entry.controller!.abort(new CancelledError("cancelled by CancelJob"));
    }
    entry.finished = this.#execute(entry, Promise.resolve(true));
    return entry;
  }

  /**
   * Fleet mode's commit check: the lease must be live until past now by the store's clock (less
   * a tenth of the TTL for clock skew and the time the commit takes): while it is, no other
   * replica can have claimed the job. A lapsed one stops the job here.
   */
  #checkLease(entry: Entry): void {
    const lease = entry.lease;
    if (lease && Date.now() < lease.expires_ms - this.#leaseTtlMs / 10) return;
    const lost = new QloradError(
      "unavailable",
      `job ${entry.record.job_id}: this replica's lease in the job store lapsed before the job ` +
        `could commit; another replica takes it over`,
    );
    this.#logger.error(lost.message);
    entry.controller?.abort(lost);
    throw lost;
  }

  /**
   * A store write of this replica's running job, retried once when another replica moved the
   * record on (CancelJob's cancel_requested): the fence says the job is still this replica's.
   */
  async #fencedWrite(
    entry: Entry,
    record: JobRecord,
    write: (generation: number) => Promise<number>,
  ): Promise<number> {
    try {
      return await write(entry.generation);
    } catch (err) {
      if (!this.#fleet || !(err instanceof StoreConflictError) || err.reason !== "generation") {
        throw err;
      }
      const stored = await this.#store.get(entry.record.job_id);
      if (!stored) throw err;
      this.#takeCancelRequest(entry, stored);
      if (stored.record.cancel_requested) record.cancel_requested = true;
      entry.generation = stored.generation;
      return await write(stored.generation);
    }
  }

  /** At a lease renewal: whether CancelJob reached another replica for this job. */
  async #checkCancelRequested(entry: Entry): Promise<void> {
    const stored = await this.#store.get(entry.record.job_id);
    if (stored) this.#takeCancelRequest(entry, stored);
  }

  #takeCancelRequest(entry: Entry, stored: StoredJob): void {
    if (!stored.record.cancel_requested || entry.cancelRequested || entry.committed) return;
    if (entry.ending || isTerminal(entry.record.state)) return;
    entry.cancelRequested = true;
    entry.record.cancel_requested = true;
    this.#logger.info(`job ${entry.record.job_id}: cancelled through another replica`);
    entry.controller?.abort(new CancelledError("cancelled by CancelJob"));
  }

  /**
   * CancelJob for a job this replica does not run: a QUEUED one nobody claimed is ended
   * CANCELLED here (under a claim of its own); otherwise the record is marked cancel_requested
   * (compare-and-set) for its owner to see.
   */
  async #cancelRemote(jobId: string): Promise<JobRecord> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const stored = await this.#store.get(jobId);
      if (!stored) throw noSuchJob(jobId);
      const r = stored.record;
      if (isTerminal(r.state) || r.cancel_requested) return r;
      try {
        if (r.state === "QUEUED") {
          const ended = await this.#cancelQueued(jobId);
          if (ended) {
            // Out of the wait list (what an autoscaler counts); a worker that holds it already
            // finds it ended and completes it.
            await this.#fleetQueue?.withdraw(jobId);
            return ended;
          }
        }
        const marked = { ...r, cancel_requested: true };
        await this.#store.put(marked, { expectGeneration: stored.generation });
        return marked;
      } catch (err) {
        if (!(err instanceof StoreConflictError)) throw err;
        // Moved on meanwhile (claimed, logged, ended): look again.
      }
    }
    throw new QloradError("unavailable", `job ${jobId} kept changing; try CancelJob again`);
  }

  /** Ends a QUEUED job CANCELLED under a claim; undefined when it could not be claimed. */
  async #cancelQueued(jobId: string): Promise<JobRecord | undefined> {
    const lease = await this.#store.claim(jobId, this.#owner, this.#leaseTtlMs);
    if (!lease) return undefined;
    return await this.#endClaimed(lease, "QUEUED", "CANCELLED", {
      kind: "cancelled",
      message: "cancelled before it started",
    });
  }

  /**
   * A job this replica cannot run (its kind is not rebuildable here) and nobody else will: a
   * RUNNING one whose owner stopped (a takeover is impossible), or a QUEUED one whose submitter,
   * the only replica holding its body, is gone. Ended FAILED rather than left unended forever.
   */
  async #endOrphan(lease: Lease, state: JobState, submitter: string): Promise<void> {
    const message = state === "RUNNING"
      ? "the replica running this job stopped, and this kind of job cannot be taken over; " +
        "submit it again"
      : `the replica ${submitter || "(unknown)"} that received this job stopped before it ran, ` +
        "and no other replica can run this kind of job; submit it again";
    const ended = await this.#endClaimed(lease, state, "FAILED", { kind: "unavailable", message });
    if (ended) this.#logger.warn(`job ${lease.job_id} marked FAILED: ${ended.error?.message}`);
  }

  /**
   * Ends a job found in state `expected` with `state` under `lease` (released after); undefined
   * when it was not in that state (or had no event yet).
   */
  async #endClaimed(
    lease: Lease,
    expected: JobState,
    state: JobState,
    error: JobErrorInfo,
  ): Promise<JobRecord | undefined> {
    const jobId = lease.job_id;
    try {
      const stored = await this.#store.get(jobId);
      if (!stored || stored.record.state !== expected) return undefined;
      const events = await Array.fromAsync(this.#store.read(jobId, 1));
      if (events.length === 0) return undefined;
      const current: JobRecord = {
        ...stored.record,
        last_seq: events.length,
        last_event: events.at(-1),
      };
      const event = nextEvent(current, state, { error });
      const ended = endedRecord(current, event);
      await this.#store.end(event, ended, {
        expectGeneration: stored.generation,
        fence: lease.token,
      });
      this.#localRuns.delete(jobId);
      return ended;
    } finally {
      await this.#store.release(lease).catch(() => {});
    }
  }

  /** Fleet mode's watch: the store's log, followed until the job ends, `signal` or close(). */
  async *#followStore(
    jobId: string,
    fromSeq: number,
    signal?: AbortSignal,
  ): AsyncGenerator<JobEvent> {
    if (!await this.#store.get(jobId)) throw noSuchJob(jobId);
    const stop = signal ? AbortSignal.any([signal, this.#closing.signal]) : this.#closing.signal;
    yield* this.#store.read(jobId, fromSeq, { follow: true, signal: stop });
  }

  // ---------------------------------------------------------------- store

  /** Queues a store write after the earlier ones; resolves false (and logs) when it failed. */
  #write(op: () => Promise<void>): Promise<boolean> {
    const done = this.#io.then(op).then(() => true, (err) => {
      this.#logger.error(`could not write the job store in ${this.#store.location}`, err);
      return false;
    });
    this.#io = done.then(() => {});
    return done;
  }

  async #load(): Promise<void> {
    for (const stored of await this.#store.list()) {
      const job = isTerminal(stored.record.state)
        ? stored
        : await endInterrupted(this.#store, stored, this.#owner, this.#logger);
      const entry: Entry = {
        record: job.record,
        generation: job.generation,
        storedSeq: job.record.last_seq,
        waiters: new Set(),
      };
      this.#jobs.set(job.record.job_id, entry);
      if (job.record.request_id) {
        this.#requests.set(requestKey(job.record.kind, job.record.request_id), entry);
      }
    }
  }
}

function requestKey(kind: JobKind, requestId: string): string {
  return `${kind}\0${requestId}`;
}

function noSuchJob(jobId: string): QloradError {
  return new QloradError("not_found", `job_id ${JSON.stringify(jobId)}: no such job`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function wake(entry: Entry): void {
  for (const w of [...entry.waiters]) w();
}

function newJobId(kind: JobKind, now: number): string {
  const rand = crypto.getRandomValues(new Uint8Array(4));
  const hex = [...rand].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${kind}-${now.toString(36)}-${hex}`;
}
