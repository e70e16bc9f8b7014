/**
 * The shared job store on Redis (issue 11): what lets several replicas see the same jobs. Each
 * job is a hash (its record as JSON, the record's generation, the log's last seq, the state), its
 * event log a Redis Stream with ids `0-<seq>` (XRANGE reads from any seq, XREAD BLOCK follows),
 * a sorted set lists jobs by creation time, a hash maps (kind, request_id) to a job, and a lease
 * is a key with a PX expiry holding "<token> <owner>". Every checked write is one Lua script
 * (redis_scripts.ts), so the check and the write are atomic for every replica. Which replica runs
 * which job is not kept here: the fleet queue (fleet_queue.ts, BullMQ) on the same Redis does it.
 *
 * Durability: Redis makes a write durable only with its append-only file on (`appendonly yes`).
 * With `appendfsync always` a write is fsynced before Redis answers anyone, so a resolved `end`
 * survives a crash of Redis and of its host; with `appendfsync everysec` (Redis's default) it
 * survives a crash or restart of Redis itself (it was written to the file before the reply) but a
 * host crash can lose its last second. Without the AOF a Redis restart loses every job; open()
 * warns when it can see that. Fencing tokens keep growing across a restart (see CLAIM).
 *
 * Connection: one connection for commands, and one more for each following read (XREAD BLOCK
 * holds its connection). While Redis is unreachable every call fails at once with a QloradError
 * of kind "unavailable" (nothing is queued), and the client reconnects by itself in the
 * background. A write that failed that way may or may not have been applied: read back before
 * trying again (a repeat is refused by the generation or seq check, never applied twice).
 * Not for Redis Cluster: a script touches keys that Cluster would put in different slots.
 */
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import { Redis } from "ioredis";
import type { RedisOptions } from "ioredis";
import { QloradError } from "../../util/errors.ts";
import type { Logger } from "../status.ts";
import { isTerminal, selectRecords } from "./records.ts";
import type { JobEvent, JobKind, JobRecord, ListFilter } from "./records.ts";
import { StoreConflictError } from "./store.ts";
import type { JobStore, Lease, ReadOptions, StoredJob, WriteOptions } from "./store.ts";
import type { RedisStoreSettings } from "./redis_settings.ts";
import * as scripts from "./redis_scripts.ts";
import { BullFleetQueue } from "./fleet_queue.ts";
import type { FleetQueue } from "./fleet_queue.ts";

export interface RedisStoreOptions {
  /** Prefix of every key; default "qlorad:". Two deployments may share one Redis by prefix. */
  keyPrefix?: string;
  /** How long open() waits for the first connection. Default 10 s. */
  connectTimeoutMs?: number;
  /** How long one command may take before it fails "unavailable". Default 15 s. */
  commandTimeoutMs?: number;
}

/** Events read per XRANGE page, so a long log is never held whole. */
const PAGE = 256;
/** A following read blocks this long per XREAD, then checks it is still wanted and blocks again. */
const FOLLOW_BLOCK_MS = 20_000;
/** Reconnect delays grow to this. */
const MAX_RECONNECT_DELAY_MS = 2_000;

/** Redis error replies that mean "not now" (loading, read-only replica, ...), not a bug. */
const TRANSIENT_REPLY =
  /^(LOADING|BUSY|MISCONF|READONLY|MASTERDOWN|TRYAGAIN|NOAUTH|WRONGPASS|CLUSTERDOWN)\b/;

type ScriptName = keyof typeof scripts;
type Reply = [string, string | number];

export class RedisJobStore implements JobStore {
  readonly location: string;
  readonly #redis: Redis;
  readonly #options: RedisOptions;
  readonly #prefix: string;
  readonly #logger: Logger;
  /** Writes not yet answered (close() waits for them). */
  readonly #pending = new Set<Promise<unknown>>();
  /** The connections of following reads (close() ends them). */
  readonly #followers = new Set<Redis>();
  /** Listeners told when Redis is lost and found again (watchAvailability). */
  readonly #availability = new Set<(available: boolean, why?: string) => void>();
  #available = true;
  #closed = false;

