/**
 * The GPU check's GEMV figure: y[1, out] = x[1, in] · Wᵀ through the 4-bit kernel at M = 1, the
 * decode-time product, which is bound by reading W. GB/s count the bytes a call must move
 * (packed codes, 8-bit absmax codes, nested absmax, x read; y written) and are read beside a
 * plain copy kernel's GB/s (scripts/bench/copy_kernel.ts; bytes read + written) on the same adapter.
 * Several distinct weights are cycled so that their bytes exceed the GPU's cache many times over
 * (a single 30 MB weight would be served from a 50 MB L2 after the first call).
 */
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import { encodeMatmul4bit } from "../../src/kernels/matmul_4bit.ts";
import type { GpuQuantWeight } from "../../src/kernels/quant_weight.ts";
import { kernelLadder } from "../../src/kernels/ladder.ts";
import { encodeCopy } from "./copy_kernel.ts";
import { randomF32Buffer, randomQuantWeightGpu } from "./gpu_random.ts";
import { timeGpuKernels } from "./gpu_kernel_timing.ts";

export interface GemvBenchOptions {
  out: number;
  in: number;
  /** Distinct weights cycled through. */
  copies: number;
  /** Bytes the copy kernel copies per call (a multiple of 16). */
  copyBytes: number;
  targetMs: number;
  rounds: number;
}

export interface GemvResult {
  out: number;
  in: number;
  copies: number;
  /** Bytes one GEMV call moves. */
  bytesPerCall: number;
  gemvGbps: number;
  gemvUs: number;
  gemvVariant: string;
  copyBytes: number;
  copyGbps: number;
  method: "timestamp" | "wall";
  /** gemvGbps / copyGbps. */
  ratio: number;
}

/** Bytes a 4-bit GEMV over W [out, in] (blocksize 64, double quant) reads and writes. */
export function gemvBytes(out: number, inF: number): number {
  const n = out * inF;
  const blocks = Math.ceil(n / 64);
  return n / 2 + blocks + Math.ceil(blocks / 256) * 4 + inF * 4 + out * 4;
}

export async function benchGemv(ctx: GpuContext, opts: GemvBenchOptions): Promise<GemvResult> {
  // The copy is one binding: no larger than the device allows.
  const maxCopy = Math.floor(
    Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize) / 16,
  ) * 16;
  const o = { ...opts, copyBytes: Math.min(opts.copyBytes, maxCopy) };
  const weights: GpuQuantWeight[] = [];
  const owned: GpuBuffer[] = [];
  try {
    for (let i = 0; i < o.copies; i++) {
      const { weight } = await randomQuantWeightGpu(ctx, {
        label: `gemv.w${i}`,
        out: o.out,
        in: o.in,
        seed: 3000 + i,
      });
      weights.push(weight);
    }
    const x = await randomF32Buffer(ctx, "gemv.x", "scratch", o.in, {
      seed: 4000,
      center: 0,
      scale: 1,
    });
    owned.push(x);
    // One output per weight, so consecutive calls share no written buffer.
    const ys = weights.map((_, i) => {
      const y = ctx.createBuffer({ label: `gemv.y${i}`, category: "scratch", size: o.out * 4 });
      owned.push(y);
      return y;
    });
    const src = await randomF32Buffer(ctx, "copy.src", "scratch", o.copyBytes / 4, {
      seed: 5000,
      center: 0,
      scale: 1,
    });
    owned.push(src);
    const dst = ctx.createBuffer({ label: "copy.dst", category: "scratch", size: o.copyBytes });
    owned.push(dst);

    const t = await timeGpuKernels(ctx, [
      {
        name: "nf4 gemv",
        encode: (b, rep) =>
          encodeMatmul4bit(ctx, b, { x, w: weights[rep % o.copies], y: ys[rep % o.copies], m: 1 }),
      },
      { name: "copy", encode: (b) => encodeCopy(ctx, b, src, dst, o.copyBytes) },
    ], { targetMs: o.targetMs, rounds: o.rounds, maxReps: 8192 });
    const g = t.get("nf4 gemv")!;
    const c = t.get("copy")!;
    const bytesPerCall = gemvBytes(o.out, o.in);
    const gemvGbps = bytesPerCall / (g.ms * 1e6);
    const copyGbps = (2 * o.copyBytes) / (c.ms * 1e6);
    return {
      out: o.out,
      in: o.in,
      copies: o.copies,
      bytesPerCall,
      gemvGbps,
      gemvUs: g.ms * 1000,
      gemvVariant: kernelLadder.choice(ctx, "matmul_4bit"),
      copyBytes: o.copyBytes,
      copyGbps,
      method: g.method === "timestamp" && c.method === "timestamp" ? "timestamp" : "wall",
      ratio: gemvGbps / copyGbps,
    };
  } finally {
    for (const w of weights) w.destroy();
    for (const b of owned) b.destroy();
  }
}
