/**
 * One GPU context per test file, opened on first use and destroyed when the file's
 * tests end (a live Dawn device keeps the process from exiting).
 */
import { GpuContext } from "../../src/gpu/context.ts";
import { encodeFill, F32_NAN_BITS } from "../../src/kernels/fill.ts";
import type { GpuBuffer } from "../../src/gpu/context.ts";

// Kernel variants come from each kernel's prior unless the caller chose otherwise, so no test
// result depends on a timing race (tests/kernels/ladder_test.ts tests the timing itself).
if (Deno.env.get("QLORAD_LADDER") === undefined) Deno.env.set("QLORAD_LADDER", "prior");

let shared: Promise<GpuContext> | undefined;

export function gpu(): Promise<GpuContext> {
  shared ??= GpuContext.open({ log: () => {} });
  return shared;
}

/** Deno.test for GPU work: the device outlives single tests, so resource sanitizers are off. */
export function gpuTest(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => fn(await gpu()),
  });
}

/** Call once at the end of a test file's registrations. */
export function closeGpuAfterTests(): void {
  Deno.test({
    name: "(close GPU)",
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      if (shared) (await shared).destroy();
      shared = undefined;
    },
  });
}

/** A buffer of `count` f32 filled with NaN, so unwritten outputs cannot pass. */
export async function poisonedF32(
  ctx: GpuContext,
  label: string,
  count: number,
): Promise<GpuBuffer> {
  const buf = ctx.createBuffer({ label, category: "scratch", size: count * 4 });
  const batch = ctx.batch("poison");
  await encodeFill(ctx, batch, buf, F32_NAN_BITS, count);
  batch.submit();
  return buf;
}

/** max |a-b| / max(|b|, floor) over all elements; NaN anywhere gives Infinity. */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-6): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let scale = floor;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!Number.isFinite(a[i]) || !Number.isFinite(d)) return Infinity;
    worst = Math.max(worst, d / scale);
  }
  return worst;
}
