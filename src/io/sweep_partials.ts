/**
 * Cleans up what a crash can leave behind, at server start, before any job writes: temporary
 * `.partial-<hex>` files and folders (never under a final name, but they take disk), and
 * `.old-<hex>` folders that OutputDir.commit moved aside to replace them. An old folder whose
 * final name is taken was replaced completely and is removed; one whose final name is free was
 * moved aside just before the crash, and is put back, so an overwrite never loses the old output.
 *
 * A fleet's replicas share the data folder, so one replica's start cannot tell another's work in
 * progress from a dead one's leftovers: there `olderThanMs` limits the sweep to entries nothing
 * has written for that long (the newest modification time inside a folder counts), which no live
 * writer leaves (a frozen one's commit is refused by the store's fence anyway).
 */
import { join } from "node:path";
import { OLD_MARK, PARTIAL_MARK } from "./atomic.ts";

const PARTIAL = new RegExp(`\\${PARTIAL_MARK}[0-9a-f]{12}$`);
const OLD = new RegExp(`\\${OLD_MARK}[0-9a-f]{12}$`);

export interface SweepOptions {
  /** How many folders down to walk (default 8). */
  maxDepth?: number;
  /** Relative paths not to enter (e.g. the server's own `.qlorad`). */
  skip?: string[];
  /** Receives the relative paths of old folders moved back to their final names. */
  restored?: string[];
  /** Only entries whose newest modification (anything inside included) is this old. */
  olderThanMs?: number;
  /** "Now" for olderThanMs (tests). */
  nowMs?: number;
}

/** Returns the paths removed (relative to `root`); walks at most `maxDepth` folders down. */
export async function sweepPartials(root: string, opts: SweepOptions = {}): Promise<string[]> {
  const removed: string[] = [];
  const maxDepth = opts.maxDepth ?? 8;
  const cutoff = opts.olderThanMs === undefined
    ? Infinity
    : (opts.nowMs ?? Date.now()) - opts.olderThanMs;
  const stale = async (path: string) => cutoff === Infinity || await newestMtime(path) < cutoff;
  const walk = async (dir: string, rel: string, depth: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(dir));
    } catch {
      return; // unreadable: not ours to clean
    }
    for (const e of entries) {
      const path = join(dir, e.name);
      const relPath = rel ? `${rel}/${e.name}` : e.name;
      if ((PARTIAL.test(e.name) || OLD.test(e.name)) && !await stale(path)) {
        continue;
      }
      if (PARTIAL.test(e.name)) {
        await Deno.remove(path, { recursive: true }).catch(() => {});
        removed.push(relPath);
      } else if (OLD.test(e.name) && e.isDirectory && !e.isSymlink) {
        const final = path.replace(OLD, "");
        const taken = await Deno.lstat(final).then(() => true, () => false);
        if (taken) {
          await Deno.remove(path, { recursive: true }).catch(() => {});
          removed.push(relPath);
        } else if (await Deno.rename(path, final).then(() => true, () => false)) {
          opts.restored?.push(relPath.replace(OLD, ""));
        }
      } else if (
        e.isDirectory && !e.isSymlink && depth < maxDepth && !opts.skip?.includes(relPath)
      ) {
        await walk(path, relPath, depth + 1);
      }
    }
  };
  await walk(root, "", 0);
  return removed;
}

/** The newest modification time (ms) of a file, or of a folder and everything in it. */
async function newestMtime(path: string): Promise<number> {
  const info = await Deno.lstat(path).catch(() => undefined);
  if (!info) return -Infinity;
  let newest = info.mtime?.getTime() ?? Infinity; // no mtime: never old enough
  if (info.isDirectory) {
    for await (const e of Deno.readDir(path)) {
      newest = Math.max(newest, await newestMtime(join(path, e.name)));
    }
  }
  return newest;
}
