/**
 * f32 <-> IEEE half conversion (shaders/convert_f16.wgsl): the training graph keeps each layer's
 * input for the backward recompute as halves, half the bytes of f32. Halves are packed two per
 * 32-bit word, element 2i in the low 16 bits (the layout of WGSL's array<f16>), so n elements
 * take `halfBufferBytes(n)` bytes. f32 -> f16 rounds to nearest even; magnitudes of 65520 and
 * more become +-inf (65504 is the largest half); values under 2^-25 become signed zero; NaN
 * stays NaN. f16 -> f32 is exact.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";

/** shaders/convert_f16.wgsl's Params. */
const CONVERT_PARAMS = uniformLayout("Params", {
  n: "u32",
  groups_x: "u32",
  _pad0: "u32",
  _pad1: "u32",
});

/** Bytes of n halves packed two per 32-bit word. */
export function halfBufferBytes(n: number): number {
  return Math.ceil(n / 2) * 4;
}

async function convert(
  ctx: GpuContext,
  batch: DispatchBatch,
  entry: "to_f16" | "from_f16",
  src: Binding,
  dst: Binding,
  n: number,
): Promise<void> {
  checkCount(entry, "n", n);
  const words = Math.ceil(n / 2);
  checkBindingSize(entry, "src", src, entry === "to_f16" ? n : words);
  checkBindingSize(entry, "dst", dst, entry === "to_f16" ? words : n);
  // One invocation per 32-bit word of halves (two elements).
  const [gx, gy] = grid(Math.ceil(words / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await ctx.pipeline("convert_f16.wgsl", {}, entry, CONVERT_PARAMS);
  const params = CONVERT_PARAMS.pack({ n, groups_x: gx });
  batch.dispatch(pipeline, [src, dst, ctx.uniform(params)], [gx, gy]);
}

/** dst (n halves, packed) = src (n f32), rounded to nearest even. */
export function encodeToF16(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { src: Binding; dst: Binding; n: number },
): Promise<void> {
  return convert(ctx, batch, "to_f16", args.src, args.dst, args.n);
}

/** dst (n f32) = src (n halves, packed), exactly. */
export function encodeFromF16(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { src: Binding; dst: Binding; n: number },
): Promise<void> {
  return convert(ctx, batch, "from_f16", args.src, args.dst, args.n);
}
