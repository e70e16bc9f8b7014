/**
 * Elementwise f32 vector ops for the training graph: y += x (residuals, gradient sums),
 * x *= alpha, dst = src, y += alpha·x, and y[r, :] += bias (a linear's bias on every row).
 * The two operands of add/axpy/copy/addRows must not overlap.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";

/** shaders/elementwise.wgsl's Params, shared by every entry point. */
const ELEMENTWISE_PARAMS = uniformLayout("Params", {
  n: "u32",
  alpha: "f32",
  groups_x: "u32",
  // add_rows only: the row length.
  cols: "u32",
});

function params(ctx: GpuContext, n: number, alpha: number, cols = 0) {
  const [gx, gy] = grid(Math.ceil(n / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const u = ELEMENTWISE_PARAMS.pack({ n, alpha, groups_x: gx, cols });
  return { groups: [gx, gy] as [number, number], uniform: ctx.uniform(u) };
}

function pipeline(ctx: GpuContext, entry: string): Promise<GPUComputePipeline> {
  return ctx.pipeline("elementwise.wgsl", {}, entry, ELEMENTWISE_PARAMS);
}

async function binary(
  ctx: GpuContext,
  batch: DispatchBatch,
  entry: "add" | "axpy" | "copy",
  x: Binding,
  y: Binding,
  n: number,
  alpha: number,
  names: [string, string],
): Promise<void> {
  checkCount(entry, "n", n);
  checkBindingSize(entry, names[0], x, n);
  checkBindingSize(entry, names[1], y, n);
  const { groups, uniform } = params(ctx, n, alpha);
  batch.dispatch(await pipeline(ctx, entry), [x, y, uniform], groups);
}

/** y += x */
export function encodeAdd(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { x: Binding; y: Binding; n: number },
): Promise<void> {
  return binary(ctx, batch, "add", args.x, args.y, args.n, 1, ["x", "y"]);
}

/** y += alpha·x */
export function encodeAxpy(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { x: Binding; y: Binding; n: number; alpha: number },
): Promise<void> {
  return binary(ctx, batch, "axpy", args.x, args.y, args.n, args.alpha, ["x", "y"]);
}

/** dst = src */
export function encodeCopy(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { src: Binding; dst: Binding; n: number },
): Promise<void> {
  return binary(ctx, batch, "copy", args.src, args.dst, args.n, 1, ["src", "dst"]);
}

/** x *= alpha, in place */
export async function encodeScale(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { x: Binding; n: number; alpha: number },
): Promise<void> {
  checkCount("scale", "n", args.n);
  checkBindingSize("scale", "x", args.x, args.n);
  const { groups, uniform } = params(ctx, args.n, args.alpha);
  batch.dispatch(await pipeline(ctx, "scale"), [args.x, uniform], groups);
}

/** y[r, c] += bias[c] for y [rows, cols] row-major: a Linear's bias added to each output row. */
export async function encodeAddRows(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { bias: Binding; y: Binding; rows: number; cols: number },
): Promise<void> {
  const { rows, cols } = args;
  checkCount("add_rows", "rows", rows);
  checkCount("add_rows", "cols", cols);
  checkBindingSize("add_rows", "bias", args.bias, cols);
  checkBindingSize("add_rows", "y", args.y, rows * cols);
  const { groups, uniform } = params(ctx, rows * cols, 1, cols);
  batch.dispatch(await pipeline(ctx, "add_rows"), [args.bias, args.y, uniform], groups);
}
