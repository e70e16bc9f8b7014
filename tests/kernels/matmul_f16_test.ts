/**
 * The f16-tile variants on adapters with shader-f16 (lavapipe; ignored with the reason where
 * the adapter lacks it): the dense matmul's `tiled_f16`, the f16-input GEMM (encodeMatmulF16)
 * and its f32 -> f16 conversion, and the 4-bit matmul's `tiled_f16`, forward and backward, all
 * against the float64 references within the rounding bound of tests/reference/f16_error_bound.ts
 * (operands rounded to f16, f32 sums). Odd shapes off the 64 x 64 tiles, every layout,
 * accumulate with alpha, blocks straddling rows, rows not made of whole packed words, slices.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu } from "../support/gpu.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { encodeMatmul } from "../../src/kernels/matmul.ts";
import { encodeF32ToF16, encodeMatmulF16 } from "../../src/kernels/matmul_f16.ts";
import { encodeMatmul4bit, encodeMatmul4bitT } from "../../src/kernels/matmul_4bit.ts";
import {
  denseAbsTerms,
  f16MatmulBound,
  f16Neighbours,
  worstBoundRatio,
} from "../reference/f16_error_bound.ts";
import { matmulF64 } from "../reference/ops_f64.ts";
import { checkDense, checkQuant, DENSE_CASES } from "./matmul_f16_checks.ts";

const HAS_F16 = (await gpu()).capabilities.f16;

function f16Test(name: string, fn: (ctx: GpuContext) => Promise<void>): void {
  Deno.test({
    name: HAS_F16 ? name : `${name} (ignored: the adapter has no shader-f16)`,
    ignore: !HAS_F16,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => fn(await gpu()),
  });
}

f16Test(
  "matmul tiled_f16 matches float64 within the f16 bound (odd shapes, layouts)",
  async (ctx) => {
    const rng = new Rng(1601);
    for (const c of DENSE_CASES) {
      await checkDense(ctx, rng, c, "tiled_f16", async (a, b, out) => {
        const ga = ctx.upload("a", "scratch", a);
        const gb = ctx.upload("b", "scratch", b);
        const batch = ctx.batch();
        await encodeMatmul(ctx, batch, { ...c, a: ga, b: gb, c: out, variant: "tiled_f16" });
        batch.submit();
        await ctx.sync();
        ga.destroy();
        gb.destroy();
      });
    }
  },
);

/** f16 copies of `a` on the GPU, made by encodeF32ToF16. */
async function toF16(ctx: GpuContext, a: Float32Array) {
  const src = ctx.upload("f32", "scratch", a);
  const dst = ctx.createBuffer({ label: "f16", category: "scratch", size: a.length * 2 });
  const batch = ctx.batch();
  await encodeF32ToF16(ctx, batch, { src, dst, count: a.length });
  batch.submit();
  await ctx.sync();
  src.destroy();
  return dst;
}

// WGSL lets the conversion round to either neighbour (GPUs round to nearest even).
f16Test("encodeF32ToF16 gives one of the two f16 values next to each input", async (ctx) => {
  const rng = new Rng(1602);
  // Normal, subnormal, halfway, overflow-free large and exact values; an odd count.
  const host = new Float32Array(333);
  for (let i = 0; i < host.length; i++) host[i] = rng.uniform(-1, 1) * 2 ** (rng.int(40) - 28);
  host.set([0, -0, 1, 65504, -65504, 2 ** -24, 2 ** -25 * 3, 1 + 2 ** -11, 1 + 3 * 2 ** -11]);
  const dst = await toF16(ctx, host);
  const got = new Float16Array(await ctx.read(dst, 0, host.length * 2));
  for (let i = 0; i < host.length; i++) {
    const [lo, hi] = f16Neighbours(host[i]);
    assert.ok(got[i] === lo || got[i] === hi, `${host[i]}: got ${got[i]}, not ${lo} or ${hi}`);
  }
  dst.destroy();
});

