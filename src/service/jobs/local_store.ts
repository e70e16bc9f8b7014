/**
 * The embedded job store (the default): one folder on the node's own disk, for one server process
 * (the data-directory lock, data_lock.ts, keeps a second one out). Each job is `<id>.json`, its
 * record written atomically (temp file, fsync, rename), and `<id>.events.jsonl`, its log, one
 * event a line, appended. A terminal event is fsynced before the final record is written, and the
 * record before `end` resolves; opening the store repairs what a crash can leave: temporary files,
 * a torn last log line, and a record that missed its log's terminal event (the outcome stands).
 *
 * Leases are trivial here: one process runs every job, so a claim lasts until it is released and
 * lives in memory only (a reopened store holds none; tokens count again from 1, which is safe
 * because no owner of the previous process survives it).
 */
import * as path from "node:path";
import { QloradError } from "../../util/errors.ts";
import type { Logger } from "../status.ts";
import { RESERVED_DIR } from "../paths.ts";
import { appendFileDurably, PARTIAL_MARK, writeFileAtomic } from "../../io/atomic.ts";
import { readLines } from "../../data/dataset.ts";
import { endedRecord, isTerminal, selectRecords } from "./records.ts";
import type { JobEvent, JobKind, JobRecord, ListFilter } from "./records.ts";
import { StoreConflictError } from "./store.ts";
import type { JobStore, Lease, ReadOptions, StoredJob, WriteOptions } from "./store.ts";

/** The version field of a record file. */
const RECORD_VERSION = 1;

/** An event line longer than this is not read back (a log line is an event, at most ~2 MiB). */
const MAX_EVENT_LINE_BYTES = 64 << 20;

/** Where a server keeps its jobs under its data directory. */
export function localJobsDir(dataDir: string): string {
  return path.join(dataDir, RESERVED_DIR, "jobs");
}

interface Held {
  stored: StoredJob;
  /** The log's last seq, once known (read from the log on first need). */
  lastSeq?: number;
  lease?: Lease;
  /** Live reads waiting for this job's next events. */
  followers: Set<(event: JobEvent | undefined) => void>;
}

