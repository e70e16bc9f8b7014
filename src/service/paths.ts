/**
 * User paths -> host paths inside the data directory. Requests name files relative to the data
 * directory; anything that could reach outside it is refused, and error messages name the request
 * field and the user's path, never a host path.
 */
import * as path from "node:path";
import { QloradError } from "../util/errors.ts";

/** The server's own state lives here; requests may not touch it. */
export const RESERVED_DIR = ".qlorad";

export interface ResolveOptions {
  /** The path must exist (NOT_FOUND otherwise). */
  mustExist?: boolean;
}

/**
 * Resolves `userPath` (relative to `dataDir`) to an absolute host path.
 *
 * Refused: an empty path, a NUL byte, the data directory itself (INVALID_ARGUMENT); an absolute
 * path or a ".." component (INVALID_ARGUMENT); a path through a symlink that resolves outside the
 * data directory, a dangling symlink, or the reserved `.qlorad` folder (PERMISSION_DENIED).
 * Every existing component is resolved with realpath, so the returned path has no symlinks in
 * its existing part. With `mustExist`, a missing path is NOT_FOUND.
 */
export async function resolveDataPath(
  dataDir: string,
  userPath: string,
  field: string,
  opts: ResolveOptions = {},
): Promise<string> {
  const named = `${field} ${JSON.stringify(userPath)}`;
  if (userPath === "") {
    throw new QloradError("invalid_argument", `${field} is required`);
  }
  if (userPath.includes("\0")) {
    throw new QloradError("invalid_argument", `${named}: contains a NUL byte`);
  }
  if (path.isAbsolute(userPath) || userPath.startsWith("\\") || /^[A-Za-z]:/.test(userPath)) {
    throw new QloradError(
      "invalid_argument",
      `${named}: must be relative to the data directory, not absolute`,
    );
  }
  const parts = userPath.split(/[/\\]/).filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) {
    throw new QloradError(
      "invalid_argument",
      `${named}: must not contain ".." (paths are relative to the data directory)`,
    );
  }
  if (parts.length === 0) {
    throw new QloradError(
      "invalid_argument",
      `${named}: must name a file or folder inside the data directory, not the directory itself`,
    );
  }
  if (parts[0] === RESERVED_DIR) {
    throw new QloradError(
      "permission_denied",
      `${named}: ${RESERVED_DIR}/ is reserved for the server's own state`,
    );
  }

  const root = await Deno.realPath(dataDir);
  let current = root;
  for (let i = 0; i < parts.length; i++) {
    const next = path.join(current, parts[i]);
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(next);
    } catch (err) {
      if (err instanceof Deno.errors.NotADirectory) {
        throw new QloradError(
          "invalid_argument",
          `${named}: ${JSON.stringify(parts.slice(0, i).join("/"))} is a file, not a folder`,
        );
      }
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      // The rest does not exist: its deepest existing ancestor (`current`) is inside the root.
      if (opts.mustExist) {
        throw new QloradError("not_found", `${named}: not found in the data directory`);
      }
      return path.join(current, ...parts.slice(i));
    }
    if (info.isSymlink) {
      let target: string;
      try {
        target = await Deno.realPath(next);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        throw new QloradError(
          "permission_denied",
          `${named}: ${JSON.stringify(parts.slice(0, i + 1).join("/"))} is a dangling symlink`,
        );
      }
      if (!isInside(root, target)) {
        throw new QloradError(
          "permission_denied",
          `${named}: ${
            JSON.stringify(parts.slice(0, i + 1).join("/"))
          } is a symlink that leads outside the data directory`,
        );
      }
      if (target === root || isInside(path.join(root, RESERVED_DIR), target)) {
        throw new QloradError(
          "permission_denied",
          `${named}: ${
            JSON.stringify(parts.slice(0, i + 1).join("/"))
          } is a symlink to the data directory or its reserved folder`,
        );
      }
      current = target;
    } else {
      current = next;
    }
  }
  return current;
}

/** `child` is `root` or below it (both absolute and normalized). */
export function isInside(root: string, child: string): boolean {
  const rel = path.relative(root, child);
  return rel === "" || (rel !== ".." && !rel.startsWith("../") && !path.isAbsolute(rel));
}

/** The user path in a normal form ("a/./b/" -> "a/b"), for echoing back in results. */
export function normalizeUserPath(userPath: string): string {
  return userPath.split(/[/\\]/).filter((p) => p !== "" && p !== ".").join("/");
}
