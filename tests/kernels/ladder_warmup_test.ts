/**
 * The ladder's timing never includes a first compile (issue #9): pipeline compilation at a
 * variant's first use (seconds on lavapipe) would land in that variant's timing, make it look
 * hopeless, and size the timed submits wrongly. A fake kernel whose variants each compile a real
 * pipeline at first use, made slow on purpose, records events; the device submits are wrapped to
 * record when each warm-up and each timed submit starts and ends. Only the order of events is
 * asserted, never a duration.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import type { LadderKernel } from "../../src/kernels/ladder_registry.ts";
import { deviceSubmits, ProbeBuffers, timeVariants } from "../../src/kernels/ladder_probe.ts";
import type { DispatchBatch, GpuContext } from "../../src/gpu/context.ts";

const VARIANTS = ["a", "b", "c"];

/** A one-line shader per variant (its own constant), so each variant compiles its own pipeline. */
function shader(v: string): string {
  const k = VARIANTS.indexOf(v) + 2;
  return `@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < arrayLength(&x)) { x[id.x] = x[id.x] * 0.5 + ${k}.0; }
}`;
}

function fakeKernel(events: string[]): LadderKernel {
  return {
    name: "warmup_fake",
    variants: VARIANTS,
    prior: () => "a",
    shaders: [],
    probe(ctx: GpuContext) {
      const buffers = new ProbeBuffers(ctx);
      const x = buffers.random("x", 301, 7);
      const pipelines = new Map<string, Promise<GPUComputePipeline>>();
      return Promise.resolve({
        async run(batch: DispatchBatch, v: string) {
          let p = pipelines.get(v);
          if (!p) {
            events.push(`compile ${v}`);
            p = (async () => {
              // A slow first compile: if it were timed, it would dominate the variant's time.
              await new Promise((r) => setTimeout(r, 25));
              return await ctx.pipelineFromCode(`warmup_fake ${v}`, shader(v));
            })();
            pipelines.set(v, p);
          }
          batch.dispatch(await p, [x], [Math.ceil(301 / 64)]);
        },
        destroy: () => buffers.destroy(),
      });
    },
  };
}

gpuTest("each variant compiles in an untimed warm-up, before any timed submit", async (ctx) => {
  const events: string[] = [];
  const device = deviceSubmits(ctx);
  const variantOf = (label: string) => label.split(" ").at(-1)!;
  const run = await timeVariants(ctx, fakeKernel(events), VARIANTS, () => {}, {
    async warm(label, encode) {
      events.push(`warm-start ${variantOf(label)}`);
      await device.warm(label, encode);
      events.push(`warm-end ${variantOf(label)}`);
    },
    async time(label, encode, reps) {
      events.push(`time-start ${variantOf(label)}`);
      const ms = await device.time(label, encode, reps);
      events.push(`time-end ${variantOf(label)}`);
      return ms;
    },
  });
  for (const v of VARIANTS) {
    assert.equal(typeof run.ms[v], "number", `${v}: ${JSON.stringify(run)}`);
    // One compile per variant, inside its own warm-up.
    const compiles = events.flatMap((e, i) => (e === `compile ${v}` ? [i] : []));
    assert.equal(compiles.length, 1, events.join(", "));
    const warmStart = events.indexOf(`warm-start ${v}`);
    const warmEnd = events.indexOf(`warm-end ${v}`);
    assert.ok(warmStart < compiles[0] && compiles[0] < warmEnd, events.join(", "));
    // Timed: the sizing submit and the rounds, all after the warm-up.
    const timed = events.flatMap((e, i) => (e === `time-start ${v}` ? [i] : []));
    assert.ok(timed.length >= 2, events.join(", "));
    assert.ok(timed[0] > warmEnd, events.join(", "));
  }
  // No compile of any variant while any timed submit is open.
  let open: string | undefined;
  for (const e of events) {
    if (e.startsWith("time-start")) open = e;
    else if (e.startsWith("time-end")) open = undefined;
    else if (e.startsWith("compile")) assert.equal(open, undefined, `${e} during ${open}`);
  }
});

gpuTest("a variant that fails in its warm-up is never timed", async (ctx) => {
  const events: string[] = [];
  const k = fakeKernel(events);
  const device = deviceSubmits(ctx);
  const run = await timeVariants(ctx, k, VARIANTS, () => {}, {
    warm: async (label, encode) => {
      if (label.endsWith(" b")) throw new Error("b does not compile here");
      await device.warm(label, encode);
    },
    time: async (label, encode, reps) => {
      events.push(`time ${label}`);
      return await device.time(label, encode, reps);
    },
  });
  assert.equal(run.ms.b, null);
  assert.equal(run.failures?.b, "b does not compile here");
  assert.ok(!events.some((e) => e.endsWith(" b")), events.join(", "));
  assert.equal(typeof run.ms.a, "number");
  assert.equal(typeof run.ms.c, "number");
});

closeGpuAfterTests();
