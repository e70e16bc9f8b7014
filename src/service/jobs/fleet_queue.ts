/**
 * The fleet's dispatch queue on BullMQ (issue 11: "build this on an existing, well-kept engine,
 * not a home-made queue"). The job store (redis_store.ts) keeps records, event logs and the
 * fencing leases; this queue decides which replica runs which job, and notices dead ones:
 *
 * - Submit stores the record, then `add`s a BullMQ job whose id IS the job id (idempotent: a
 *   second add of a known id is a no-op), so a job is queued once however often it is added.
 * - Each replica runs one BullMQ Worker with concurrency 1: it takes a job only when its GPU is
 *   free, and its processor returns when the job has ended (what `take` says).
 * - BullMQ locks the job it gave a worker (lockDuration, renewed every third of it) and its
 *   stalled-job checker puts a job whose lock lapsed (a SIGKILLed or frozen replica) back in
 *   wait, where another replica's worker takes it: that is the takeover. maxStalledCount is high
 *   so that takeovers never fail a job; attempts is 1 for the processor's own outcome, because a
 *   job's failure in qlorad's sense ends FAILED in the store and the BullMQ job completes.
 * - A job a replica cannot run now goes back ("hand back"): to wait at once (a replica shutting
 *   down, a job whose store end was refused), or delayed a little (a job only its submitter can
 *   run, a job whose store lease another replica still holds) — BullMQ's documented manual
 *   patterns (moveToWait / moveToDelayed with their errors).
 *
 * BullMQ's lock token is random, not monotonic, so it cannot fence writes; the store's lease
 * (a growing token, checked by every commit) stays the fence: see manager.ts's header.
 *
 * Connections: BullMQ opens its own (one for the queue; two for the worker, one of them for its
 * blocking pops), from the store's settings; the worker's with maxRetriesPerRequest null so that
 * it waits out a Redis outage and reconnects by itself. Keys: `<prefix>dispatch:*`; the wait list,
 * what KEDA's Redis list scaler watches, is `<prefix>dispatch:wait` (qlorad:dispatch:wait by
 * default).
 */
import { DelayedError, Queue, WaitingError, Worker } from "bullmq";
import type { IRedisClient, Job, RedisOptions as BullConnection } from "bullmq";
import type { RedisOptions } from "ioredis";
import type { Logger } from "../status.ts";

/** The BullMQ queue's name: its keys are `<prefix>dispatch:<...>`. */
export const DISPATCH_QUEUE = "dispatch";

/** What a replica's `take` decided about a job it was given. */
export type TakeOutcome =
  /** It has ended (here, elsewhere, or before): the BullMQ job completes. */
  | { done: true }
  /** It goes back to the queue, after `delayMs` (0: at once), for another replica. */
  | { done: false; delayMs: number };

/** The BullMQ job's data: who submitted it (the only replica that may hold a body it cannot rebuild). */
export interface DispatchData {
  submitter: string;
}

/** Runs one job (by id) to its end on this replica, or hands it back. */
export type TakeJob = (jobId: string, data: DispatchData) => Promise<TakeOutcome>;

export interface FleetQueue {
  /** Puts a stored job on the queue (a no-op when its id is already there). */
  add(jobId: string, data: DispatchData): Promise<void>;
  /** Removes a queued job nobody holds (a cancelled one); a no-op when a worker holds it. */
  withdraw(jobId: string): Promise<void>;
  /**
   * Starts this replica's worker: each job it is given goes to `take`. Resolves once the worker
   * is connected (and so listed by liveReplicas on every replica).
   */
  run(take: TakeJob): Promise<void>;
  /** Jobs waiting (in wait or delayed) and jobs held by a worker, fleet-wide. */
  counts(): Promise<{ waiting: number; active: number }>;
  /** The names of the replicas whose workers are connected now. */
  liveReplicas(): Promise<Set<string>>;
  /** Stops taking jobs (the job being taken finishes first), then closes the connections. */
  close(): Promise<void>;
}

export interface FleetQueueOptions {
  /** The store's connection settings (host, port, TLS, credentials). */
  connection: RedisOptions;
  /** The store's key prefix ("qlorad:"), so one Redis can hold several deployments. */
  keyPrefix: string;
  /** This replica's name (its worker's name: liveReplicas). */
  replica: string;
  /** BullMQ's lock on a job a worker holds; the store's lease has the same TTL. */
  lockMs: number;
  logger: Logger;
}

/** Stalls a job may have before BullMQ fails it: never, in practice (each is a takeover). */
const MAX_STALLED = 1_000_000;

export class BullFleetQueue implements FleetQueue {
  readonly #queue: Queue;
  readonly #opts: FleetQueueOptions;
  readonly #prefix: string;
  #worker?: Worker;
  /** The processor's latest run (take, then moving its job), never rejecting. */
  #taking?: Promise<unknown>;

