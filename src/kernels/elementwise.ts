/**
 * Elementwise f32 vector ops for the training graph: y += x (residuals, gradient sums),
 * x *= alpha, dst = src, y += alpha·x, and y[r, :] += bias (a linear's bias on every row).
 * The two operands of add/axpy/copy/addRows must not overlap.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { checkBinding, checkCount } from "./matmul.ts";

function params(ctx: GpuContext, n: number, alpha: number, cols = 0) {
  const [gx, gy] = grid(Math.ceil(n / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const u = new Uint32Array([n, 0, gx, cols]);
  new Float32Array(u.buffer)[1] = alpha;
  return { groups: [gx, gy] as [number, number], uniform: ctx.uniform(u) };
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
  checkBinding(entry, names[0], x, n);
  checkBinding(entry, names[1], y, n);
  const { groups, uniform } = params(ctx, n, alpha);
  const pipeline = await ctx.pipeline("elementwise.wgsl", {}, entry);
  batch.dispatch(pipeline, [x, y, uniform], groups);
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
  checkBinding("scale", "x", args.x, args.n);
  const { groups, uniform } = params(ctx, args.n, args.alpha);
  const pipeline = await ctx.pipeline("elementwise.wgsl", {}, "scale");
  batch.dispatch(pipeline, [args.x, uniform], groups);
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
  checkBinding("add_rows", "bias", args.bias, cols);
  checkBinding("add_rows", "y", args.y, rows * cols);
  const { groups, uniform } = params(ctx, rows * cols, 1, cols);
  const pipeline = await ctx.pipeline("elementwise.wgsl", {}, "add_rows");
  batch.dispatch(pipeline, [args.bias, args.y, uniform], groups);
}
