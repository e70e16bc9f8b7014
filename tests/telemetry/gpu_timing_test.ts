/**
 * GpuTimer driven the way DispatchBatch calls the hook (begin, passWrites per pass, beforeFinish,
 * submit, submitted): per-family totals of real fill batches (whose output is checked), wall-time
 * accounting that never counts queue waiting twice, and the timestamp-query path where the
 * adapter has the feature (not on llvmpipe).
 */
import assert from "node:assert/strict";
import { GpuTimer } from "../../src/telemetry/gpu_timing.ts";
import { findAdapter } from "../../src/gpu/provider.ts";
import { shaderSource } from "../../src/gpu/shader_source.ts";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";

const STORAGE = 0x80, COPY_SRC = 0x04, COPY_DST = 0x08, UNIFORM = 0x40, MAP_READ = 0x01;

/** Fills `count` u32 with `value` in `passes` compute passes, through the timing hook. */
async function timedFill(
  device: GPUDevice,
  timer: GpuTimer,
  label: string,
  count: number,
  value: number,
  passes: number,
): Promise<Uint32Array> {
  const module = device.createShaderModule({ code: shaderSource("fill.wgsl", {}) });
  const pipeline = await device.createComputePipelineAsync({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const data = device.createBuffer({ size: count * 4, usage: STORAGE | COPY_SRC | COPY_DST });
  const params = device.createBuffer({ size: 16, usage: UNIFORM | COPY_DST });
  const groups = Math.ceil(count / 256);
  device.queue.writeBuffer(params, 0, new Uint32Array([count, value, groups, 0]));
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: data } }, {
      binding: 1,
      resource: { buffer: params },
    }],
  });

  const t = timer.begin(label);
  const encoder = device.createCommandEncoder({ label });
  for (let p = 0; p < passes; p++) {
    const writes = t?.passWrites();
    const pass = encoder.beginComputePass(writes ? { timestampWrites: writes } : {});
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(groups);
    pass.end();
  }
  t?.beforeFinish(encoder);
  const staging = device.createBuffer({ size: count * 4, usage: MAP_READ | COPY_DST });
  encoder.copyBufferToBuffer(data, 0, staging, 0, count * 4);
  device.queue.submit([encoder.finish()]);
  t?.submitted();
  await staging.mapAsync(MAP_READ);
  const out = new Uint32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  for (const b of [data, params, staging]) b.destroy();
  return out;
}

function assertFilled(out: Uint32Array, value: number): void {
  const wrong = out.findIndex((x) => x !== value);
  assert.equal(wrong, -1, `element ${wrong} is ${out[wrong]}, not ${value}`);
}

gpuTest("gpu timing: per-family totals of real batches; take() resets", async (ctx) => {
  const samples: Array<[string, number, string]> = [];
  const timer = new GpuTimer(ctx.device, { onSample: (f, s, m) => samples.push([f, s, m]) });
  try {
    assert.equal(timer.method, ctx.device.features.has("timestamp-query") ? "timestamp" : "wall");
    assertFilled(await timedFill(ctx.device, timer, "fill-a", 1003, 0x3f800000, 1), 0x3f800000);
    assertFilled(await timedFill(ctx.device, timer, "fill-b", 517, 7, 2), 7);
    assertFilled(await timedFill(ctx.device, timer, "fill-a", 263, 9, 3), 9);
    await timer.settle();
    const totals = new Map(timer.take().map((k) => [k.family, k]));
    assert.deepEqual([...totals.keys()].sort(), ["fill-a", "fill-b"]);
    assert.equal(totals.get("fill-a")!.batches, 2);
    assert.equal(totals.get("fill-b")!.batches, 1);
    for (const k of totals.values()) {
      assert.ok(Number.isFinite(k.seconds) && k.seconds >= 0, `${k.family}: ${k.seconds}`);
      assert.equal(k.method, timer.method);
    }
    // Each sample went to onSample too, and the totals are their sums.
    assert.deepEqual(samples.map(([f]) => f), ["fill-a", "fill-b", "fill-a"]);
    const sumA = samples.filter(([f]) => f === "fill-a").reduce((s, [, x]) => s + x, 0);
    assert.equal(totals.get("fill-a")!.seconds, sumA);
    assert.deepEqual(timer.take(), []);
  } finally {
    await timer.destroy();
  }
  assert.equal(timer.begin("late"), undefined);
});

Deno.test("gpu timing: wall time counts a batch from when the queue reached it", async () => {
  // A queue whose work we finish by hand: A and B submitted together, A done, then B.
  const pending: Array<() => void> = [];
  const device = {
    features: new Set<string>(),
    queue: { onSubmittedWorkDone: () => new Promise<void>((r) => pending.push(r)) },
  } as unknown as GPUDevice;
  const timer = new GpuTimer(device);
  assert.equal(timer.method, "wall");
  const start = performance.now();
  timer.begin("A")!.submitted();
  timer.begin("B")!.submitted();
  await new Promise((r) => setTimeout(r, 20));
  pending[0]();
  await new Promise((r) => setTimeout(r, 20));
  pending[1]();
  await timer.settle();
  const elapsed = (performance.now() - start) / 1000;
  const t = new Map(timer.take().map((k) => [k.family, k.seconds]));
  // Submit-to-done would count A's 20 ms inside B too (sum near 3x20 ms, past the elapsed time);
  // the queue is in order, so the two batches' times add up to at most the elapsed time.
  assert.ok(t.get("A")! + t.get("B")! <= elapsed, `${t.get("A")} + ${t.get("B")} > ${elapsed}`);
  assert.ok(t.get("A")! > 0 && t.get("B")! > 0);
  await timer.destroy();
});

const found = await findAdapter().catch(() => undefined);
const hasTimestamps = found?.adapter.features.has("timestamp-query") ?? false;

Deno.test({
  name: "gpu timing: timestamp-query path (adapters with the feature)",
  ignore: !hasTimestamps,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const device = await found!.adapter.requestDevice({ requiredFeatures: ["timestamp-query"] });
    const timer = new GpuTimer(device);
    try {
      assert.equal(timer.method, "timestamp");
      assertFilled(await timedFill(device, timer, "fill", 100_003, 5, 3), 5);
      assertFilled(await timedFill(device, timer, "fill", 4099, 6, 1), 6);
      await timer.settle();
      const [k] = timer.take();
      assert.equal(k.family, "fill");
      assert.equal(k.batches, 2);
      assert.equal(k.method, "timestamp");
      assert.ok(Number.isFinite(k.seconds) && k.seconds >= 0);
    } finally {
      await timer.destroy();
      device.destroy();
    }
  },
});

closeGpuAfterTests();
