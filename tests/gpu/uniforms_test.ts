/**
 * Uniform buffers shared by content (src/gpu/uniforms.ts): the same 32-bit words find the same
 * buffer whatever the array type, NaN payloads are kept exactly, a buffer in use survives
 * generations while unused ones are destroyed (with the bind-group hook called first), and the
 * bytes a kernel reads are the ones asked for.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { UniformCache } from "../../src/gpu/uniforms.ts";
import type { GpuContext } from "../../src/gpu/context.ts";

/** Runs fill.wgsl (params: count, value bits, groups_x, pad) with `params` as its uniform. */
async function fillWith(ctx: GpuContext, params: Uint32Array | Float32Array, count: number) {
  const buf = ctx.createBuffer({ label: "t", category: "scratch", size: (count + 2) * 4 });
  ctx.write(buf, new Uint32Array(count + 2).fill(0xdeadbeef));
  const batch = ctx.batch("fill");
  batch.dispatch(await ctx.pipeline("fill.wgsl"), [buf, ctx.uniform(params)], [1]);
  batch.submit();
  const out = await ctx.readU32(buf);
  buf.destroy();
  return out;
}

gpuTest(
  "the same words find the same buffer whatever the array type; others do not",
  async (ctx) => {
    const a = ctx.uniform(new Uint32Array([7, 0x3f800000, 1, 0]));
    assert.equal(ctx.uniform(new Uint32Array([7, 0x3f800000, 1, 0])), a);
    assert.equal(ctx.uniform(new Float32Array(new Uint32Array([7, 0x3f800000, 1, 0]).buffer)), a);
    assert.equal(ctx.uniform(new Int32Array([7, 0x3f800000, 1, 0])), a);
    assert.notEqual(ctx.uniform(new Uint32Array([7, 0x3f800000, 1, 1])), a);
    assert.notEqual(ctx.uniform(new Uint32Array([7, 0x3f800000, 1])), a); // 3 words, not 4
    // Negative zero is not zero.
    assert.notEqual(
      ctx.uniform(new Float32Array([-0, 1, 2, 3])),
      ctx.uniform(new Float32Array([0, 1, 2, 3])),
    );
    // A subarray is read at its offset.
    const big = new Uint32Array([99, 7, 0x3f800000, 1, 0]);
    assert.equal(ctx.uniform(big.subarray(1)), a);
    await Promise.resolve();
  },
);

gpuTest("a kernel reads exactly the uniform's bits, NaN payloads included", async (ctx) => {
  const count = 13;
  for (const bits of [0x40490fdb, 0x7fc00123, 0x7fc00456, 0xff800001]) {
    // A Float32Array whose element 1 holds `bits` (NaNs with payloads among them).
    const params = new Float32Array(new Uint32Array([count, bits, 1, 0]).buffer);
    const out = await fillWith(ctx, params, count);
    assert.deepEqual(
      Array.from(out.subarray(0, count)),
      Array(count).fill(bits),
      bits.toString(16),
    );
    assert.deepEqual(Array.from(out.subarray(count)), [0xdeadbeef, 0xdeadbeef]);
  }
});

gpuTest(
  "a buffer in use survives generations; unused ones are destroyed, hook first",
  async (ctx) => {
    const dropped: GPUBuffer[] = [];
    const cache = new UniformCache(ctx.device, (b) => dropped.push(b), 3);
    const kept = cache.get(new Uint32Array([1, 2, 3, 4]));
    const made: GPUBuffer[] = [];
    for (let i = 0; i < 10; i++) {
      made.push(cache.get(new Uint32Array([100 + i, 0, 0, 0])));
      assert.equal(cache.get(new Uint32Array([1, 2, 3, 4])), kept); // used every time: kept
    }
    assert.ok(cache.size <= 2 * 3, `size ${cache.size}`);
    assert.ok(!dropped.includes(kept));
    // The oldest unused contents went, and asking for them again makes a new buffer.
    assert.ok(dropped.includes(made[0]));
    assert.notEqual(cache.get(new Uint32Array([100, 0, 0, 0])), made[0]);
    // The newest are still there.
    assert.equal(cache.get(new Uint32Array([109, 0, 0, 0])), made[9]);
    cache.destroyAll();
    assert.ok(dropped.includes(kept));
    assert.equal(cache.size, 0);
    await Promise.resolve();
  },
);

closeGpuAfterTests();
