import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import {
  encodeGlobalNorm,
  globalNormScratchBytes,
  type GradTensor,
} from "../../src/kernels/grad_norm.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { globalNormF64 } from "../reference/attn_ce_f64.ts";

/**
 * Odd sizes, one over two partial groups; the last two share one buffer: one as a Binding at a
 * 256-byte offset, the other at an unaligned element offset after it.
 */
const SIZES = [1, 2049, 5003, 37];

async function globalNorm(
  ctx: GpuContext,
  arrays: Float32Array[],
  maxNorm: number,
): Promise<Float32Array> {
  const shared = ctx.createBuffer({ label: "grads", category: "gradients", size: 6000 * 4 });
  const tensors: GradTensor[] = arrays.map((a, i) => {
    if (i === 2) {
      ctx.write(shared, a, 64 * 4);
      return { buffer: { buffer: shared, offset: 256, size: 5936 * 4 }, n: a.length };
    }
    if (i === 3) {
      ctx.write(shared, a, (64 + 5003 + 7) * 4);
      return { buffer: { buffer: shared, offset: 256, size: 5936 * 4 }, n: a.length, offset: 5010 };
    }
    return { buffer: ctx.upload(`g${i}`, "gradients", a), n: a.length };
  });
  const scratch = await poisonedF32(ctx, "scratch", globalNormScratchBytes(tensors) / 4);
  const out = await poisonedF32(ctx, "out", 2);
  const batch = ctx.batch();
  await encodeGlobalNorm(ctx, batch, { tensors, out, maxNorm, scratch });
  batch.submit();
  const r = await ctx.readF32(out);
  for (const t of tensors) if (!("offset" in t.buffer)) t.buffer.destroy();
  for (const b of [shared, scratch, out]) b.destroy();
  return r;
}

function randomGrads(seed: number): Float32Array[] {
  const rng = new Rng(seed);
  return SIZES.map((n) => rng.normals(n, 0.01));
}

gpuTest("global norm matches float64 and torch's clip scale", async (ctx) => {
  const grads = randomGrads(1);
  for (const maxNorm of [0, 0.3, 1000]) {
    const [norm, scale] = await globalNorm(ctx, grads, maxNorm);
    const ref = globalNormF64(grads, maxNorm);
    assert.ok(Math.abs(norm - ref.norm) / ref.norm < 1e-5, `norm ${norm} vs ${ref.norm}`);
    assert.ok(Math.abs(scale - ref.clipScale) < 1e-5 * ref.clipScale, `scale ${scale}`);
    if (maxNorm === 0 || maxNorm === 1000) assert.equal(scale, 1);
    else assert.ok(scale < 1);
  }
});

gpuTest("global norm is deterministic to the bit", async (ctx) => {
  const grads = randomGrads(2);
  const a = await globalNorm(ctx, grads, 0.3);
  const b = await globalNorm(ctx, grads, 0.3);
  assert.deepEqual(a, b);
});

gpuTest("global norm of no tensors is 0 with scale 1", async (ctx) => {
  const scratch = ctx.createBuffer({ label: "s", category: "scratch", size: 16 });
  const out = await poisonedF32(ctx, "out", 2);
  const batch = ctx.batch();
  await encodeGlobalNorm(ctx, batch, { tensors: [], out, maxNorm: 1, scratch });
  batch.submit();
  assert.deepEqual(Array.from(await ctx.readF32(out)), [0, 1]);
  scratch.destroy();
  out.destroy();
});

gpuTest("global norm refuses a scratch buffer that is too small", async (ctx) => {
  const g = ctx.createBuffer({ label: "g", category: "scratch", size: 5000 * 4 });
  const small = ctx.createBuffer({ label: "tiny", category: "scratch", size: 4 });
  const batch = ctx.batch();
  await assert.rejects(
    encodeGlobalNorm(ctx, batch, {
      tensors: [{ buffer: g, n: 5000 }],
      out: g,
      maxNorm: 1,
      scratch: small,
    }),
    /scratch \(tiny\) holds 4 bytes, needs 12/,
  );
  g.destroy();
  small.destroy();
});

closeGpuAfterTests();
