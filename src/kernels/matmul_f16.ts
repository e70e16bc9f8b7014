/**
 * Dense GEMM on f16 operands: C[m,n] (=|+=) alpha · op(A) · op(B) with A and B stored as f16
 * (2 bytes an element, layouts as in src/kernels/matmul.ts), f32 accumulation and an f32 C. The
 * benchmark's "dense f16 GEMM" (the ceiling the 4-bit kernels are measured against); the model
 * keeps f32 activations and uses encodeMatmul. Runs the subgroup-matrix kernel where the device
 * has a f16 -> f32 config (the matrix units), else the f16-tile kernel; both read the f16 operands
 * directly (no conversion in the loop). encodeF32ToF16 makes the operands from f32 data.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { denseKernel, encodeDense, matmulVariantAvailable } from "./matmul.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";

export type MatmulF16Variant = "subgroup_matrix" | "tiled_f16";

export interface MatmulF16Args {
  /** op(A) [m, k], f16 elements. */
  a: Binding;
  /** op(B) [k, n], f16 elements. */
  b: Binding;
  /** C [m, n], f32. */
  c: Binding;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  accumulate?: boolean;
  /** Default: matmulF16Variant(ctx). */
  variant?: MatmulF16Variant;
}

/** The fastest path this device has, or undefined without shader-f16. */
export function matmulF16Variant(ctx: GpuContext): MatmulF16Variant | undefined {
  if (matmulVariantAvailable(ctx, "subgroup_matrix")) return "subgroup_matrix";
  return matmulVariantAvailable(ctx, "tiled_f16") ? "tiled_f16" : undefined;
}

/** shaders/matmul_f16_pack.wgsl's Params. */
const PACK_PARAMS = uniformLayout("Params", {
  n: "u32",
  groups_x: "u32",
  _pad0: "u32",
  _pad1: "u32",
});

/** A binding of at least `elems` f16 values. */
function checkF16(op: string, field: string, b: Binding, elems: number): void {
  checkBindingSize(op, field, b, elems, 2);
}

export async function encodeMatmulF16(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: MatmulF16Args,
): Promise<void> {
  const { m, n, k } = args;
  checkCount("matmul_f16", "m", m);
  checkCount("matmul_f16", "n", n);
  checkCount("matmul_f16", "k", k);
  checkF16("matmul_f16", "a", args.a, m * k);
  checkF16("matmul_f16", "b", args.b, k * n);
  checkBindingSize("matmul_f16", "c", args.c, m * n);
  const variant = args.variant ?? matmulF16Variant(ctx);
  if (variant === undefined || !matmulVariantAvailable(ctx, variant)) {
    throw invalidArgument(
      `matmul_f16: variant ${variant ?? "(any)"} is not available on ${ctx.adapterKey}`,
    );
  }
  await encodeDense(ctx, batch, args, denseKernel(ctx, variant, args, "f16"));
}

/** dst[i] = f16(src[i]) for i < count (round to nearest even); dst holds f16 elements. */
export async function encodeF32ToF16(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { src: Binding; dst: Binding; count: number },
): Promise<void> {
  const { src, dst, count } = args;
  checkCount("f32_to_f16", "count", count);
  checkBindingSize("f32_to_f16", "src", src, count);
  checkF16("f32_to_f16", "dst", dst, count);
  if (!ctx.capabilities.f16) {
    throw invalidArgument(`f32_to_f16: needs shader-f16, which ${ctx.adapterKey} lacks`);
  }
  const [gx, gy] = grid(Math.ceil(count / 64), ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await ctx.pipeline("matmul_f16_pack.wgsl", {}, "main", PACK_PARAMS);
  const params = PACK_PARAMS.pack({ n: count, groups_x: gx });
  batch.dispatch(pipeline, [src, dst, ctx.uniform(params)], [gx, gy]);
}
