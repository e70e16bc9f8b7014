/**
 * What a hung process was doing, captured before it is killed: every thread's kernel-side state
 * from /proc (state, wait channel, system call: no debugger needed), the same for its descendants,
 * then the native stacks of all threads from `gdb -batch -p PID -ex "thread apply all bt"`. The
 * debugger is $QLORAD_GDB (the GPU kit's private gdb), else `gdb`, else `cuda-gdb` on PATH; with
 * none, the /proc part stands alone. gdb detaches on exit, so the process is left as it was.
 */

export interface CaptureOptions {
  /** gdb's own time limit; a debugger that hangs too is killed. Default 60 s. */
  gdbTimeoutMs?: number;
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** One line per thread: tid, name, state, wait channel, system call (what /proc lets us read). */
function threadLines(pid: number): string[] {
  const lines: string[] = [];
  let tids: number[] = [];
  try {
    tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => Number(e.name)).sort((a, b) =>
      a - b
    );
  } catch (e) {
    return [`  (no /proc/${pid}/task: ${(e as Error).message})`];
  }
  for (const tid of tids) {
    const base = `/proc/${pid}/task/${tid}`;
    const comm = readText(`${base}/comm`)?.trim() ?? "?";
    const stat = readText(`${base}/stat`) ?? "";
    // Field 3 of stat, after the parenthesized name (which may hold spaces).
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? "?";
    const wchan = readText(`${base}/wchan`)?.trim() || "-";
    const syscall = readText(`${base}/syscall`)?.trim().split(" ")[0] ?? "?";
    lines.push(`  tid ${tid} ${comm} state ${state} wchan ${wchan} syscall ${syscall}`);
  }
  return lines;
}

/** Processes below `pid` (children, grandchildren, ...), from /proc/<pid>/stat's ppid. */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  try {
    for (const e of Deno.readDirSync("/proc")) {
      const p = Number(e.name);
      if (!Number.isInteger(p)) continue;
      const stat = readText(`/proc/${p}/stat`);
      if (!stat) continue;
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(p, ppid);
    }
  } catch {
    return [];
  }
  const out: number[] = [];
  const frontier = [pid];
  while (frontier.length) {
    const p = frontier.pop()!;
    for (const [child, pp] of parent) {
      if (pp === p && !out.includes(child)) {
        out.push(child);
        frontier.push(child);
      }
    }
  }
  return out;
}

function onPath(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const path = `${dir}/${name}`;
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The debugger to use, or undefined. */
export function findDebugger(): string | undefined {
  const explicit = Deno.env.get("QLORAD_GDB");
  if (explicit) return explicit;
  return onPath("gdb") ?? onPath("cuda-gdb");
}

async function gdbStacks(gdb: string, pid: number, timeoutMs: number): Promise<string> {
  const child = new Deno.Command(gdb, {
    args: [
      "-batch",
      "-nx",
      "-p",
      String(pid),
      "-ex",
      "set pagination off",
      "-ex",
      "info threads",
      "-ex",
      "thread apply all bt",
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    const text = dec.decode(out.stdout) + dec.decode(out.stderr);
    const how = out.signal === "SIGKILL"
      ? ` (killed after ${timeoutMs / 1000} s)`
      : ` (exit ${out.code})`;
    return `$ ${gdb} -batch -p ${pid} -ex "thread apply all bt"${how}\n${text}`;
  } finally {
    clearTimeout(timer);
  }
}

/** A text report of what `pid` and its descendants are doing. */
export async function captureStacks(pid: number, o: CaptureOptions = {}): Promise<string> {
  const parts: string[] = [`captured ${new Date().toISOString()}`];
  for (const p of [pid, ...descendants(pid)]) {
    const cmd = readText(`/proc/${p}/cmdline`)?.split("\0").filter(Boolean).join(" ") ?? "?";
    parts.push(`process ${p}: ${cmd}`, ...threadLines(p));
  }
  const gdb = findDebugger();
  if (!gdb) {
    parts.push("no debugger (set QLORAD_GDB, or put gdb or cuda-gdb on PATH): /proc only");
  } else {
    try {
      parts.push(await gdbStacks(gdb, pid, o.gdbTimeoutMs ?? 60_000));
    } catch (e) {
      parts.push(`${gdb} failed: ${(e as Error).message}`);
    }
  }
  return parts.join("\n") + "\n";
}