  private constructor(
    redis: Redis,
    options: RedisOptions,
    location: string,
    prefix: string,
    logger: Logger,
  ) {
    this.#redis = redis;
    this.#options = options;
    this.location = location;
    this.#prefix = prefix;
    this.#logger = logger;
    redis.on("close", () => this.#setAvailable(false, `lost the connection to ${location}`));
    redis.on("ready", () => this.#setAvailable(true));
  }

  /**
   * Calls `listener(false, why)` when the connection to Redis is lost and `listener(true)` once
   * it is back (health turns NOT_SERVING meanwhile); returns a function that stops the calls.
   */
  watchAvailability(listener: (available: boolean, why?: string) => void): () => void {
    this.#availability.add(listener);
    return () => this.#availability.delete(listener);
  }

  #setAvailable(available: boolean, why?: string): void {
    if (this.#closed || available === this.#available) return;
    this.#available = available;
    for (const listener of [...this.#availability]) listener(available, why);
  }

  /**
   * Connects to Redis (waiting up to connectTimeoutMs for it) and checks its AOF setting. Fails
   * "unavailable" when Redis cannot be reached, naming the address (never the password).
   */
  static async open(
    settings: RedisStoreSettings,
    logger: Logger,
    opts: RedisStoreOptions = {},
  ): Promise<RedisJobStore> {
    const connectTimeout = opts.connectTimeoutMs ?? 10_000;
    const options: RedisOptions = {
      host: settings.host,
      port: settings.port,
      db: settings.db,
      username: settings.username,
      password: settings.password,
      // TLS checks the certificate against the host (SNI only for a name, never an address).
      ...(settings.tls
        ? {
          tls: {
            ...(isIP(settings.host) ? {} : { servername: settings.host }),
            ...(settings.ca ? { ca: settings.ca } : {}),
          },
        }
        : {}),
      protocol: 2,
      lazyConnect: true,
      connectTimeout,
      commandTimeout: opts.commandTimeoutMs ?? 15_000,
      // Fail at once while disconnected (the caller says UNAVAILABLE) rather than queue; a
      // command cut off by a disconnect fails too, never re-sent behind the caller's back.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: (attempt) => Math.min(100 * attempt, MAX_RECONNECT_DELAY_MS),
    };
    const redis = new Redis(options);
    let lastError = "";
    // ioredis reports connection errors as events; without a listener they would be thrown.
    redis.on("error", (err: Error) => {
      if (err.message !== lastError) logger.warn(`job store ${settings.location}: ${err.message}`);
      lastError = err.message;
    });
    redis.on("ready", () => {
      if (lastError) logger.info(`job store ${settings.location}: connected again`);
      lastError = "";
    });
    const store = new RedisJobStore(
      redis,
      options,
      settings.location,
      opts.keyPrefix ?? "qlorad:",
      logger,
    );
    try {
      await withTimeout(redis.connect(), connectTimeout, "connecting");
      // A wrong or missing password shows only on the first command.
      await redis.ping();
    } catch (err) {
      redis.disconnect();
      throw new QloradError(
        "unavailable",
        // The client's own error (a refused password, a TLS failure) says more than its
        // "Connection is closed" that follows.
        `job store ${settings.location}: cannot connect (${lastError || messageOf(err)})`,
        { cause: err },
      );
    }
    await store.#checkDurability();
    return store;
  }

  create(record: JobRecord): Promise<{ created: boolean; job: StoredJob }> {
    const requestField = record.request_id ? `${record.kind}\0${record.request_id}` : "";
    const reply = this.#script(
      "CREATE",
      [
        this.#jobKey(record.job_id),
        this.#key("jobs"),
        this.#key("requests"),
      ],
      [record.job_id, JSON.stringify(record), record.created_ms, requestField, record.state],
    );
    return this.#write(reply.then(async ([status, value]) => {
      if (status === "ok") return { created: true, job: { record: copy(record), generation: 1 } };
      if (status === "known") {
        const job = await this.get(String(value));
        if (job) return { created: false, job };
        throw new QloradError("internal", `request ${requestField} names a missing job ${value}`);
      }
      throw new StoreConflictError("generation", `job ${record.job_id} already exists`);
    }));
  }

