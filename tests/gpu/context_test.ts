import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { encodeFill, fill } from "../../src/kernels/fill.ts";
import { f32Bits } from "../../src/io/dtype.ts";
import { GpuContext, grid } from "../../src/gpu/context.ts";
import { GpuTimeoutError, GpuValidationError } from "../../src/gpu/errors.ts";

gpuTest(
  "fill writes the first n elements of an odd-sized buffer and nothing past them",
  async (ctx) => {
    const n = 1037;
    const buf = ctx.createBuffer({ label: "t", category: "scratch", size: (n + 3) * 4 });
    ctx.write(buf, new Float32Array(n + 3).fill(-7));
    const batch = ctx.batch();
    await encodeFill(ctx, batch, buf, f32Bits(2.5), n);
    batch.submit();
    const out = await ctx.readF32(buf);
    assert.equal(out.length, n + 3);
    assert.ok(out.subarray(0, n).every((v) => v === 2.5));
    assert.deepEqual(Array.from(out.subarray(n)), [-7, -7, -7]);
    await fill(ctx, buf, 0.25);
    assert.ok((await ctx.readF32(buf)).every((v) => v === 0.25));
    buf.destroy();
  },
);

gpuTest("memory ledger counts bytes by category and returns them on destroy", async (ctx) => {
  const before = ctx.memory.current();
  const a = ctx.createBuffer({ label: "a", category: "lora", size: 100 });
  const b = ctx.createBuffer({ label: "b", category: "optimizer", size: 4000 });
  const now = ctx.memory.current();
  assert.equal(now.lora - before.lora, 112); // padded to 16 bytes
  assert.equal(now.optimizer - before.optimizer, 4000);
  a.destroy();
  b.destroy();
  assert.deepEqual(ctx.memory.current(), before);
  await Promise.resolve();
});

gpuTest("a WGSL compile error becomes a GpuValidationError naming the shader", async (ctx) => {
  const code = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
  await assert.rejects(ctx.pipelineFromCode("broken.wgsl", code), (e) => {
    assert.ok(e instanceof GpuValidationError);
    assert.match((e as Error).message, /broken\.wgsl:1:\d+ .*abstract-float/);
    return true;
  });
});

gpuTest(
  "an invalid dispatch surfaces as a GpuValidationError at the next readback",
  async (ctx) => {
    const pipeline = await ctx.pipeline("fill.wgsl");
    const buf = ctx.createBuffer({ label: "t", category: "scratch", size: 64 });
    const batch = ctx.batch("bad");
    // Binding 1 must be a uniform buffer; a storage buffer there fails validation.
    batch.dispatch(pipeline, [buf, buf], [1]);
    batch.submit();
    await assert.rejects(ctx.readF32(buf), GpuValidationError);
    // The error is reported once; the device keeps working.
    await fill(ctx, buf, 1.5);
    assert.ok((await ctx.readF32(buf)).every((v) => v === 1.5));
    buf.destroy();
  },
);

gpuTest(
  "uniform buffers are shared by content and stay valid across cache generations",
  async (ctx) => {
    const a = ctx.uniform(new Uint32Array([1, 2, 3, 4]));
    assert.equal(ctx.uniform(new Uint32Array([1, 2, 3, 4])), a);
    // Push well past one generation (4096) while `a` stays in use: it must survive.
    const buf = ctx.createBuffer({ label: "t", category: "scratch", size: 32 });
    for (let i = 0; i < 9000; i++) {
      ctx.uniform(new Uint32Array([i, 7, 7, 7]));
      if (i % 1000 === 0) assert.equal(ctx.uniform(new Uint32Array([1, 2, 3, 4])), a);
    }
    // A fill through a freshly made uniform after the rotations still works.
    await fill(ctx, buf, 3);
    assert.ok((await ctx.readF32(buf)).every((v) => v === 3));
    buf.destroy();
  },
);

gpuTest(
  "a GPU wait that never ends fails with a GpuTimeoutError naming what it waited for",
  async () => {
    // The timeout is read once, when a context opens: a context of its own with 50 ms.
    const env = { get: (n: string) => n === "QLORAD_GPU_TIMEOUT_S" ? "0.05" : Deno.env.get(n) };
    const ctx = await GpuContext.open({ log: () => {}, env });
    try {
      assert.equal(ctx.settings.timeoutS, 0.05);
      await assert.rejects(ctx.wait(new Promise(() => {}), "readback of x"), (e) => {
        assert.ok(e instanceof GpuTimeoutError);
        assert.match((e as Error).message, /no answer from the GPU for readback of x/);
        return true;
      });
      assert.equal(await ctx.wait(Promise.resolve(7), "y"), 7);
    } finally {
      ctx.destroy();
    }
  },
);

Deno.test("grid splits large workgroup counts into two dimensions", () => {
  assert.deepEqual(grid(10), [10, 1]);
  const [x, y] = grid(200000);
  assert.ok(x <= 65535 && x * y >= 200000 && x * (y - 1) < 200000);
});

closeGpuAfterTests();
