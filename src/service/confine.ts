/**
 * Closing the gap between checking a path and using it. A request's paths are resolved and checked
 * when it arrives (paths.ts), but a job may run minutes later, and by then a folder may have been
 * swapped for a symlink to somewhere else. So when a job starts, each path it will use is opened
 * again without following a final symlink (O_NOFOLLOW), and the opened file's real path (read back
 * from /proc/self/fd) must be the one that was checked. The job then works through
 * `/proc/self/fd/<n>`: the kernel resolves that to the inode that was checked, whatever happens
 * to the path afterwards, so reads and writes cannot be redirected outside the data directory by
 * a later rename or symlink. Where /proc is missing (not Linux) the path itself is used after the
 * same check (device and inode compared instead), which leaves the window between the check and
 * each open.
 *
 * Files inside an input folder (a model's config.json, its weights) are opened by lower layers by
 * name inside the pinned folder; checkFolderLinks refuses a folder whose entries are symlinks
 * that lead outside the data directory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { QloradError } from "../util/errors.ts";
import { isInside, RESERVED_DIR, resolveDataPath } from "./paths.ts";

const PROC_FD = "/proc/self/fd";

/** A path held open for a job. */
export interface PinnedPath {
  /** What the job should use: `/proc/self/fd/<n>`, or the checked path where /proc is missing. */
  path: string;
  /** The checked host path. */
  hostPath: string;
  close(): Promise<void>;
}

let procWorks: boolean | undefined;

async function procFdWorks(): Promise<boolean> {
  if (procWorks === undefined) {
    procWorks = await Deno.stat(PROC_FD).then((s) => s.isDirectory, () => false);
  }
  return procWorks;
}

function changed(label: string): QloradError {
  return new QloradError(
    "permission_denied",
    `${label}: changed since the request was checked (renamed, or replaced by a symlink); ` +
      `refused`,
  );
}

/**
 * Opens `hostPath` (a realpath from resolveDataPath) for a job: a folder or a file, never through
 * a final symlink, and only if it is still the very path that was checked. `label` names it in
 * errors, e.g. `dataset_path "data/train.jsonl"`.
 */
export async function pinPath(
  hostPath: string,
  label: string,
  kind: "file" | "dir",
): Promise<PinnedPath> {
  const flags = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW |
    (kind === "dir" ? fs.constants.O_DIRECTORY : 0);
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(hostPath, flags);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ENOENT") {
      throw new QloradError("not_found", `${label}: no longer exists`);
    }
    if (code === "ELOOP" || code === "ENOTDIR" || code === "EMLINK") throw changed(label);
    throw err;
  }
  try {
    const opened = await handle.stat();
    if (kind === "file" && !opened.isFile()) {
      throw new QloradError("invalid_argument", `${label}: not a file`);
    }
    if (await procFdWorks()) {
      const fdPath = `${PROC_FD}/${handle.fd}`;
      if (await Deno.realPath(fdPath) !== hostPath) throw changed(label);
      return { path: fdPath, hostPath, close: () => handle.close() };
    }
    // No /proc: the path must still lead to the inode that was opened.
    const now = await Deno.stat(hostPath);
    if (await Deno.realPath(hostPath) !== hostPath || now.ino !== opened.ino) {
      throw changed(label);
    }
    return { path: hostPath, hostPath, close: () => handle.close() };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Pinned paths of one job, closed together. */
export class Pins {
  readonly #pins: PinnedPath[] = [];

  /** See pinPath. */
  async pin(hostPath: string, label: string, kind: "file" | "dir"): Promise<string> {
    const p = await pinPath(hostPath, label, kind);
    this.#pins.push(p);
    return p.path;
  }

  /** Replaces each pinned path in `message` with `name(hostPath)` (errors show no fd paths). */
  rename(message: string, name: (hostPath: string) => string): string {
    let out = message;
    // Longest first: /proc/self/fd/12 must not match inside /proc/self/fd/123.
    const pins = [...this.#pins].sort((a, b) => b.path.length - a.path.length);
    for (const p of pins) {
      if (p.path !== p.hostPath) out = out.split(p.path).join(name(p.hostPath));
    }
    return out;
  }

  async close(): Promise<void> {
    for (const p of this.#pins.splice(0)) await p.close().catch(() => {});
  }
}

/**
 * An output for a job: its parent folder (`outputUser`'s, relative to `dataDir`) resolved again,
 * made if missing, and pinned; it must still be the folder the request was checked with
 * (`outputHost` is the checked path of the output). Returns the output's path through the pin.
 */
export async function pinOutput(
  pins: Pins,
  dataDir: string,
  outputUser: string,
  outputHost: string,
  label: string,
): Promise<string> {
  const parentUser = path.dirname(outputUser);
  let parent = dataDir;
  if (parentUser !== ".") {
    try {
      parent = await resolveDataPath(dataDir, parentUser, "output_path");
    } catch (err) {
      if (err instanceof QloradError && err.kind === "permission_denied") throw changed(label);
      throw err;
    }
  }
  if (parent !== path.dirname(outputHost)) throw changed(label);
  await Deno.mkdir(parent, { recursive: true });
  return path.join(await pins.pin(parent, label, "dir"), path.basename(outputHost));
}

/** The most entries checkFolderLinks looks at (a model folder has a few dozen). */
const MAX_ENTRIES = 10_000;

/**
 * Refuses (permission_denied) a folder in which a symlink, at most `depth` levels down, leads
 * outside the data directory or into its reserved folder, or dangles. Files inside input folders
 * are opened by name, so this is what keeps them inside.
 */
export async function checkFolderLinks(
  root: string,
  dir: string,
  label: string,
  depth = 2,
): Promise<void> {
  let seen = 0;
  const walk = async (at: string, rel: string, level: number): Promise<void> => {
    for await (const e of Deno.readDir(at)) {
      if (++seen > MAX_ENTRIES) {
        throw new QloradError("invalid_argument", `${label}: more than ${MAX_ENTRIES} entries`);
      }
      const p = path.join(at, e.name);
      const relName = rel ? `${rel}/${e.name}` : e.name;
      if (e.isSymlink) {
        const target = await Deno.realPath(p).catch(() => undefined);
        if (
          target === undefined || !isInside(root, target) ||
          isInside(path.join(root, RESERVED_DIR), target)
        ) {
          throw new QloradError(
            "permission_denied",
            `${label}: ${JSON.stringify(relName)} is a symlink that leads outside the data ` +
              `directory (or nowhere)`,
          );
        }
      } else if (e.isDirectory && level < depth) {
        await walk(p, relName, level + 1);
      }
    }
  };
  await walk(dir, "", 1);
}
