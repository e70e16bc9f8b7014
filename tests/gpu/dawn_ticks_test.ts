/**
 * The pacing of Dawn's completion polling (src/gpu/dawn_ticks.ts): a chain of native callbacks
 * posted with setImmediate runs at full speed for FAST_MS, then once per SLOW_DELAY_MS through
 * setTimeout; JavaScript callbacks are never touched; a new chain starts fast again. Driven with
 * a fake clock and fake schedulers (no timing); then on the device, Dawn's own polling is seen to
 * go through it while a readback completes.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import {
  dawnTicks,
  FAST_MS,
  isNativeFunction,
  pacedSetImmediate,
  SLOW_DELAY_MS,
} from "../../src/gpu/dawn_ticks.ts";
import { fill } from "../../src/kernels/fill.ts";

Deno.test("native functions are told apart from JavaScript ones", () => {
  assert.equal(isNativeFunction(() => {}), false);
  assert.equal(isNativeFunction(function named() {}), false);
  assert.equal(isNativeFunction(Math.max), true);
  assert.equal(isNativeFunction((() => {}).bind(null)), true);
  assert.equal(isNativeFunction("setImmediate"), false);
});

Deno.test("a native polling chain runs fast for FAST_MS, then paced; JS callbacks pass through", () => {
  let clock = 0;
  const immediates: Array<() => void> = [];
  const timeouts: Array<{ run: () => void; ms: number }> = [];
  const counts = { fast: 0, slow: 0 };
  const paced = pacedSetImmediate(
    (cb, ...args) => immediates.push(() => cb(...args)),
    (run, ms) => timeouts.push({ run, ms }),
    () => clock,
    counts,
  );
  // Dawn's poll: a native function that posts the next poll while it runs (bound = native).
  let polls = 0;
  const poll = function () {
    polls++;
    if (polls < 10) paced(poll);
  }.bind(null);

  paced(poll); // starts a chain at t = 0
  const delays: number[] = [];
  for (let t = 0; polls < 10; t++) {
    clock = t; // 1 ms passes per poll
    const timer = immediates.length === 0 ? timeouts.shift() : undefined;
    if (timer) delays.push(timer.ms);
    (timer?.run ?? immediates.shift()!)();
  }
  // Polls posted before FAST_MS had passed went through setImmediate, the rest through setTimeout.
  assert.equal(counts.fast, 1 + FAST_MS);
  assert.equal(counts.slow, 10 - 1 - FAST_MS);
  assert.deepEqual(delays, Array(10 - 1 - FAST_MS).fill(SLOW_DELAY_MS));

  // A JavaScript callback is never paced, even deep into a chain.
  const before = immediates.length;
  let ran = 0;
  paced(() => ran++);
  assert.equal(immediates.length, before + 1);
  immediates.pop()!();
  assert.equal(ran, 1);

  // A native callback posted from outside any polling callback starts a new, fast chain.
  clock = 1000;
  const fastBefore = counts.fast;
  paced((() => {}).bind(null));
  assert.equal(counts.fast, fastBefore + 1);
});

gpuTest(
  "Dawn's completion polling goes through the pacing, and readbacks complete",
  async (ctx) => {
    const before = dawnTicks.fast + dawnTicks.slow;
    const buf = ctx.createBuffer({ label: "t", category: "scratch", size: 4 * 4099 });
    await fill(ctx, buf, 6.25);
    const out = await ctx.readF32(buf);
    assert.ok(out.every((v) => v === 6.25));
    assert.ok(dawnTicks.fast + dawnTicks.slow > before, JSON.stringify(dawnTicks));
    buf.destroy();
  },
);

closeGpuAfterTests();
