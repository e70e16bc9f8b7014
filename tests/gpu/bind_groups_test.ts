/**
 * Bind groups reused across steps (src/gpu/bind_groups.ts through DispatchBatch): the same
 * pipeline and bindings find the same group, a different slice gets its own, a destroyed
 * buffer's groups are dropped, the cache stays within its bound, results stay right while groups
 * are reused, and the counters behind "dispatches and host ms per step" add up.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { BindGroupCache, type BindingKey, WHOLE_BUFFER } from "../../src/gpu/bind_groups.ts";
import { type GpuBuffer, type GpuContext, statsDelta } from "../../src/gpu/context.ts";
import { encodeFill } from "../../src/kernels/fill.ts";
import { f32Bits } from "../../src/io/dtype.ts";

/** Records one fill of `count` words at byte `offset` of `buf` (offset a multiple of 256). */
async function fillSlice(
  ctx: GpuContext,
  buf: GpuBuffer,
  offset: number,
  count: number,
  value: number,
): Promise<void> {
  const pipeline = await ctx.pipeline("fill.wgsl");
  const batch = ctx.batch("slice");
  batch.dispatch(pipeline, [
    { buffer: buf, offset, size: count * 4 },
    ctx.uniform(new Uint32Array([count, f32Bits(value), 1, 0])),
  ], [1]);
  batch.submit();
}

gpuTest(
  "the same pipeline and bindings find the same bind group; a new slice makes one",
  async (ctx) => {
    const buf = ctx.createBuffer({ label: "t", category: "scratch", size: 1024 });
    const pipeline = await ctx.pipeline("fill.wgsl");
    const uniform = ctx.uniform(new Uint32Array([5, 1, 1, 0]));
    const key = (b: GPUBuffer, offset: number, size: number) => (i: number, out: BindingKey) => {
      out.buffer = i === 0 ? b : uniform;
      out.offset = i === 0 ? offset : 0;
      out.size = i === 0 ? size : WHOLE_BUFFER;
    };
    const cache = ctx.bindGroups;
    const a = cache.get(pipeline, 2, key(buf.buffer, 0, WHOLE_BUFFER));
    assert.equal(cache.get(pipeline, 2, key(buf.buffer, 0, WHOLE_BUFFER)), a);
    const slice = cache.get(pipeline, 2, key(buf.buffer, 256, 64));
    assert.notEqual(slice, a);
    assert.equal(cache.get(pipeline, 2, key(buf.buffer, 256, 64)), slice);
    assert.notEqual(cache.get(pipeline, 2, key(buf.buffer, 256, 128)), slice);
    assert.notEqual(cache.get(pipeline, 2, key(buf.buffer, 512, 64)), slice);
    assert.equal(cache.groupsBinding(buf.buffer), 4);
    buf.destroy();
  },
);

gpuTest("a destroyed buffer's bind groups are dropped; other buffers' stay", async (ctx) => {
  const keep = ctx.createBuffer({ label: "keep", category: "scratch", size: 512 });
  const gone = ctx.createBuffer({ label: "gone", category: "scratch", size: 512 });
  await fillSlice(ctx, keep, 0, 7, 1);
  await fillSlice(ctx, gone, 0, 7, 2);
  await fillSlice(ctx, gone, 256, 9, 3);
  const before = ctx.bindGroups.size;
  assert.equal(ctx.bindGroups.groupsBinding(gone.buffer), 2);
  gone.destroy();
  assert.equal(ctx.bindGroups.groupsBinding(gone.buffer), 0);
  assert.equal(ctx.bindGroups.size, before - 2);
  assert.equal(ctx.bindGroups.groupsBinding(keep.buffer), 1);
  assert.deepEqual(Array.from(await ctx.readF32(keep, 0, 8)).slice(0, 7), Array(7).fill(1));
  keep.destroy();
});

