/**
 * Removes the temporary `.partial-<hex>` files and folders a crash can leave behind (they are
 * never under a final name, but they take disk). Run at server start, before any job writes.
 */
import { join } from "node:path";
import { PARTIAL_MARK } from "./atomic.ts";

const PARTIAL = new RegExp(`\\${PARTIAL_MARK}[0-9a-f]{12}$`);

/** Returns the paths removed (relative to `root`); walks at most `maxDepth` folders down. */
export async function sweepPartials(
  root: string,
  opts: { maxDepth?: number; skip?: string[] } = {},
): Promise<string[]> {
  const removed: string[] = [];
  const maxDepth = opts.maxDepth ?? 8;
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
      if (PARTIAL.test(e.name)) {
        await Deno.remove(path, { recursive: true }).catch(() => {});
        removed.push(relPath);
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
