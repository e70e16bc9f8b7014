/**
 * Paces Dawn's polling for GPU completions, which otherwise stalls Deno for minutes.
 *
 * Dawn's Node bindings (npm `webgpu`, AsyncRunner::ScheduleProcessEvents) poll for finished GPU
 * work by posting a fresh native callback with the global `setImmediate` for as long as any GPU
 * promise is pending: 100,000-300,000 times a second. Each callback is a new function that
 * Deno's Node-API layer registers for finalization, and Deno 2.9 removes each collected entry
 * from that list with a linear search and a `Vec::remove`, so collecting k of them costs O(k²).
 * After a few seconds of waiting (a slow shader compile, a long kernel) one garbage collection
 * blocks the JavaScript thread for minutes, and no timer (not even the GPU-wait watchdog) can
 * fire: the test stall seen on the H200 and on lavapipe (docs/PERFORMANCE.md).
 *
 * The pacing: the first FAST_MS of each polling chain go through `setImmediate` as before, so a
 * short wait is as quick as ever; after that the chain polls once per SLOW_DELAY_MS through
 * `setTimeout`, a few hundred callbacks a second instead of 10^5, which also leaves the CPU to
 * software adapters (lavapipe, llvmpipe) instead of spinning. Only native callbacks (Dawn's) are
 * paced; JavaScript callers of `setImmediate` are passed through untouched.
 * `QLORAD_DAWN_POLL=unpaced` leaves Dawn's polling as it was (to show the stall on a GPU); it is
 * read once, at the install.
 */
import { type DawnPoll, dawnPollSetting } from "../util/settings.ts";

/** How long a polling chain runs at full speed before it is paced. */
export const FAST_MS = 4;
/** The pace after that: one poll per this many milliseconds. */
export const SLOW_DELAY_MS = 1;

export interface TickCounts {
  /** Native callbacks passed to setImmediate at full speed. */
  fast: number;
  /** Native callbacks deferred with setTimeout. */
  slow: number;
}

type Immediate = (cb: (...args: unknown[]) => void, ...args: unknown[]) => unknown;
type Timeout = (cb: () => void, ms: number) => unknown;

const functionToString = Function.prototype.toString;

/** Functions made by native code (Node-API callbacks, bound and built-in functions). */
export function isNativeFunction(f: unknown): boolean {
  return typeof f === "function" && functionToString.call(f).endsWith("{ [native code] }");
}

/**
 * A setImmediate that paces chains of native callbacks: a native callback posted while another
 * one posted through here is running continues that chain; any other starts a new one.
 */
export function pacedSetImmediate(
  original: Immediate,
  setTimeoutFn: Timeout,
  now: () => number,
  counts: TickCounts = { fast: 0, slow: 0 },
): Immediate {
  let inNativeCallback = false;
  let chainStart = 0;
  return function setImmediate(cb: (...args: unknown[]) => void, ...args: unknown[]) {
    if (!isNativeFunction(cb)) return original(cb, ...args);
    const t = now();
    if (!inNativeCallback) chainStart = t;
    const run = function (this: unknown) {
      inNativeCallback = true;
      try {
        cb.apply(this, args);
      } finally {
        inNativeCallback = false;
      }
    };
    if (t - chainStart < FAST_MS) {
      counts.fast++;
      return original(run);
    }
    counts.slow++;
    return setTimeoutFn(run, SLOW_DELAY_MS);
  };
}

/** Counts since `installDawnTickPacing` (tests check that Dawn's polling goes through it). */
export const dawnTicks: TickCounts = { fast: 0, slow: 0 };
let installed = false;

/**
 * Replaces the global setImmediate (which Dawn looks up on every poll) with the paced one;
 * `mode` defaults to QLORAD_DAWN_POLL.
 */
export function installDawnTickPacing(mode: DawnPoll = dawnPollSetting()): void {
  if (installed) return;
  if (mode === "unpaced") return;
  const g = globalThis as unknown as { setImmediate?: Immediate };
  const original = g.setImmediate;
  if (typeof original !== "function") return;
  g.setImmediate = pacedSetImmediate(
    original.bind(globalThis),
    (cb, ms) => setTimeout(cb, ms),
    () => performance.now(),
    dawnTicks,
  );
  installed = true;
}
