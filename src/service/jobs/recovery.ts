/**
 * Crash recovery of jobs a dead server left unended. A job's run (its closure) died with the
 * process that ran it, so a job found QUEUED or RUNNING when a server starts is ended FAILED, with
 * a message that says so; the client submits it again (a training job can resume from its last
 * checkpoint). The store has already repaired its own files by then (local_store.ts), so a job
 * whose terminal event reached the log before the crash is not here: its outcome stands.
 *
 * (With a shared store, a job another replica holds a live lease on is left alone: claim fails.
 * A fleet of replicas does not run this at all: its jobs are taken over, not failed; see the
 * manager's fleet mode.)
 */
import type { Logger } from "../status.ts";
import { endedRecord, isTerminal, nextEvent } from "./records.ts";
import type { JobRecord } from "./records.ts";
import type { JobStore, StoredJob } from "./store.ts";

export const RESTARTED_WHILE_RUNNING = "server restarted while the job was running";
export const RESTARTED_WHILE_QUEUED = "server restarted while the job was queued";

/** How long a recovery claim may last; it is released at once. */
const RECOVERY_LEASE_MS = 60_000;

/**
 * Ends an unended job FAILED (its log catching up with the record first) and returns what it
 * became. A store that could not be written is logged, and the ended record is returned anyway,
 * so the server starts and the job shows its outcome (the next start tries again).
 */
export async function endInterrupted(
  store: JobStore,
  job: StoredJob,
  owner: string,
  logger: Logger,
): Promise<StoredJob> {
  const record = job.record;
  if (isTerminal(record.state)) return job;
  const message = record.state === "RUNNING" ? RESTARTED_WHILE_RUNNING : RESTARTED_WHILE_QUEUED;
  const lease = await store.claim(record.job_id, owner, RECOVERY_LEASE_MS);
  if (!lease) return job;
  try {
    const events = await Array.fromAsync(store.read(record.job_id, 1));
    const last = events.at(-1);
    const current: JobRecord = {
      ...record,
      last_seq: events.length,
      ...(last ? { last_event: last } : {}),
    };
    const event = nextEvent(current, "FAILED", { error: { kind: "unavailable", message } });
    const ended = endedRecord(current, event);
    let generation = job.generation;
    try {
      generation = await store.end(event, ended, {
        expectGeneration: job.generation,
        fence: lease.token,
      });
    } catch (err) {
      logger.error(`could not write the job store in ${store.location}`, err);
    }
    logger.warn(`job ${record.job_id} marked FAILED: ${message}`);
    return { record: ended, generation };
  } finally {
    await store.release(lease);
  }
}
