/**
 * A child process under a hard time limit, for the GPU check's stages and test files: a process
 * stuck inside a GPU driver cannot be interrupted from JavaScript, so each runs apart, in its own
 * process group (via setsid, where there is one), and on overrun its stacks are captured
 * (scripts/bench/hang_capture.ts) before the whole group is killed. Output is kept bounded (the head
 * and the tail), so a chatty child cannot fill memory.
 */
import { captureStacks } from "./hang_capture.ts";

export interface BoundedOptions {
  timeoutMs: number;
  env?: Record<string, string>;
  cwd?: string;
  /** Capture stacks on overrun (default true). */
  captureOnTimeout?: boolean;
  /** Bytes of output kept from the start and from the end (default 16 KiB and 96 KiB). */
  headBytes?: number;
  tailBytes?: number;
}

export interface BoundedResult {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  seconds: number;
  pid: number;
  /** stdout and stderr interleaved as they came, head and tail (a marker where cut). */
  output: string;
  /** Stack capture taken on overrun. */
  stacks?: string;
}

let setsidPath: string | null | undefined;

function findSetsid(): string | null {
  if (setsidPath !== undefined) return setsidPath;
  setsidPath = null;
  for (const p of ["/usr/bin/setsid", "/bin/setsid"]) {
    try {
      if (Deno.statSync(p).isFile) return (setsidPath = p);
    } catch {
      // not here
    }
  }
  return setsidPath;
}

/** Keeps the first `head` and last `tail` bytes of a stream of text. */
class BoundedText {
  #head = "";
  #tail = "";
  #dropped = 0;
  constructor(readonly head: number, readonly tail: number) {}
  push(s: string): void {
    if (this.#head.length < this.head) {
      const take = this.head - this.#head.length;
      this.#head += s.slice(0, take);
      s = s.slice(take);
    }
    this.#tail += s;
    if (this.#tail.length > this.tail) {
      this.#dropped += this.#tail.length - this.tail;
      this.#tail = this.#tail.slice(-this.tail);
    }
  }
  text(): string {
    return this.#dropped
      ? `${this.#head}\n[... ${this.#dropped} chars cut ...]\n${this.#tail}`
      : this.#head + this.#tail;
  }
}

async function pump(stream: ReadableStream<Uint8Array>, sink: BoundedText): Promise<void> {
  const dec = new TextDecoder();
  for await (const chunk of stream) sink.push(dec.decode(chunk, { stream: true }));
}

function killGroup(pid: number, grouped: boolean): void {
  try {
    Deno.kill(grouped ? -pid : pid, "SIGKILL");
  } catch {
    // already gone
  }
}

export async function runBounded(
  cmd: string,
  args: string[],
  o: BoundedOptions,
): Promise<BoundedResult> {
  const setsid = findSetsid();
  const child = new Deno.Command(setsid ?? cmd, {
    args: setsid ? [cmd, ...args] : args,
    env: o.env,
    cwd: o.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const started = performance.now();
  const out = new BoundedText(o.headBytes ?? 16 << 10, o.tailBytes ?? 96 << 10);
  const pumps = Promise.all([pump(child.stdout, out), pump(child.stderr, out)]).catch(() => {});
  let timedOut = false;
  let stacks: string | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const overrun = new Promise<void>((resolve) => {
    timer = setTimeout(async () => {
      timedOut = true;
      if (o.captureOnTimeout ?? true) {
        try {
          stacks = await captureStacks(child.pid);
        } catch (e) {
          stacks = `stack capture failed: ${(e as Error).message}`;
        }
      }
      killGroup(child.pid, setsid !== null);
      resolve();
    }, Math.max(1, o.timeoutMs));
  });
  // A process stuck in the kernel (a GPU driver call, say) dies only when that call returns:
  // after the kill, wait for it a while, then go on without it.
  let grace: ReturnType<typeof setTimeout> | undefined;
  const unkillable = { code: null, signal: "SIGKILL (still alive 20 s later)" };
  const status: { code: number | null; signal: string | null } = await Promise.race([
    child.status,
    overrun.then(() =>
      Promise.race([
        child.status,
        new Promise<typeof unkillable>((r) => (grace = setTimeout(() => r(unkillable), 20_000))),
      ])
    ),
  ]);
  clearTimeout(grace);
  clearTimeout(timer);
  // The child may have ended while its stacks were being captured: let the capture finish.
  if (timedOut) await overrun;
  // Whatever the child left in its group goes with it (servers a test started, say).
  if (setsid !== null) killGroup(child.pid, true);
  // A grandchild outside the group could hold the pipes open: do not wait on it for long.
  let drained: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([pumps, new Promise((r) => (drained = setTimeout(r, 5000)))]);
  clearTimeout(drained);
  return {
    code: status.code,
    signal: status.signal,
    timedOut,
    seconds: (performance.now() - started) / 1000,
    pid: child.pid,
    output: out.text(),
    stacks,
  };
}
