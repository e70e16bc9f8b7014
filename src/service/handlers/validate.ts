/** Range checks for request fields: each error names the field and the allowed range. */
import { invalidArgument } from "../../util/errors.ts";

export function intIn(
  value: unknown,
  field: string,
  lo: number,
  hi: number,
  fallback: number,
): number {
  const v = value === undefined || value === null || value === 0 ? fallback : Number(value);
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw invalidArgument(`${field}: ${value} is outside ${lo}..${hi}`);
  }
  return v;
}

/** A number in [lo, hi] (or (lo, hi] when `openLow`); `fallback` when unset. */
export function numberIn(
  value: unknown,
  field: string,
  lo: number,
  hi: number,
  fallback: number,
  openLow = false,
): number {
  const v = value === undefined || value === null ? fallback : Number(value);
  if (!Number.isFinite(v) || v > hi || (openLow ? v <= lo : v < lo)) {
    throw invalidArgument(`${field}: ${value} is outside ${openLow ? "(" : "["}${lo}, ${hi}]`);
  }
  return v;
}

/** The longest request path accepted, in characters (paths are relative to the data directory). */
export const MAX_PATH_CHARS = 1024;
/** The longest path component most file systems allow, in UTF-8 bytes. */
const MAX_NAME_BYTES = 255;

/**
 * Checks the size of path fields before anything resolves or echoes them: a string of at most
 * MAX_PATH_CHARS characters whose components fit a file name. Unset (empty) fields pass; what a
 * path may name is resolveDataPath's to say. Errors never repeat the value.
 */
export function checkPathFields(req: Record<string, unknown>, fields: string[]): void {
  const enc = new TextEncoder();
  for (const field of fields) {
    const value = req[field];
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

/** A list of short strings: at most `maxItems`, each 1..`maxChars` characters (not echoed). */
export function checkStringList(
  value: unknown,
  field: string,
  maxItems: number,
  maxChars: number,
): string[] {
  const list = value === undefined || value === null ? [] : value;
  if (!Array.isArray(list)) throw invalidArgument(`${field}: must be a list of strings`);
  if (list.length > maxItems) {
    throw invalidArgument(`${field}: at most ${maxItems} entries, got ${list.length}`);
  }
  for (const item of list) {
    if (typeof item !== "string" || item.trim() === "" || item.length > maxChars) {
      throw invalidArgument(`${field}: each entry must be 1..${maxChars} characters`);
    }
  }
  return list;
}