  async get(jobId: string): Promise<StoredJob | undefined> {
    const [rec, gen] = await this.#call(() => this.#redis.hmget(this.#jobKey(jobId), "rec", "gen"));
    return rec === null ? undefined : { record: JSON.parse(rec), generation: Number(gen) };
  }

  async findRequest(kind: JobKind, requestId: string): Promise<StoredJob | undefined> {
    const id = await this.#call(() =>
      this.#redis.hget(this.#key("requests"), `${kind}\0${requestId}`)
    );
    return id === null ? undefined : await this.get(id);
  }

  async list(filter: ListFilter = {}): Promise<StoredJob[]> {
    const ids = await this.#call(() => this.#redis.zrevrange(this.#key("jobs"), 0, -1));
    const jobs = new Map<string, StoredJob>();
    for (let i = 0; i < ids.length; i += PAGE) {
      const pipeline = this.#redis.pipeline();
      const chunk = ids.slice(i, i + PAGE);
      for (const id of chunk) pipeline.hmget(this.#jobKey(id), "rec", "gen");
      const replies = await this.#call(() => pipeline.exec());
      replies?.forEach(([err, value], j) => {
        if (err) throw this.#failure(err);
        const [rec, gen] = value as (string | null)[];
        if (rec !== null) {
          jobs.set(chunk[j], { record: JSON.parse(rec), generation: Number(gen) });
        }
      });
    }
    return selectRecords([...jobs.values()].map((j) => j.record), filter)
      .map((r) => jobs.get(r.job_id)!);
  }

  put(record: JobRecord, opts: WriteOptions): Promise<number> {
    const reply = this.#script(
      "PUT",
      [
        this.#jobKey(record.job_id),
        this.#leaseKey(record.job_id),
      ],
      [JSON.stringify(record), opts.expectGeneration, fenceArg(opts.fence), record.state],
    );
    return this.#write(reply.then((r) => this.#outcome(record.job_id, r, opts)));
  }

  append(event: JobEvent, opts: { fence?: number } = {}): Promise<void> {
    if (isTerminal(event.state)) {
      return Promise.reject(new Error(`job ${event.job_id}: a terminal event goes through end()`));
    }
    const id = event.job_id;
    const reply = this.#script(
      "APPEND",
      [this.#jobKey(id), this.#logKey(id), this.#leaseKey(id)],
      [event.seq, JSON.stringify(event), fenceArg(opts.fence)],
    );
    return this.#write(reply.then((r) => void this.#outcome(id, r, opts, event.seq)));
  }

  end(event: JobEvent, record: JobRecord, opts: WriteOptions): Promise<number> {
    if (!isTerminal(event.state)) {
      return Promise.reject(new Error(`job ${event.job_id}: end() takes a terminal event`));
    }
    const id = record.job_id;
    const reply = this.#script(
      "END",
      [
        this.#jobKey(id),
        this.#logKey(id),
        this.#leaseKey(id),
      ],
      [
        JSON.stringify(record),
        opts.expectGeneration,
        fenceArg(opts.fence),
        event.seq,
        JSON.stringify(event),
        record.state,
      ],
    );
    return this.#write(reply.then((r) => this.#outcome(id, r, opts, event.seq)));
  }

  async *read(jobId: string, fromSeq: number, opts: ReadOptions = {}): AsyncGenerator<JobEvent> {
    const { follow, signal } = opts;
    if (signal?.aborted) return;
    const exists = await this.#call(() => this.#redis.exists(this.#jobKey(jobId)));
    if (!exists) return;
    const logKey = this.#logKey(jobId);
    let last = Math.max(0, Math.floor(fromSeq) - 1);
    // The stored events, a page at a time.
    while (true) {
      const page = await this.#call(() =>
        this.#redis.xrange(logKey, `0-${last + 1}`, "+", "COUNT", PAGE)
      );
      for (const [, fields] of page) {
        const event = parseEntry(fields);
        last = event.seq;
        yield event;
        if (isTerminal(event.state)) return;
        if (signal?.aborted) return;
      }
      if (page.length < PAGE) break;
    }
    if (!follow || this.#closed) return;

    // Then the new ones, on a connection of its own: XREAD BLOCK holds it.
    const conn = new Redis({
      ...this.#options,
      commandTimeout: undefined,
      retryStrategy: () => null,
    });
    conn.on("error", () => {}); // reported by the read below
    this.#followers.add(conn);
    const stop = () => conn.disconnect();
    signal?.addEventListener("abort", stop);
    const stopped = () => signal?.aborted || this.#closed;
    try {
      try {
        await conn.connect();
      } catch (err) {
        if (stopped()) return;
        throw this.#failure(err);
      }
      while (!stopped()) {
        let reply: [string, [string, string[]][]][] | null;
        try {
          reply = await conn.xread("BLOCK", FOLLOW_BLOCK_MS, "STREAMS", logKey, `0-${last}`);
        } catch (err) {
          if (stopped()) return;
          throw this.#failure(err);
        }
        for (const [, entries] of reply ?? []) {
          for (const [, fields] of entries) {
            const event = parseEntry(fields);
            if (event.seq <= last) continue;
            last = event.seq;
            yield event;
            if (isTerminal(event.state) || stopped()) return;
          }
        }
      }
    } finally {
      signal?.removeEventListener("abort", stop);
      this.#followers.delete(conn);
      conn.disconnect();
    }
  }

  /**
   * The fleet's dispatch queue (BullMQ) on this store's Redis, with the same address, TLS and
   * credentials, under the same key prefix (keys `<prefix>dispatch:*`).
   */
  fleetQueue(replica: string, lockMs: number): FleetQueue {
    return new BullFleetQueue({
      connection: this.#options,
      keyPrefix: this.#prefix,
      replica,
      lockMs,
      logger: this.#logger,
    });
  }

  /** A lease whose `expires_ms` is by Redis's clock (TIME), the one that expires it. */
  async claim(jobId: string, owner: string, ttlMs: number): Promise<Lease | undefined> {
    const [status, token, expires] = await this.#scriptReply(
      "CLAIM",
      [this.#jobKey(jobId), this.#leaseKey(jobId), this.#key("fence")],
      [owner, Math.max(1, Math.ceil(ttlMs))],
    );
    if (status === "not_found") throw noSuchJob(jobId);
    if (status !== "ok") return undefined;
    return { job_id: jobId, owner, token: Number(token), expires_ms: Number(expires) };
  }

  /**
   * Extends the lease; one that expired while nobody claimed the job is taken again (no other
   * owner can have written meanwhile). Undefined once it was released or another claim took it.
   */
  async renew(lease: Lease, ttlMs: number): Promise<Lease | undefined> {
    const [status, expires] = await this.#scriptReply(
      "RENEW",
      [this.#leaseKey(lease.job_id), this.#jobKey(lease.job_id)],
      [lease.token, Math.max(1, Math.ceil(ttlMs)), lease.owner],
    );
    return status === "ok" ? { ...lease, expires_ms: Number(expires) } : undefined;
  }

  async release(lease: Lease): Promise<void> {
    await this.#scriptReply(
      "RELEASE",
      [this.#leaseKey(lease.job_id), this.#jobKey(lease.job_id)],
      [lease.token],
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await Promise.allSettled([...this.#pending]);
    this.#closed = true;
    this.#availability.clear();
    for (const conn of this.#followers) conn.disconnect();
    this.#redis.disconnect();
  }

  // ---------------------------------------------------------------- commands

  #key(name: string): string {
    return this.#prefix + name;
  }

  #jobKey(jobId: string): string {
    return `${this.#prefix}job:${jobId}`;
  }

  #logKey(jobId: string): string {
    return `${this.#prefix}log:${jobId}`;
  }

  #leaseKey(jobId: string): string {
    return `${this.#prefix}lease:${jobId}`;
  }

  /** Runs a command, turning a connection failure into "unavailable". */
  async #call<T>(command: () => Promise<T>): Promise<T> {
    if (this.#closed) {
      throw new QloradError("unavailable", `job store ${this.location} is closed`);
    }
    try {
      return await command();
    } catch (err) {
      throw this.#failure(err);
    }
  }

  /** A write, tracked until it is answered. */
  #write<T>(done: Promise<T>): Promise<T> {
    this.#pending.add(done);
    const forget = () => this.#pending.delete(done);
    done.then(forget, forget);
    return done;
  }

  /**
   * Sends a script now, so calls made without awaiting reach Redis in call order. Always EVAL
   * with the script's text (Redis caches the compiled script): EVALSHA with an EVAL on NOSCRIPT
   * would let a loaded script overtake one that Redis did not know yet (after a restart).
   */
  #script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<Reply> {
    if (this.#closed) {
      return Promise.reject(new QloradError("unavailable", `job store ${this.location} is closed`));
    }
    const sent = this.#redis.eval(scripts[name], keys.length, ...keys, ...args) as Promise<unknown>;
    return sent.then(
      (reply) => reply as Reply,
      (err) => {
        throw this.#failure(err);
      },
    );
  }

  #scriptReply(name: ScriptName, keys: string[], args: (string | number)[]): Promise<string[]> {
    return this.#script(name, keys, args).then((r) => r.map(String));
  }

  /** A checked write's reply as its result (the new generation), or the error it means. */
  #outcome(
    jobId: string,
    [status, value]: Reply,
    opts: { expectGeneration?: number; fence?: number },
    seq?: number,
  ) {
    switch (status) {
      case "ok":
        return Number(value);
      case "not_found":
        throw noSuchJob(jobId);
      case "fence":
        throw new StoreConflictError(
          "fence",
          `job ${jobId}: lease ${opts.fence} is no longer held`,
        );
      case "generation":
        throw new StoreConflictError(
          "generation",
          `job ${jobId} is at generation ${value}, not ${opts.expectGeneration}`,
        );
      case "ended":
        throw new StoreConflictError("seq", `job ${jobId} has ended; its log is closed`);
      case "seq":
        throw new StoreConflictError(
          "seq",
          `job ${jobId}: event ${seq} is not next (the log is at ${value})`,
        );
      default:
        throw new QloradError("internal", `job store ${this.location}: unexpected reply ${status}`);
    }
  }

  /** What an error from the client means to the caller. */
  #failure(err: unknown): Error {
    if (err instanceof QloradError) return err;
    const message = messageOf(err);
    const isReply = (err as { name?: string })?.name === "ReplyError";
    if (isReply && !TRANSIENT_REPLY.test(message)) {
      return new QloradError("internal", `job store ${this.location}: ${message}`, { cause: err });
    }
    return new QloradError(
      "unavailable",
      `job store ${this.location} is unreachable (${message}); reconnecting`,
      { cause: err },
    );
  }

  /** Warns when Redis keeps no append-only file: a restart of it would lose every job. */
  async #checkDurability(): Promise<void> {
    let reply: unknown;
    try {
      reply = await this.#redis.config("GET", "append*");
    } catch {
      return; // CONFIG is often disabled on managed Redis: nothing to check.
    }
    const values = new Map<string, string>();
    const flat = (reply as string[]) ?? [];
    for (let i = 0; i + 1 < flat.length; i += 2) values.set(flat[i], flat[i + 1]);
    if (values.get("appendonly") === "no") {
      this.#logger.warn(
        `job store ${this.location}: Redis has appendonly off, so a restart of Redis loses ` +
          "jobs and events; turn on appendonly (docs/DEPLOY.md)",
      );
    } else if (values.get("appendfsync") === "no") {
      this.#logger.warn(
        `job store ${this.location}: appendfsync is "no": a host crash can lose ended jobs; ` +
          "use everysec or always (docs/DEPLOY.md)",
      );
    }
  }
}

function fenceArg(fence: number | undefined): string {
  return fence === undefined ? "" : String(fence);
}

function noSuchJob(jobId: string): QloradError {
  return new QloradError("not_found", `job_id ${JSON.stringify(jobId)}: no such job`);
}

/** A stream entry's fields, ["e", json], as the event. */
function parseEntry(fields: string[]): JobEvent {
  const at = fields.indexOf("e");
  return JSON.parse(fields[at + 1]) as JobEvent;
}

function copy<T>(value: T): T {
  return structuredClone(value);
}

function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (err instanceof Buffer) return err.toString();
  return String(err);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
