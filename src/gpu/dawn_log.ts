/**
 * Keeps Dawn's own notices off users' terminals and logs. Dawn's native logger writes its lines
 * ("Warning: Couldn't load Vulkan: ...", "Warning: maxDynamic... artificially reduced ...") with
 * fprintf straight to the process's fd 2 (Info and Debug to fd 1), with no callback and no
 * severity switch in the npm `webgpu` build, so the only honest way to hold them back is to
 * point those fds at an in-memory file while a native call runs and sort what it wrote: Error
 * messages and any text that is not a Dawn log line are written on to the real stderr/stdout;
 * Warning, Info and Debug messages are returned to the caller, for an error message that
 * needs them (no adapter found), not printed. `QLORAD_DAWN_LOG=1` turns the capture off and
 * shows everything. The redirect uses libc through Deno's FFI (Linux, with --allow-ffi, as
 * `-A` gives); elsewhere the native call runs as it is.
 */
import { invalidArgument } from "../util/errors.ts";
import { processEnv, type SettingsEnv } from "../util/settings.ts";

export const DAWN_LOG_ENV = "QLORAD_DAWN_LOG";

/** QLORAD_DAWN_LOG: `1`/`true`/`on` shows Dawn's notices; unset, empty, `0`/`false`/`off` hides. */
export function dawnLogVerbose(env: SettingsEnv = processEnv()): boolean {
  const raw = env.get(DAWN_LOG_ENV)?.trim().toLowerCase() ?? "";
  if (raw === "" || raw === "0" || raw === "false" || raw === "off") return false;
  if (raw === "1" || raw === "true" || raw === "on") return true;
  throw invalidArgument(`${DAWN_LOG_ENV} must be 1, true, on, 0, false or off, got "${raw}"`);
}

/** Dawn's severity names as its logger prefixes them (dawn/common/Log.cpp). */
const DAWN_LINE = /^(Debug|Info|Warning|Error): /;

/** What a captured stream held: `shown` passes on, `held` are Dawn notices kept back. */
export interface SortedDawnLog {
  shown: string;
  held: string[];
}

/**
 * Splits captured text into Dawn messages (a severity line and the indented or blank lines that
 * follow it, such as Dawn's "    at operator() (...)" source line) and everything else. Error
 * messages and foreign text stay, in order; Warning, Info and Debug messages are held, each as
 * one line without its severity prefix and source location.
 */
export function sortDawnLog(text: string): SortedDawnLog {
  const shown: string[] = [];
  const held: string[] = [];
  let holding = false;
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop(); // the text's final newline
  for (const line of lines) {
    const m = DAWN_LINE.exec(line);
    if (m) {
      holding = m[1] !== "Error";
      if (holding) held.push(line.slice(m[0].length));
      else shown.push(line);
    } else if (holding && (line === "" || /^\s/.test(line))) {
      // The message's continuation: its source location or blank separator.
    } else {
      holding = false;
      shown.push(line);
    }
  }
  return { shown: shown.length ? shown.join("\n") + "\n" : "", held };
}

interface Libc {
  dup(fd: number): number;
  dup2(from: number, to: number): number;
  close(fd: number): number;
  memfd_create(name: Uint8Array<ArrayBuffer>, flags: number): number;
  lseek(fd: number, offset: bigint, whence: number): number | bigint;
  pread(fd: number, buf: Uint8Array<ArrayBuffer>, n: bigint, offset: bigint): number | bigint;
}

let libc: Libc | null | undefined;
function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") return libc;
  try {
    libc = Deno.dlopen("libc.so.6", {
      dup: { parameters: ["i32"], result: "i32" },
      dup2: { parameters: ["i32", "i32"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
      memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
      lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
      pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
    }).symbols;
  } catch {
    // No FFI permission or no glibc: Dawn's lines go through unfiltered.
  }
  return libc;
}

const SEEK_END = 2;
const MEMFD_NAME = new TextEncoder().encode("qlorad-dawn-log\0");

/**
 * fd 1 and 2 pointed at anonymous in-memory files (memfd: nothing is written to disk, so a
 * read-only root file system is no obstacle) while `fn` runs; what was written, per fd.
 * Undefined, with `fn` not run, where the redirect cannot be made.
 */
function captureFds<T>(
  fn: () => T,
): { result: { value: T } | { error: unknown }; out: string; err: string } | undefined {
  const c = loadLibc();
  if (!c) return undefined;
  const memfds: number[] = [];
  const saved: number[] = [];
  const drop = () => {
    restore(c, saved);
    for (const m of memfds) c.close(m);
  };
  for (const fd of [1, 2]) {
    const m = c.memfd_create(MEMFD_NAME, 0);
    const copy = m < 0 ? -1 : c.dup(fd);
    if (m >= 0) memfds.push(m);
    if (copy >= 0) saved.push(copy);
    if (copy < 0 || c.dup2(m, fd) < 0) {
      drop();
      return undefined;
    }
  }
  let result: { value: T } | { error: unknown };
  try {
    result = { value: fn() };
  } catch (error) {
    result = { error };
  } finally {
    restore(c, saved);
  }
  const [out, err] = memfds.map((m) => {
    const size = Number(c.lseek(m, 0n, SEEK_END));
    const bytes = new Uint8Array(Math.max(0, size));
    const got = size > 0 ? Number(c.pread(m, bytes, BigInt(size), 0n)) : 0;
    c.close(m);
    return new TextDecoder().decode(bytes.subarray(0, Math.max(0, got)));
  });
  return { result, out, err };
}

/** fd i + 1 back to what it was; each saved copy closed. */
function restore(c: Libc, saved: number[]): void {
  for (const [i, copy] of saved.entries()) {
    c.dup2(copy, i + 1);
    c.close(copy);
  }
  saved.length = 0;
}

let verbose: boolean | undefined;

/**
 * Runs a synchronous native Dawn call (instance creation, the adapter request: Dawn logs during
 * both before they return) with its notices held back, unless QLORAD_DAWN_LOG asks for them.
 * Returns the call's value and the notices it produced (empty when they were printed). A call
 * that throws has everything it printed shown before its error is rethrown.
 */
export function quietDawn<T>(fn: () => T): { value: T; notices: string[] } {
  verbose ??= dawnLogVerbose();
  if (verbose) return { value: fn(), notices: [] };
  const captured = captureFds(fn);
  if (!captured) return { value: fn(), notices: [] };
  if ("error" in captured.result) {
    // The call failed: everything it printed may explain why, so all of it is shown.
    writeAll(Deno.stdout, captured.out);
    writeAll(Deno.stderr, captured.err);
    throw captured.result.error;
  }
  const out = sortDawnLog(captured.out);
  const err = sortDawnLog(captured.err);
  writeAll(Deno.stdout, out.shown);
  writeAll(Deno.stderr, err.shown);
  return { value: captured.result.value, notices: [...out.held, ...err.held] };
}

function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}
