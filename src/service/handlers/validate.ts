/**
 * Size checks for request path fields, before anything resolves or echoes them. (The ranges of the
 * jobs' settings are src/train/settings.ts's.)
 */
import { invalidArgument } from "../../util/errors.ts";

/** The longest request path accepted, in characters (paths are relative to the data directory). */
export const MAX_PATH_CHARS = 1024;
/** The longest path component most file systems allow, in UTF-8 bytes. */
const MAX_NAME_BYTES = 255;

/**
 * Checks the size of path fields before anything resolves or echoes them: a string of at most
 * MAX_PATH_CHARS characters whose components fit a file name. Unset (empty) fields pass; what a
 * path may name is resolveDataPath's to say. Errors never repeat the value.
 */
export function checkPathFields<T extends object>(req: T, fields: (keyof T & string)[]): void {
  const enc = new TextEncoder();
  for (const field of fields) {
    const value: unknown = req[field];
    if (value === undefined || value === null || value === "") continue;
    if (typeof value !== "string") throw invalidArgument(`${field}: must be a string`);
    if (value.length > MAX_PATH_CHARS) {
      throw invalidArgument(`${field}: longer than ${MAX_PATH_CHARS} characters`);
    }
    if (value.split(/[/\\]/).some((part) => enc.encode(part).length > MAX_NAME_BYTES)) {
      throw invalidArgument(`${field}: a path component is longer than ${MAX_NAME_BYTES} bytes`);
    }
  }
}
