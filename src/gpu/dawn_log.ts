/**
 * Keeps Dawn's own notices off users' terminals and logs. Dawn's native logger writes its lines
 * ("Warning: Couldn't load Vulkan: ...", "Warning: maxDynamic... artificially reduced ...") with
 * fprintf straight to the process's fd 2 (Info and Debug to fd 1), with no callback and no
 * severity switch in the npm `webgpu` build, so the only honest way to hold them back is to
 * point those fds at a temporary file while a native call runs and sort what it wrote: Error
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
  open(path: Uint8Array<ArrayBuffer>, flags: number, mode: number): number;
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
      open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
    }).symbols;
  } catch {
    // No FFI permission or no glibc: Dawn's lines go through unfiltered.
  }
  return libc;
}

const O_WRONLY = 0o1;
const O_APPEND = 0o2000;

/** fd 1 and 2 pointed at fresh temporary files while `fn` runs; what was written, per fd. */
function captureFds<T>(fn: () => T): { value: T; out: string; err: string } | undefined {
  const c = loadLibc();
  if (!c) return undefined;
  const paths = [Deno.makeTempFileSync({ prefix: "qlorad-dawn-" })];
  paths.push(Deno.makeTempFileSync({ prefix: "qlorad-dawn-" }));
  const saved: number[] = [];
  try {
    for (const [i, fd] of [1, 2].entries()) {
      const file = c.open(new TextEncoder().encode(`${paths[i]}\0`), O_WRONLY | O_APPEND, 0);
      if (file < 0) throw new Error("open failed");
      const copy = c.dup(fd);
      if (copy < 0 || c.dup2(file, fd) < 0) {
        c.close(file);
        if (copy >= 0) c.close(copy);
        throw new Error("dup failed");
      }
      c.close(file);
      saved.push(copy);
    }
  } catch {
    restore(c, saved);
    for (const p of paths) Deno.removeSync(p);
    return undefined;
  }
  let value: T;
  try {
    value = fn();
  } finally {
    restore(c, saved);
  }
  const [out, err] = paths.map((p) => Deno.readTextFileSync(p));
  for (const p of paths) Deno.removeSync(p);
  return { value, out, err };
}

function restore(c: Libc, saved: number[]): void {
  for (const [i, copy] of saved.entries()) {
    c.dup2(copy, i + 1);
    c.close(copy);
  }
}

let verbose: boolean | undefined;

/**
 * Runs a synchronous native Dawn call (instance creation, the adapter request: Dawn logs during
 * both before they return) with its notices held back, unless QLORAD_DAWN_LOG asks for them.
 * Returns the call's value and the notices it produced (empty when they were printed).
 */
export function quietDawn<T>(fn: () => T): { value: T; notices: string[] } {
  verbose ??= dawnLogVerbose();
  if (verbose) return { value: fn(), notices: [] };
  const captured = captureFds(fn);
  if (!captured) return { value: fn(), notices: [] };
  const out = sortDawnLog(captured.out);
  const err = sortDawnLog(captured.err);
  writeAll(Deno.stdout, out.shown);
  writeAll(Deno.stderr, err.shown);
  return { value: captured.value, notices: [...out.held, ...err.held] };
}

function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}