  constructor(opts: FleetQueueOptions) {
    this.#opts = opts;
    this.#prefix = opts.keyPrefix.replace(/:$/, "");
    const base = connectionOf(opts.connection);
    // The queue's calls (add, counts) fail at once while Redis is away, and after the store's
    // command timeout while it does not answer, as the store's do. (Not the worker's: its
    // blocking pops wait longer by design.)
    this.#queue = new Queue(DISPATCH_QUEUE, {
      connection: {
        ...base,
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: opts.connection.commandTimeout,
      },
      prefix: this.#prefix,
      defaultJobOptions: {
        attempts: 1,
        removeOnComplete: true,
        removeOnFail: { count: 1000 },
      },
    });
    this.#queue.on("error", (err) => this.#warn("queue", err));
  }

  async add(jobId: string, data: DispatchData): Promise<void> {
    await this.#queue.add("job", data, { jobId });
  }

  async withdraw(jobId: string): Promise<void> {
    // remove() refuses a job a worker holds (locked): that worker completes it instead.
    await this.#queue.remove(jobId).catch(() => 0);
  }

  async run(take: TakeJob): Promise<void> {
    if (this.#worker) throw new Error("the fleet queue's worker runs already");
    const base = connectionOf(this.#opts.connection);
    const lockMs = this.#opts.lockMs;
    this.#worker = new Worker(
      DISPATCH_QUEUE,
      (job: Job<DispatchData>, token?: string) => {
        const processed = (async () => {
          const outcome = await take(job.id!, job.data);
          if (outcome.done) return;
          if (outcome.delayMs > 0) {
            await job.moveToDelayed(Date.now() + outcome.delayMs, token);
            throw new DelayedError();
          }
          await job.moveToWait(token);
          throw new WaitingError();
        })();
        this.#taking = processed.catch(() => {});
        return processed;
      },
      {
        // The blocking connection waits out an outage (BullMQ's rule for workers).
        connection: { ...base, maxRetriesPerRequest: null, enableOfflineQueue: true },
        prefix: this.#prefix,
        name: this.#opts.replica,
        concurrency: 1,
        lockDuration: lockMs,
        lockRenewTime: Math.max(1, Math.floor(lockMs / 3)),
        stalledInterval: Math.max(1, Math.floor(lockMs / 2)),
        maxStalledCount: MAX_STALLED,
      },
    );
    this.#worker.on("error", (err) => this.#warn("worker", err));
    this.#worker.on("failed", (job, err) => {
      this.#opts.logger.warn(`fleet queue: job ${job?.id} failed in BullMQ: ${err.message}`);
    });
    await this.#worker.waitUntilReady();
  }

  async counts(): Promise<{ waiting: number; active: number }> {
    const c = await this.#queue.getJobCounts("wait", "delayed", "active");
    return { waiting: (c.wait ?? 0) + (c.delayed ?? 0), active: c.active ?? 0 };
  }

  async liveReplicas(): Promise<Set<string>> {
    const workers = await this.#queue.getWorkers();
    const names = new Set<string>();
    for (const w of workers) {
      // BullMQ gives the worker's own name as `name`, and CLIENT LIST's whole one,
      // `<prefix>:<base64 queue>:w:<worker name>`, as `rawname`.
      const at = w.rawname?.indexOf(":w:") ?? -1;
      if (at >= 0) names.add(w.rawname.slice(at + 3));
    }
    return names;
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    if (worker) {
      // No new job; the one being taken finishes first (one fetched meanwhile ends in wait too).
      await worker.pause(true);
      await this.#taking;
      // While Redis is away BullMQ's graceful close never ends (it waits for QUIT and for the
      // blocking connection's end): forced then (Redis did not answer a PING within a third of
      // the lock), and a job it could not move meanwhile goes back to wait by the stalled-job
      // check once Redis is back.
      const client = await worker.getBackend().client;
      await worker.close(!await answers(client, this.#opts.lockMs / 3));
    }
    const client = await this.#queue.getBackend().client;
    // QUIT fails at once while Redis is away, and the client would go on reconnecting.
    await this.#queue.close().catch(() => {});
    if (client.status !== "end") client.disconnect();
  }

  #lastWarning = "";

  #warn(what: string, err: Error): void {
    // ioredis repeats a refused connection on every retry: said once until it changes.
    if (err.message === this.#lastWarning) return;
    this.#lastWarning = err.message;
    this.#opts.logger.warn(`fleet queue (${what}): ${err.message}`);
  }
}

/** Whether `client` answers a PING within `ms` (a client that queues while offline never does). */
async function answers(client: IRedisClient, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      client.runCommand("ping", []).then(() => true, () => false),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The store's address, TLS, credentials and reconnect delays, as BullMQ's connection settings. */
function connectionOf(o: RedisOptions): BullConnection {
  return {
    host: o.host,
    port: o.port,
    db: o.db,
    username: o.username,
    password: o.password,
    tls: o.tls,
    connectTimeout: o.connectTimeout,
    retryStrategy: (attempt: number) => o.retryStrategy?.(attempt) ?? Math.min(100 * attempt, 2000),
  };
}
