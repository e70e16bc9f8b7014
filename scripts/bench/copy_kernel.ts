/**
 * A plain copy kernel (shaders/copy.wgsl), bench-only: the memory bandwidth this adapter gives a
 * WGSL kernel, so the 4-bit GEMV's GB/s can be read against it (a GEMV at M = 1 is memory
 * bound: it should move its weight bytes nearly as fast as a copy moves bytes).
 */
import {
  type DispatchBatch,
  type GpuBuffer,
  type GpuContext,
  grid,
} from "../../src/gpu/context.ts";
import { invalidArgument } from "../../src/util/errors.ts";

/** Copies the first `bytes` (a multiple of 16) of `src` into `dst`. */
export async function encodeCopy(
  ctx: GpuContext,
  batch: DispatchBatch,
  src: GpuBuffer,
  dst: GpuBuffer,
  bytes: number,
): Promise<void> {
  if (!Number.isInteger(bytes) || bytes <= 0 || bytes % 16 !== 0) {
    throw invalidArgument(`copy: bytes must be a positive multiple of 16, got ${bytes}`);
  }
  if (src.size < bytes || dst.size < bytes) {
    throw invalidArgument(
      `copy: ${bytes} bytes do not fit src ${src.label} (${src.size}) or dst ${dst.label} (${dst.size})`,
    );
  }
  const words = bytes / 16;
  const [gx, gy] = grid(Math.ceil(words / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await ctx.pipeline("copy.wgsl");
  batch.dispatch(pipeline, [src, dst, ctx.uniform(new Uint32Array([words, gx, 0, 0]))], [gx, gy]);
}
