/**
 * The global gradient norm and clip scale, every variant the adapter can run, against float64:
 * odd sizes (one over two partial groups, tensors sharing a buffer at aligned and unaligned
 * offsets), the `subgroup` variant also with workgroups that end in a partial subgroup, a grid
 * split into two dimensions, and bit-for-bit determinism. Variants the adapter lacks the
 * features for are reported as ignored.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu, poisonedF32 } from "../support/gpu.ts";
import {
  encodeGlobalNorm,
  globalNormScratchBytes,
  GRAD_NORM_VARIANTS,
  type GradNormVariant,
  gradNormVariantAvailable,
  type GradTensor,
} from "../../src/kernels/grad_norm.ts";
import { KernelLadder } from "../../src/kernels/ladder.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { globalNormF64 } from "../reference/attn_ce_f64.ts";

/**
 * Odd sizes, one over two partial groups; the last two share one buffer: one as a Binding at a
 * 256-byte offset, the other at an unaligned element offset after it.
 */
const SIZES = [1, 2049, 5003, 37];
/**
 * Relative error of the norm. f32 sums of squares of up to 2048 elements per workgroup, then
 * of the partials: in practice a few 1e-7 relative (all terms are positive, so no
 * cancellation); a missing or doubled element of the 7090 moves the norm by ~1e-4.
 */
const TOL = 1e-5;

const ctx = await gpu();

interface Options {
  variant: GradNormVariant;
  workgroupSize?: number;
  maxWorkgroupsPerDimension?: number;
}

/** Deno.test on the shared device, ignored (and listed as such) where the variant cannot run. */
function variantTest(name: string, variant: GradNormVariant, fn: () => Promise<void>) {
  Deno.test({
    name: `${name} (${variant})`,
    ignore: !gradNormVariantAvailable(ctx, variant),
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

async function globalNorm(
  ctx: GpuContext,
  arrays: Float32Array[],
  maxNorm: number,
  opts: Options,
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
  await encodeGlobalNorm(ctx, batch, { tensors, out, maxNorm, scratch, ...opts });
  batch.submit();
  const r = await ctx.readF32(out);
  for (const t of tensors) if (!("offset" in t.buffer)) t.buffer.destroy();
  for (const b of [shared, scratch, out]) b.destroy();
  return r;
}

function randomGrads(seed: number, sizes = SIZES): Float32Array[] {
  const rng = new Rng(seed);
  return sizes.map((n) => rng.normals(n, 0.01));
}

async function checkAgainstF64(grads: Float32Array[], opts: Options) {
  for (const maxNorm of [0, 0.3, 1000]) {
    const [norm, scale] = await globalNorm(ctx, grads, maxNorm, opts);
    const ref = globalNormF64(grads, maxNorm);
    const at = `${JSON.stringify(opts)} maxNorm ${maxNorm}`;
    assert.ok(Math.abs(norm - ref.norm) / ref.norm < TOL, `${at}: norm ${norm} vs ${ref.norm}`);
    assert.ok(Math.abs(scale - ref.clipScale) < TOL * ref.clipScale, `${at}: scale ${scale}`);
    if (maxNorm === 0 || maxNorm === 1000) assert.equal(scale, 1);
    else assert.ok(scale < 1);
  }
}

for (const variant of GRAD_NORM_VARIANTS) {
  variantTest("global norm matches float64 and torch's clip scale", variant, async () => {
    await checkAgainstF64(randomGrads(1), { variant });
  });

  variantTest("global norm is deterministic to the bit", variant, async () => {
    const grads = randomGrads(2);
    const a = await globalNorm(ctx, grads, 0.3, { variant });
    const b = await globalNorm(ctx, grads, 0.3, { variant });
    assert.deepEqual(a, b);
  });

  // 5 groups of the first tensor in a grid of 3 x 2, the last workgroup past the end.
  variantTest("global norm over a grid split into two dimensions", variant, async () => {
    const grads = randomGrads(3, [4 * 2048 + 1, 5003, 2049, 37]);
    await checkAgainstF64(grads, { variant, maxWorkgroupsPerDimension: 2 });
    // The same partials summed in the same order: the same bits as the unsplit grid.
    const split = await globalNorm(ctx, grads, 0.3, { variant, maxWorkgroupsPerDimension: 2 });
    assert.deepEqual(split, await globalNorm(ctx, grads, 0.3, { variant }));
  });
}

variantTest(
  "global norm with workgroups that end in a partial subgroup or hold less than one",
  "subgroup",
  async () => {
    const max = ctx.capabilities.subgroupMaxSize;
    for (const workgroupSize of [100, 3, Math.min(max + 3, 256)]) {
      await checkAgainstF64(randomGrads(4), { variant: "subgroup", workgroupSize });
    }
  },
);

Deno.test({
  name: "global norm refuses the subgroup variant where the device lacks subgroups",
  ignore: ctx.capabilities.subgroups,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const b = ctx.createBuffer({ label: "b", category: "scratch", size: 64 });
    await assert.rejects(
      encodeGlobalNorm(ctx, ctx.batch(), {
        tensors: [{ buffer: b, n: 3 }],
        out: b,
        maxNorm: 1,
        scratch: b,
        variant: "subgroup",
      }),
      /grad_norm: variant subgroup needs the subgroups feature/,
    );
    b.destroy();
  },
});

Deno.test({
  name: "the ladder times exactly the grad_norm variants this device can run",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ladder = new KernelLadder({
      cachePath: null,
      overrides: "",
      mode: "time",
      log: () => {},
    });
    const d = await ladder.decide(ctx, "grad_norm");
    assert.equal(d.source, "timed");
    for (const v of GRAD_NORM_VARIANTS) {
      assert.equal((d.ms?.[v] ?? 0) > 0, gradNormVariantAvailable(ctx, v), `${v}: ${d.ms?.[v]}`);
    }
  },
});

Deno.test({
  name: "global norm of no tensors is 0 with scale 1",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const scratch = ctx.createBuffer({ label: "s", category: "scratch", size: 16 });
    const out = await poisonedF32(ctx, "out", 2);
    const batch = ctx.batch();
    await encodeGlobalNorm(ctx, batch, { tensors: [], out, maxNorm: 1, scratch });
    batch.submit();
    assert.deepEqual(Array.from(await ctx.readF32(out)), [0, 1]);
    scratch.destroy();
    out.destroy();
  },
});

Deno.test({
  name: "global norm refuses a scratch buffer that is too small",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
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
      /grad_norm: scratch: expected at least 3 elements of 4 bytes \(12 bytes\), got 4 bytes \(buffer tiny\)/,
    );
    g.destroy();
    small.destroy();
  },
});

closeGpuAfterTests();
