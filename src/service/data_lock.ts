/**
 * One server per data directory: an exclusive lock (flock) on `<dataDir>/.qlorad/lock`, taken
 * before the server touches anything in the directory (sweeping partials, repairing jobs) and held
 * until it stops. A second server on the same directory would mark the first one's running job
 * FAILED and interleave its event logs; instead it refuses to start, naming the holder's pid. The
 * lock is the kernel's, so a killed server releases it with its process.
 *
 * A fleet (several replicas sharing one data directory and a shared job store, issue 11) takes a
 * lock per replica id instead (`lock-<id>`): what the single lock prevented cannot happen there,
 * since no replica fails another's jobs at start (they are taken over after their lease lapses),
 * logs are ordered by the store's seq check, and every write a job makes is fenced by its lease.
 * The per-replica lock still refuses two servers started with the same id, whose leases would
 * carry the same owner name.
 */
import * as path from "node:path";
import { QloradError } from "../util/errors.ts";
import { RESERVED_DIR } from "./paths.ts";

export const LOCK_FILE = "lock";

export interface DataDirLock {
  /** Releases the lock (idempotent). */
  release(): void;
}

/**
 * Locks `dataDir` (a realpath) or throws failed_precondition naming the holder; with `replicaId`
 * (fleet mode) only that replica's lock.
 */
export async function lockDataDir(dataDir: string, replicaId?: string): Promise<DataDirLock> {
  const dir = path.join(dataDir, RESERVED_DIR);
  await Deno.mkdir(dir, { recursive: true });
  const file = path.join(
    dir,
    replicaId === undefined ? LOCK_FILE : `${LOCK_FILE}-${replicaId.replace(/[^\w.-]/g, "_")}`,
  );
  const f = await Deno.open(file, { read: true, write: true, create: true });
  let locked = false;
  try {
    locked = await f.tryLock(true);
    if (!locked) {
      const holder = (await Deno.readTextFile(file).catch(() => "")).trim();
      throw new QloradError(
        "failed_precondition",
        `the data directory ${dataDir} is in use by another qlorad server` +
          `${replicaId === undefined ? "" : ` with replica id ${JSON.stringify(replicaId)}`}` +
          `${/^\d+$/.test(holder) ? ` (pid ${holder})` : ""}; stop it first, or give this ` +
          `server its own --data-dir`,
      );
    }
    // Who holds it, for the message above (the lock, not the content, is what counts).
    await f.truncate(0);
    await f.write(new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (err) {
    if (locked) await f.unlock().catch(() => {});
    f.close();
    throw err;
  }
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      try {
        f.unlockSync();
      } finally {
        f.close();
      }
    },
  };
}