export class LocalJobStore implements JobStore {
  readonly location: string;
  readonly #dir: string;
  readonly #logger: Logger;
  readonly #jobs = new Map<string, Held>();
  /** `${kind}\0${request_id}` -> job id. */
  readonly #requests = new Map<string, string>();
  #nextToken = 1;
  /** Writes, one at a time, in call order. */
  #serial: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(dir: string, logger: Logger) {
    this.#dir = dir;
    this.location = dir;
    this.#logger = logger;
  }

  /** Opens (creating if needed) the store in `dir`, repairing what a crash left. */
  static async open(dir: string, logger: Logger): Promise<LocalJobStore> {
    const store = new LocalJobStore(dir, logger);
    await Deno.mkdir(dir, { recursive: true });
    await store.#load();
    return store;
  }

  create(record: JobRecord): Promise<{ created: boolean; job: StoredJob }> {
    return this.#exclusive(async () => {
      this.#checkOpen();
      if (record.request_id) {
        const known = this.#requests.get(requestKey(record.kind, record.request_id));
        if (known) return { created: false, job: structuredClone(this.#jobs.get(known)!.stored) };
      }
      if (this.#jobs.has(record.job_id)) {
        throw new StoreConflictError("generation", `job ${record.job_id} already exists`);
      }
      await this.#writeRecord(record, 1);
      const stored = { record: structuredClone(record), generation: 1 };
      this.#jobs.set(record.job_id, { stored, lastSeq: 0, followers: new Set() });
      if (record.request_id) {
        this.#requests.set(requestKey(record.kind, record.request_id), record.job_id);
      }
      return { created: true, job: structuredClone(stored) };
    });
  }

  get(jobId: string): Promise<StoredJob | undefined> {
    const held = this.#jobs.get(jobId);
    return Promise.resolve(held ? structuredClone(held.stored) : undefined);
  }

  findRequest(kind: JobKind, requestId: string): Promise<StoredJob | undefined> {
    const id = this.#requests.get(requestKey(kind, requestId));
    return this.get(id ?? "");
  }

  list(filter: ListFilter = {}): Promise<StoredJob[]> {
    const picked = selectRecords([...this.#jobs.values()].map((h) => h.stored.record), filter);
    return Promise.resolve(picked.map((r) => structuredClone(this.#jobs.get(r.job_id)!.stored)));
  }

  put(record: JobRecord, opts: WriteOptions): Promise<number> {
    return this.#exclusive(async () => {
      const held = this.#check(record.job_id, opts);
      const generation = opts.expectGeneration + 1;
      await this.#writeRecord(record, generation);
      held.stored = { record: structuredClone(record), generation };
      return generation;
    });
  }

  append(event: JobEvent, opts: { fence?: number } = {}): Promise<void> {
    if (isTerminal(event.state)) {
      return Promise.reject(new Error(`job ${event.job_id}: a terminal event goes through end()`));
    }
    return this.#exclusive(async () => {
      const held = await this.#checkAppend(event, opts.fence);
      await Deno.writeTextFile(this.#eventsPath(event.job_id), JSON.stringify(event) + "\n", {
        append: true,
      });
      this.#appended(held, event);
    });
  }

  end(event: JobEvent, record: JobRecord, opts: WriteOptions): Promise<number> {
    if (!isTerminal(event.state)) {
      return Promise.reject(new Error(`job ${event.job_id}: end() takes a terminal event`));
    }
    return this.#exclusive(async () => {
      const held = this.#check(record.job_id, opts);
      await this.#checkAppend(event, opts.fence);
      await appendFileDurably(this.#eventsPath(event.job_id), JSON.stringify(event) + "\n");
      held.lastSeq = event.seq;
      const generation = opts.expectGeneration + 1;
      try {
        await this.#writeRecord(record, generation);
        held.stored = { record: structuredClone(record), generation };
      } finally {
        // The event is durable: followers see it even if the record write failed (the next
        // open repairs the record from the log).
        this.#appended(held, event);
      }
      return generation;
    });
  }

  async *read(jobId: string, fromSeq: number, opts: ReadOptions = {}): AsyncGenerator<JobEvent> {
    const held = this.#jobs.get(jobId);
    if (!held) return;
    const { follow, signal } = opts;
    // Listen before reading the file, so an event appended meanwhile is in one or the other.
    const pending: JobEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const listener = (event: JobEvent | undefined) => {
      if (event) pending.push(event);
      else ended = true;
      wake?.();
    };
    const onAbort = () => wake?.();
    if (follow) {
      held.followers.add(listener);
      signal?.addEventListener("abort", onAbort);
    }
    try {
      // Writes already made are complete on disk before the file is read.
      await this.#serial.catch(() => {});
      let last = fromSeq - 1;
      for await (const event of this.#streamLog(jobId, signal)) {
        if (signal?.aborted) return;
        if (event.seq < fromSeq) continue;
        last = event.seq;
        yield event;
        if (isTerminal(event.state)) return;
      }
      if (!follow) return;
      while (true) {
        while (pending.length) {
          const event = pending.shift()!;
          if (event.seq <= last) continue;
          last = event.seq;
          yield structuredClone(event);
          if (isTerminal(event.state)) return;
        }
        if (ended || this.#closed || signal?.aborted) return;
        await new Promise<void>((resolve) => wake = resolve);
        wake = undefined;
      }
    } finally {
      held.followers.delete(listener);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  claim(jobId: string, owner: string, _ttlMs: number): Promise<Lease | undefined> {
    return this.#exclusive(() => {
      this.#checkOpen();
      const held = this.#held(jobId);
      if (held.lease) return Promise.resolve(undefined);
      held.lease = { job_id: jobId, owner, token: this.#nextToken++, expires_ms: Infinity };
      return Promise.resolve(structuredClone(held.lease));
    });
  }

  renew(lease: Lease, _ttlMs: number): Promise<Lease | undefined> {
    const held = this.#jobs.get(lease.job_id);
    const live = held?.lease?.token === lease.token ? structuredClone(held.lease) : undefined;
    return Promise.resolve(live);
  }

  release(lease: Lease): Promise<void> {
    return this.#exclusive(() => {
      const held = this.#jobs.get(lease.job_id);
      if (held?.lease?.token === lease.token) held.lease = undefined;
      return Promise.resolve();
    });
  }

  async close(): Promise<void> {
    await this.#serial.catch(() => {});
    this.#closed = true;
    for (const held of this.#jobs.values()) for (const f of [...held.followers]) f(undefined);
  }

  // ---------------------------------------------------------------- checks

  #exclusive<T>(op: () => Promise<T>): Promise<T> {
    const done = this.#serial.catch(() => {}).then(op);
    this.#serial = done;
    return done;
  }

  #checkOpen(): void {
    if (this.#closed) throw new QloradError("unavailable", `job store ${this.#dir} is closed`);
  }

  #held(jobId: string): Held {
    const held = this.#jobs.get(jobId);
    if (!held) throw new QloradError("not_found", `job_id ${JSON.stringify(jobId)}: no such job`);
    return held;
  }

  /** The job, after the generation and fence checks of a record write. */
  #check(jobId: string, opts: WriteOptions): Held {
    this.#checkOpen();
    const held = this.#held(jobId);
    this.#checkFence(held, opts.fence);
    if (held.stored.generation !== opts.expectGeneration) {
      throw new StoreConflictError(
        "generation",
        `job ${jobId} is at generation ${held.stored.generation}, not ${opts.expectGeneration}`,
      );
    }
    return held;
  }

  #checkFence(held: Held, fence: number | undefined): void {
    if (fence !== undefined && held.lease?.token !== fence) {
      throw new StoreConflictError(
        "fence",
        `job ${held.stored.record.job_id}: lease ${fence} is no longer held`,
      );
    }
  }

  /** The job, after the fence and seq checks of an append. */
  async #checkAppend(event: JobEvent, fence: number | undefined): Promise<Held> {
    this.#checkOpen();
    const held = this.#held(event.job_id);
    this.#checkFence(held, fence);
    held.lastSeq ??= (await this.#readEvents(event.job_id)).length;
    if (isTerminal(held.stored.record.state) || event.seq !== held.lastSeq + 1) {
      throw new StoreConflictError(
        "seq",
        isTerminal(held.stored.record.state)
          ? `job ${event.job_id} has ended; its log is closed`
          : `job ${event.job_id}: event ${event.seq} is not next (the log is at ${held.lastSeq})`,
      );
    }
    return held;
  }

  #appended(held: Held, event: JobEvent): void {
    held.lastSeq = event.seq;
    for (const f of [...held.followers]) f(event);
  }

  // ---------------------------------------------------------------- files

  #recordPath(jobId: string): string {
    return path.join(this.#dir, `${jobId}.json`);
  }

  #eventsPath(jobId: string): string {
    return path.join(this.#dir, `${jobId}.events.jsonl`);
  }

  #writeRecord(record: JobRecord, generation: number): Promise<void> {
    return writeFileAtomic(
      this.#recordPath(record.job_id),
      JSON.stringify({ version: RECORD_VERSION, generation, ...record }),
    );
  }

  /** A job's events, read from its log as they are consumed; stops at a torn line. */
  async *#streamLog(jobId: string, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    let seq = 0;
    try {
      for await (
        const { text } of readLines(this.#eventsPath(jobId), {
          label: `job ${jobId} log`,
          maxLineBytes: MAX_EVENT_LINE_BYTES,
        })
      ) {
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
        yield ev;
      }
    } catch (err) {
      if (err instanceof QloradError && err.kind === "not_found") return;
      throw err;
    }
  }

  /** A job's whole log, without a torn last line (a crash mid-append). */
  async #readEvents(jobId: string): Promise<JobEvent[]> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.#eventsPath(jobId));
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
      let stored: StoredJob;
      try {
        const parsed = JSON.parse(await Deno.readTextFile(file));
        const { version: _version, generation, ...rest } = parsed;
        stored = { record: rest as JobRecord, generation: Number(generation ?? 1) };
        if (typeof stored.record.job_id !== "string" || typeof stored.record.state !== "string") {
          throw new Error("not a job record");
        }
      } catch (err) {
        this.#logger.warn(`skipping unreadable job record ${item.name}: ${err}`);
        continue;
      }
      const held: Held = { stored, followers: new Set() };
      const record = stored.record;
      this.#jobs.set(record.job_id, held);
      if (record.request_id) {
        this.#requests.set(requestKey(record.kind, record.request_id), record.job_id);
      }
      if (!isTerminal(record.state)) await this.#repair(held);
    }
  }

  /**
   * A job the previous process left unended: rewrite its log without a torn tail (so the next
   * append starts on a fresh line), and if the log ends with a terminal event (the process died
   * between the log and the record), bring the record up to it: that outcome stands.
   */
  async #repair(held: Held): Promise<void> {
    const record = held.stored.record;
    const events = await this.#readEvents(record.job_id);
    await writeFileAtomic(
      this.#eventsPath(record.job_id),
      events.map((e) => JSON.stringify(e) + "\n").join(""),
    );
    held.lastSeq = events.length;
    const last = events.at(-1);
    if (last && isTerminal(last.state)) {
      const ended = endedRecord(record, last);
      const generation = held.stored.generation + 1;
      await this.#writeRecord(ended, generation);
      held.stored = { record: ended, generation };
      this.#logger.warn(`job ${record.job_id}: record repaired from its log (${last.state})`);
    }
  }
}

function requestKey(kind: JobKind, requestId: string): string {
  return `${kind}\0${requestId}`;
}
