/**
 * The job store: where job records and their event logs live, apart from the queue that runs jobs
 * (manager.ts). One interface, so that a single node keeps its jobs on its own disk
 * (local_store.ts, the default) and a fleet of replicas can share one store (a Redis store, issue
 * 11) without the manager changing.
 *
 * What every implementation must guarantee (tests/service/job_store_contract_test.ts checks it):
 *
 * - Records. `create` stores a new record at generation 1; `put` replaces it only when the caller
 *   names the generation it last saw (compare-and-set), and returns the next one. A lost race is a
 *   StoreConflictError ("generation"), never a silent overwrite. Generations only grow.
 * - Idempotency. At most one job per (kind, request_id): `create` of a second one returns the
 *   first instead of storing it, atomically with the check (two replicas cannot both create).
 * - Event logs. Each job has one log, seq 1, 2, 3, ... The caller names the seq of the event it
 *   appends; it must be exactly the last seq + 1, else StoreConflictError ("seq"): so concurrent or
 *   repeated appends never leave a duplicate or a gap. (Redis: XADD with the explicit id 0-<seq>
 *   inside a script that checks the last id.) Calls one caller makes without awaiting are applied
 *   in the order they were made.
 * - Reading. `read(job, fromSeq)` yields the stored events from `fromSeq` in seq order, without
 *   holding the whole log; with `follow` it then waits for new ones until a terminal event or the
 *   signal (Redis: XRANGE, then XREAD BLOCK).
 * - Durability. `append` of a non-terminal event may be buffered (a crash may lose the tail of a
 *   log, never a middle). `end` appends the terminal event and stores the final record together:
 *   it resolves only when both are durable (fsynced / AOF-synced), and after a crash either both
 *   are visible or neither is. Nothing (get, list, read) shows the outcome before it is durable.
 * - Claims. (Which replica runs a job is the fleet queue's choice, fleet_queue.ts; the lease is the
 *   fence.) `claim` gives one owner a lease on a job, with a fencing token that is larger than
 *   every earlier token for that job; while the lease is live nobody else can claim it. `put`,
 *   `append` and `end` given a `fence` fail with StoreConflictError ("fence") unless that token's
 *   lease is still the job's live lease, so an owner that lost its lease cannot commit anything.
 *   Writes without a fence (a job not yet claimed: submission, cancelling a queued job, recovery)
 *   rely on the generation check.
 * - Restart. A store reopened after a crash shows every record and every event that a resolved
 *   `end` made durable; leases of the dead process are gone (local) or expire (shared).
 *
 * Records and events are copies: a caller may change what it gets or gave without touching the
 * store.
 */
import { QloradError } from "../../util/errors.ts";
import type { JobEvent, JobKind, JobRecord, ListFilter } from "./records.ts";
import type { FleetQueue } from "./fleet_queue.ts";

/** A record and the generation it was stored at (for the next `put`). */
export interface StoredJob {
  record: JobRecord;
  generation: number;
}

/** One owner's right to run a job until `expires_ms`. */
export interface Lease {
  job_id: string;
  /** Who holds it (a replica name, e.g. host:pid). */
  owner: string;
  /** The fencing token: grows with every claim of the job. */
  token: number;
  /** Unix milliseconds; Infinity for a lease that lasts until released (the local store). */
  expires_ms: number;
}

export interface WriteOptions {
  /** The generation the caller last saw; the write fails if the record moved on since. */
  expectGeneration: number;
  /** The writer's lease token, when it runs the job. */
  fence?: number;
}

export interface ReadOptions {
  /** After the stored events, wait for new ones until a terminal event. */
  follow?: boolean;
  /** Ends the read (without an error) when aborted. */
  signal?: AbortSignal;
}

export interface JobStore {
  /** Where the store is, for messages (a folder, a redis:// address without credentials). */
  readonly location: string;

  /** Stores a new record at generation 1, or returns the job that holds its (kind, request_id). */
  create(record: JobRecord): Promise<{ created: boolean; job: StoredJob }>;
  /** A job's record, or undefined. */
  get(jobId: string): Promise<StoredJob | undefined>;
  /** The job a request id created, or undefined. */
  findRequest(kind: JobKind, requestId: string): Promise<StoredJob | undefined>;
  /** Records matching `filter`, newest first (selectRecords' order). */
  list(filter?: ListFilter): Promise<StoredJob[]>;
  /** Replaces a record (compare-and-set on the generation); returns the new generation. */
  put(record: JobRecord, opts: WriteOptions): Promise<number>;

  /** Appends a non-terminal event whose seq is the log's last + 1. */
  append(event: JobEvent, opts?: { fence?: number }): Promise<void>;
  /**
   * Appends the terminal event and stores the final record, durably and together; returns the
   * record's new generation.
   */
  end(event: JobEvent, record: JobRecord, opts: WriteOptions): Promise<number>;
  /** The job's events from `fromSeq` (see ReadOptions); none for an unknown job. */
  read(jobId: string, fromSeq: number, opts?: ReadOptions): AsyncGenerator<JobEvent>;

  /** A lease on the job for `ttlMs`, or undefined while someone else holds a live one. */
  claim(jobId: string, owner: string, ttlMs: number): Promise<Lease | undefined>;
  /** Extends a lease still held; undefined when it was lost (expired and taken, or released). */
  renew(lease: Lease, ttlMs: number): Promise<Lease | undefined>;
  /** Gives a lease up (no-op when it is no longer held). */
  release(lease: Lease): Promise<void>;

  /**
   * Optional: the fleet's dispatch queue on this store's server (fleet_queue.ts, BullMQ), with
   * this replica's worker named `replica` and BullMQ's lock lasting `lockMs` (the lease's TTL).
   * A store without one cannot be shared by a fleet.
   */
  fleetQueue?(replica: string, lockMs: number): FleetQueue;

  /** Waits for pending writes and lets go of the store's resources; ends every follow. */
  close(): Promise<void>;
}

export type ConflictReason = "generation" | "seq" | "fence";

/** A compare-and-set, seq or fencing check lost: somebody else wrote first. */
export class StoreConflictError extends QloradError {
  readonly reason: ConflictReason;

  constructor(reason: ConflictReason, message: string) {
    super("failed_precondition", message);
    this.name = "StoreConflictError";
    this.reason = reason;
  }
}