f16Test("encodeMatmulF16 (f16 operands) matches float64 within the f16 bound", async (ctx) => {
  const rng = new Rng(1603);
  for (const c of DENSE_CASES) {
    await checkDense(ctx, rng, c, "matmul_f16", async (a, b, out) => {
      const ga = await toF16(ctx, a);
      const gb = await toF16(ctx, b);
      const batch = ctx.batch();
      // The device's own choice (tiled_f16 here, subgroup_matrix on matrix hardware).
      await encodeMatmulF16(ctx, batch, { ...c, a: ga, b: gb, c: out });
      batch.submit();
      await ctx.sync();
      ga.destroy();
      gb.destroy();
    });
  }
});

f16Test("encodeMatmulF16 refuses short f16 operands naming the field", async (ctx) => {
  const a = ctx.createBuffer({ label: "a", category: "scratch", size: 2 * 14 });
  const c = ctx.createBuffer({ label: "c", category: "scratch", size: 4 * 16 });
  await assert.rejects(
    encodeMatmulF16(ctx, ctx.batch(), { a, b: a, c, m: 3, n: 4, k: 5 }),
    /matmul_f16: a: expected at least 15 elements of 2 bytes \(30 bytes\), got 28 bytes/,
  );
  a.destroy();
  c.destroy();
});

f16Test(
  "matmul_4bit tiled_f16 forward and backward match float64 within the f16 bound",
  async (ctx) => {
    await checkQuant(ctx, new Rng(1604), "tiled_f16", async (direction, a) => {
      const batch = ctx.batch();
      const variant = "tiled_f16";
      if (direction === "backward") {
        await encodeMatmul4bitT(ctx, batch, {
          dy: a.src,
          w: a.w,
          dx: a.dst,
          m: a.m,
          accumulate: a.accumulate,
          variant,
        });
      } else {
        await encodeMatmul4bit(ctx, batch, {
          x: a.src,
          w: a.w,
          y: a.dst,
          m: a.m,
          accumulate: a.accumulate,
          variant,
        });
      }
      batch.submit();
    });
  },
);

f16Test("matmul tiled_f16 reads and writes Binding slices, nothing else", async (ctx) => {
  const rng = new Rng(1605);
  const [m, n, k] = [19, 23, 40];
  const a = rng.normals(m * k);
  const b = rng.normals(n * k);
  // Inputs in one buffer (A at 64, B at 896 floats), C in another at 256 (byte offsets
  // multiples of 256, guards around every slice); one buffer cannot be read and written by a
  // dispatch.
  const off = [64, 896, 256];
  const inputs = rng.normals(off[1] + n * k + 64);
  inputs.set(a, off[0]);
  inputs.set(b, off[1]);
  const host = rng.normals(off[2] + m * n + 64);
  const inBuf = ctx.upload("inputs", "scratch", inputs);
  const buf = ctx.upload("outputs", "scratch", host);
  const slice = (on: typeof buf, at: number, count: number) => ({
    buffer: on,
    offset: at * 4,
    size: count * 4,
  });
  const batch = ctx.batch();
  await encodeMatmul(ctx, batch, {
    a: slice(inBuf, off[0], m * k),
    b: slice(inBuf, off[1], n * k),
    c: slice(buf, off[2], m * n),
    m,
    n,
    k,
    transB: true,
    variant: "tiled_f16",
  });
  batch.submit();
  const got = await ctx.readF32(buf);
  for (let i = 0; i < host.length; i++) {
    if (i >= off[2] && i < off[2] + m * n) continue;
    assert.ok(Object.is(got[i], host[i]), `element ${i} changed`);
  }
  // The product itself, within the f16 bound.
  const bound = f16MatmulBound({ ...denseAbsTerms(a, b, m, n, k, false, true), k });
  const want = matmulF64(a, b, m, n, k, false, true);
  const { ratio, at } = worstBoundRatio(got.subarray(off[2], off[2] + m * n), want, bound);
  assert.ok(ratio <= 1, `C element ${at} off by ${ratio.toFixed(2)} x the bound`);
  buf.destroy();
  inBuf.destroy();
});

closeGpuAfterTests();