gpuTest("reused bind groups write the right slices across many batches", async (ctx) => {
  const n = 3 * 64 + 5; // words: three 256-byte slices and a tail
  const buf = ctx.createBuffer({ label: "t", category: "scratch", size: n * 4 });
  ctx.write(buf, new Float32Array(n).fill(-7));
  const created = ctx.stats.bindGroupsCreated;
  // Each step's values differ (a new uniform each), so every (slice, uniform) pair is new: 12.
  for (let step = 0; step < 4; step++) {
    for (let s = 0; s < 3; s++) await fillSlice(ctx, buf, s * 256, 61 - s, step * 10 + s);
  }
  const afterFirst = ctx.stats.bindGroupsCreated;
  assert.equal(afterFirst - created, 12);
  // The last step again: every group is found.
  const hitsBefore = ctx.stats.bindGroupHits;
  for (let s = 0; s < 3; s++) await fillSlice(ctx, buf, s * 256, 61 - s, 30 + s);
  assert.equal(ctx.stats.bindGroupsCreated, afterFirst);
  assert.equal(ctx.stats.bindGroupHits - hitsBefore, 3);
  const out = await ctx.readF32(buf);
  for (let w = 0; w < n; w++) {
    // Slice s holds 30 + s in its first 61 - s words; nothing else was written.
    const s = Math.floor(w / 64);
    const want = s < 3 && w % 64 < 61 - s ? 30 + s : -7;
    assert.equal(out[w], want, `word ${w}`);
  }
  buf.destroy();
});

gpuTest("the cache stays within its bound, evicting the oldest groups first", async (ctx) => {
  const pipeline = await ctx.pipeline("fill.wgsl");
  const cache = new BindGroupCache(ctx.device, 8);
  const bufs = Array.from(
    { length: 12 },
    (_, i) => ctx.createBuffer({ label: `b${i}`, category: "scratch", size: 64 }),
  );
  const uniform = ctx.uniform(new Uint32Array([3, 0, 1, 0]));
  const key = (b: GpuBuffer) => (i: number, out: BindingKey) => {
    out.buffer = i === 0 ? b.buffer : uniform;
    out.offset = 0;
    out.size = WHOLE_BUFFER;
  };
  const groups = bufs.map((b) => cache.get(pipeline, 2, key(b)));
  assert.ok(cache.size <= 8, `size ${cache.size}`);
  assert.equal(cache.groupsBinding(bufs[0].buffer), 0); // the oldest went first
  assert.equal(cache.groupsBinding(bufs[11].buffer), 1);
  assert.equal(cache.get(pipeline, 2, key(bufs[11])), groups[11]);
  assert.equal(cache.misses, 12);
  assert.equal(cache.hits, 1);
  for (const b of bufs) b.destroy();
});

gpuTest("stats count batches, dispatches, copies and submits, and host time", async (ctx) => {
  const a = ctx.createBuffer({ label: "a", category: "scratch", size: 4 * 301 });
  const b = ctx.createBuffer({ label: "b", category: "scratch", size: 4 * 301 });
  const before = ctx.statsSnapshot();
  const batch = ctx.batch("step");
  await encodeFill(ctx, batch, a, f32Bits(4.5));
  await encodeFill(ctx, batch, a, f32Bits(4.5));
  batch.copy(a, 0, b, 0, 4 * 301);
  batch.submit();
  const d = statsDelta(before, ctx.statsSnapshot());
  assert.equal(d.batches, 1);
  assert.equal(d.dispatches, 2);
  assert.equal(d.copies, 1);
  assert.equal(d.submits, 1);
  assert.equal(d.bindGroupHits + d.bindGroupsCreated, 2);
  assert.ok(d.bindGroupHits >= 1); // the second fill reuses the first one's group
  assert.ok(d.encodeMs > 0 && Number.isFinite(d.encodeMs));
  assert.ok(d.submitMs > 0 && Number.isFinite(d.submitMs));
  assert.equal(batch.dispatches, 2);
  // The context's totals less the snapshot: the batch's own sums, up to float rounding.
  assert.ok(Math.abs(batch.encodeMs - d.encodeMs) < 1e-6, `${batch.encodeMs} vs ${d.encodeMs}`);
  assert.ok(Math.abs(batch.submitMs - d.submitMs) < 1e-6, `${batch.submitMs} vs ${d.submitMs}`);
  assert.ok((await ctx.readF32(b)).every((v) => v === 4.5));
  a.destroy();
  b.destroy();
});

closeGpuAfterTests();
