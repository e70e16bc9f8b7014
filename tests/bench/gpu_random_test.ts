/**
 * The GPU check's own kernels and weight maker: random weights quantized on the GPU must be the
 * bitsandbytes NF4 + double quant of their f32 values byte for byte (checked against the CPU
 * quantizer, src/quant/, which tests/quant checks against bitsandbytes itself), the random fill
 * must be deterministic per global index and spread over its range, and the copy kernel must copy.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import {
  encodeRandomF32,
  randomF32Buffer,
  randomQuantWeightGpu,
} from "../../scripts/bench/gpu_random.ts";
import { encodeCopy } from "../../scripts/bench/copy_kernel.ts";
import { gemvBytes } from "../../scripts/bench/gemv_bench.ts";
import { quantizeWeight } from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";

gpuTest(
  "random NF4 weight made on the GPU equals the CPU quantization of its values",
  async (ctx) => {
    // 37 x 200 = 7400 elements: 115 whole blocks and a partial one; chunks of 4096 elements (the
    // smallest the 256-byte offset alignment allows) make two chunks, the second partial.
    const [out, inF] = [37, 200];
    const kept = await randomQuantWeightGpu(ctx, {
      label: "t.w",
      out,
      in: inF,
      seed: 11,
      keepF32: true,
      maxChunkElements: 4096,
    });
    const streamed = await randomQuantWeightGpu(ctx, {
      label: "t.w2",
      out,
      in: inF,
      seed: 11,
      maxChunkElements: 4096,
    });
    try {
      const values = await ctx.readF32(kept.f32!, 0, out * inF);
      const want = quantizeWeight(values, [out, inF], {
        quantType: "nf4",
        blocksize: 64,
        doubleQuant: true,
        dtype: "float32",
      });
      const blocks = Math.ceil((out * inF) / 64);
      for (const got of [kept.weight, streamed.weight]) {
        const packed = new Uint8Array(await ctx.read(got.packed, 0, want.packed.length));
        assert.deepEqual(packed, want.packed, "packed codes");
        const codes = new Uint8Array(await ctx.read(got.absmax, 0, blocks));
        assert.deepEqual(codes, want.dq!.codes, "absmax codes");
        const nested = await ctx.readF32(got.nestedAbsmax, 0, want.dq!.nestedAbsmax.length);
        assert.deepEqual(nested, want.dq!.nestedAbsmax, "nested absmax");
        assert.equal(got.offset, want.dq!.offset, "double-quant offset");
        assert.deepEqual(Array.from(got.quantMap), Array.from(want.quantMap), "code table");
      }
    } finally {
      kept.weight.destroy();
      kept.f32!.destroy();
      streamed.weight.destroy();
    }
  },
);

gpuTest(
  "random fill: same value per global index in chunks, spread over the range",
  async (ctx) => {
    const n = 1031;
    const whole = await randomF32Buffer(ctx, "t.whole", "scratch", n, {
      seed: 5,
      center: 0.25,
      scale: 2,
    });
    const parts = await poisonedF32(ctx, "t.parts", 1280);
    try {
      // Two dispatches: elements 0..767 at offset 0 and 768..1030 at byte offset 3072 (256-aligned).
      const b = ctx.batch("t.fill");
      await encodeRandomF32(ctx, b, { buffer: parts, offset: 0, size: 768 * 4 }, {
        seed: 5,
        center: 0.25,
        scale: 2,
      });
      await encodeRandomF32(ctx, b, { buffer: parts, offset: 768 * 4, size: (n - 768) * 4 }, {
        seed: 5,
        center: 0.25,
        scale: 2,
        base: 768,
      });
      b.submit();
      const a = await ctx.readF32(whole, 0, n);
      const p = await ctx.readF32(parts, 0, n);
      assert.deepEqual(p, a);
      let min = Infinity, max = -Infinity, sum = 0;
      for (const v of a) {
        min = Math.min(min, v);
        max = Math.max(max, v);
        sum += v;
      }
      // center ± scale, [-1.75, 2.25); 1031 uniform draws reach within 0.05 of each end and have a
      // mean within 0.15 of the center (the standard error is 2/sqrt(3*1031) ≈ 0.036).
      assert.ok(min >= -1.75 && min < -1.7, `min ${min}`);
      assert.ok(max < 2.25 && max > 2.2, `max ${max}`);
      assert.ok(Math.abs(sum / n - 0.25) < 0.15, `mean ${sum / n}`);
      assert.ok(new Set(a).size > n * 0.99, "values repeat");
      // Another seed gives other values.
      const other = await randomF32Buffer(ctx, "t.other", "scratch", n, {
        seed: 6,
        center: 0.25,
        scale: 2,
      });
      const o = await ctx.readF32(other, 0, n);
      other.destroy();
      assert.ok(o.some((v, i) => v !== a[i]));
    } finally {
      whole.destroy();
      parts.destroy();
    }
  },
);

gpuTest("copy kernel copies exactly the bytes asked for", async (ctx) => {
  const rng = new Rng(3);
  const src = ctx.upload("t.src", "scratch", rng.normals(1203));
  const dst = await poisonedF32(ctx, "t.dst", 1203);
  try {
    const bytes = 1200 * 4; // a multiple of 16; the last 3 floats stay poisoned
    const b = ctx.batch("t.copy");
    await encodeCopy(ctx, b, src, dst, bytes);
    b.submit();
    const got = await ctx.readF32(dst);
    const want = await ctx.readF32(src);
    assert.deepEqual(got.subarray(0, 1200), want.subarray(0, 1200));
    assert.ok(got.subarray(1200).every(Number.isNaN), "wrote past the bytes asked for");
    await assert.rejects(async () => await encodeCopy(ctx, ctx.batch("t.bad"), src, dst, 100));
  } finally {
    src.destroy();
    dst.destroy();
  }
});

Deno.test("gemv bytes: codes, absmax codes, nested absmax, x and y", () => {
  // W [4096, 4096]: 8 MiB of codes, 262144 absmax codes, 1024 nested f32, x 16 KiB, y 16 KiB.
  assert.equal(gemvBytes(4096, 4096), 8388608 + 262144 + 4096 + 16384 + 16384);
});

closeGpuAfterTests();
