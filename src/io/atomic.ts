/**
 * Crash-safe writes: everything is written under `<final>.partial-<random>`, fsynced, and renamed
 * into place only when complete, so a crash never leaves a half-written thing under a final name.
 * Replacing an existing folder moves the old one aside to `<final>.old-<random>` first; a crash
 * between the two renames is repaired at the next start (sweep_partials.ts puts it back). A full
 * disk is reported as resource_exhausted naming the file being written.
 */
import { dirname, join } from "node:path";
import { failedPrecondition, QloradError } from "../util/errors.ts";

/** Suffix marking an unfinished file or folder; safe to delete when no writer is running. */
export const PARTIAL_MARK = ".partial-";

/** Suffix of a folder moved aside while its replacement is renamed into place. */
export const OLD_MARK = ".old-";

/** Errors of a write that found no space: ENOSPC (os error 28) and EDQUOT (os error 122). */
export function isDiskFullError(err: unknown): boolean {
  if (err instanceof QloradError) return false;
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e?.code === "ENOSPC" || e?.code === "EDQUOT") return true;
  const message = typeof e?.message === "string" ? e.message : "";
  return /\(os error (28|122)\)|No space left on device|Disk quota exceeded/i.test(message);
}

/** resource_exhausted naming the file that could not be written. */
export function diskFullError(path: string, cause?: unknown): QloradError {
  return new QloradError(
    "resource_exhausted",
    `${path}: no space left on the device (free some space, then run the job again)`,
    { cause },
  );
}

/** Rethrows a disk-full error as diskFullError(path); any other error as it is. */
function rethrowNamed(err: unknown, path: string): never {
  throw isDiskFullError(err) ? diskFullError(path, err) : err;
}

function randomHex(bytes = 6): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** A fresh temporary sibling name for `finalPath`: `<finalPath>.partial-<random>`. */
export function partialPath(finalPath: string): string {
  return `${finalPath}${PARTIAL_MARK}${randomHex()}`;
}

/** fsync a directory so renames and creations inside it are durable (best effort). */
export async function fsyncDir(dir: string): Promise<void> {
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(dir, { read: true });
    await f.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  } finally {
    f?.close();
  }
}

/** fsync one file by path. */
export async function fsyncFile(path: string): Promise<void> {
  const f = await Deno.open(path, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Write a whole file atomically: temp file in the same folder, fsync, rename, fsync folder. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = partialPath(path);
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true });
    try {
      let off = 0;
      while (off < bytes.byteLength) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await removeQuietly(tmp);
    rethrowNamed(e, path);
  }
  await fsyncDir(dirname(path));
}

/** Appends to a file (created if missing) and fsyncs it and its folder before returning. */
export async function appendFileDurably(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  try {
    const f = await Deno.open(path, { append: true, create: true });
    try {
      let off = 0;
      while (off < bytes.byteLength) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
  } catch (e) {
    rethrowNamed(e, path);
  }
  await fsyncDir(dirname(path));
}

/** fsync every regular file under `dir` and every folder, deepest first. */
async function fsyncTree(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    const p = join(dir, entry.name);
    if (entry.isDirectory) await fsyncTree(p);
    else if (entry.isFile) await fsyncFile(p);
  }
  await fsyncDir(dir);
}

export interface OutputDirOptions {
  /** Replace an existing folder at the final path on commit (default false). */
  overwrite?: boolean;
}

/**
 * An output folder built under a temporary sibling name and renamed into place on commit.
 * Write files into `.path`; then `commit()` (or `abort()` to throw it all away).
 */
export class OutputDir {
  /** Where the folder will be when committed. */
  readonly finalPath: string;
  /** The temporary folder to write into. */
  readonly path: string;
  readonly overwrite: boolean;
  #state: "open" | "committed" | "aborted" = "open";

  private constructor(finalPath: string, path: string, overwrite: boolean) {
    this.finalPath = finalPath;
    this.path = path;
    this.overwrite = overwrite;
  }

  /** Make the temporary folder; fails if `finalDir` exists and `overwrite` is not set. */
  static async create(finalDir: string, options: OutputDirOptions = {}): Promise<OutputDir> {
    const overwrite = options.overwrite ?? false;
    const finalPath = finalDir.replace(/\/+$/, "") || finalDir;
    if (!overwrite && await exists(finalPath)) {
      throw failedPrecondition(`${finalPath}: already exists (set overwrite to replace it)`);
    }
    await Deno.mkdir(dirname(finalPath), { recursive: true });
    const tmp = partialPath(finalPath);
    await Deno.mkdir(tmp);
    return new OutputDir(finalPath, tmp, overwrite);
  }

  /** Path of a file inside the temporary folder. */
  file(name: string): string {
    return join(this.path, name);
  }

  /**
   * fsync everything, then rename into place (moving an old folder aside to `<final>.old-<hex>`
   * and removing it once the new one is in).
   */
  async commit(): Promise<void> {
    if (this.#state !== "open") {
      throw new QloradError("internal", `${this.finalPath}: output already ${this.#state}`);
    }
    await fsyncTree(this.path).catch((e) => rethrowNamed(e, this.finalPath));
    const parent = dirname(this.finalPath);
    let aside: string | undefined;
    if (await exists(this.finalPath)) {
      if (!this.overwrite) {
        throw failedPrecondition(`${this.finalPath}: already exists (set overwrite to replace it)`);
      }
      // Rename, not delete: until the new one is in, the old one survives under another name.
      aside = `${this.finalPath}${OLD_MARK}${randomHex()}`;
      await Deno.rename(this.finalPath, aside);
    }
    try {
      await Deno.rename(this.path, this.finalPath);
    } catch (e) {
      if (aside) await Deno.rename(aside, this.finalPath).catch(() => {});
      throw e;
    }
    this.#state = "committed";
    await fsyncDir(parent);
    if (aside) await removeQuietly(aside);
  }

  /** Remove the temporary folder; the final path is untouched. Safe to call more than once. */
  async abort(): Promise<void> {
    if (this.#state === "committed") return;
    this.#state = "aborted";
    await removeQuietly(this.path);
  }
}
