/**
 * RMSNorm (LlamaRMSNorm) forward, saving 1/rms per row for the backward pass, and the gradient
 * with respect to x (the weight is frozen in LoRA training). Rows are [rows, dim] row-major.
 * Variants: `row` (one invocation per row, no barriers: CPU adapters) and `workgroup` (one
 * workgroup per row with a reduction in workgroup memory: real GPUs).
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkBinding, checkCount } from "./matmul.ts";

export type RmsNormVariant = "row" | "workgroup";
export const RMSNORM_VARIANTS: readonly RmsNormVariant[] = ["row", "workgroup"];

const WG = 64;

export function chooseRmsNormVariant(ctx: GpuContext): RmsNormVariant {
  return ctx.isSoftware ? "row" : "workgroup";
}

export interface RmsNormArgs {
  /** [rows, dim] */
  x: Binding;
  /** [dim] */
  weight: Binding;
  /** [rows, dim] output; must not alias x. */
  y: Binding;
  /** [rows] output: 1/sqrt(mean(x²)+eps), kept for the backward pass. */
  rstd: Binding;
  rows: number;
  dim: number;
  eps: number;
  variant?: RmsNormVariant;
}

export interface RmsNormBackwardArgs {
  x: Binding;
  weight: Binding;
  /** [rows] from the forward pass. */
  rstd: Binding;
  /** [rows, dim] gradient of the loss w.r.t. y. */
  dy: Binding;
  /** [rows, dim] gradient w.r.t. x (written, or added to when accumulate). */
  dx: Binding;
  rows: number;
  dim: number;
  accumulate?: boolean;
  variant?: RmsNormVariant;
}

function params(ctx: GpuContext, rows: number, dim: number, eps: number, acc: boolean, gx: number) {
  const u = new Uint32Array(8);
  u.set([rows, dim, 0, acc ? 1 : 0, gx]);
  new Float32Array(u.buffer)[2] = eps;
  return ctx.uniform(u);
}

function dispatchShape(ctx: GpuContext, rows: number, variant: RmsNormVariant) {
  if (!RMSNORM_VARIANTS.includes(variant)) {
    throw invalidArgument(`rmsnorm: unknown variant ${variant}`);
  }
  const groups = variant === "row" ? Math.ceil(rows / WG) : rows;
  return grid(groups, ctx.limits.maxComputeWorkgroupsPerDimension);
}

export async function encodeRmsNorm(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: RmsNormArgs,
): Promise<void> {
  const { x, weight, y, rstd, rows, dim, eps } = args;
  checkCount("rmsnorm", "rows", rows);
  checkCount("rmsnorm", "dim", dim);
  if (!(eps >= 0)) throw invalidArgument(`rmsnorm: eps must be >= 0, got ${eps}`);
  checkBinding("rmsnorm", "x", x, rows * dim);
  checkBinding("rmsnorm", "weight", weight, dim);
  checkBinding("rmsnorm", "y", y, rows * dim);
  checkBinding("rmsnorm", "rstd", rstd, rows);
  const variant = args.variant ?? chooseRmsNormVariant(ctx);
  const [gx, gy] = dispatchShape(ctx, rows, variant);
  const entry = variant === "row" ? "forward_row" : "forward_wg";
  const pipeline = await ctx.pipeline("rmsnorm.wgsl", {}, entry);
  batch.dispatch(pipeline, [x, weight, y, rstd, params(ctx, rows, dim, eps, false, gx)], [gx, gy]);
}

export async function encodeRmsNormBackward(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: RmsNormBackwardArgs,
): Promise<void> {
  const { x, weight, rstd, dy, dx, rows, dim } = args;
  checkCount("rmsnorm backward", "rows", rows);
  checkCount("rmsnorm backward", "dim", dim);
  checkBinding("rmsnorm backward", "x", x, rows * dim);
  checkBinding("rmsnorm backward", "weight", weight, dim);
  checkBinding("rmsnorm backward", "rstd", rstd, rows);
  checkBinding("rmsnorm backward", "dy", dy, rows * dim);
  checkBinding("rmsnorm backward", "dx", dx, rows * dim);
  const variant = args.variant ?? chooseRmsNormVariant(ctx);
  const [gx, gy] = dispatchShape(ctx, rows, variant);
  const entry = variant === "row" ? "backward_row" : "backward_wg";
  const pipeline = await ctx.pipeline("rmsnorm.wgsl", {}, entry);
  const u = params(ctx, rows, dim, 0, args.accumulate ?? false, gx);
  batch.dispatch(pipeline, [x, weight, rstd, dy, dx, u], [gx, gy]);
}
