/**
 * RMSNorm (LlamaRMSNorm) forward, saving 1/rms per row for the backward pass, and the gradient
 * with respect to x (the weight is frozen in LoRA training). Rows are [rows, dim] row-major.
 * Variants, chosen per adapter by the kernel ladder (src/kernels/ladder.ts) unless `variant`
 * forces one:
 * - `row`: one invocation per row, no barriers (CPU adapters; shaders/rmsnorm.wgsl);
 * - `workgroup`: one workgroup of 64 per row, a tree reduction in workgroup memory (GPUs);
 * - `subgroup`: the same layout reducing with subgroupAdd, 2 barriers per row instead of 8
 *   (shaders/rmsnorm_subgroups.wgsl); only where the device has the `subgroups` feature.
 * No f16 variant: inputs and outputs stay f32 and the kernel is bound by memory traffic (about
 * 2 flops per 4-byte load), so f16 arithmetic would cost precision and save no time.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";
import { kernelLadder, type LadderKernel, ProbeBuffers } from "./ladder.ts";

export type RmsNormVariant = "row" | "workgroup" | "subgroup";
export const RMSNORM_VARIANTS: readonly RmsNormVariant[] = ["row", "workgroup", "subgroup"];

/** Rows per workgroup of `row`; invocations per row of `workgroup` (WG in the shaders). */
const WG = 64;
/** Invocations per row of `subgroup` unless the arguments set `workgroupSize`. */
const SUBGROUP_WG = 64;

/** Whether this device can run the variant (`subgroup` needs the `subgroups` feature). */
export function rmsNormVariantAvailable(ctx: GpuContext, variant: RmsNormVariant): boolean {
  return variant !== "subgroup" || ctx.capabilities.subgroups;
}

/** The variant for this adapter without timing: the kernel ladder's choice so far. */
export function chooseRmsNormVariant(ctx: GpuContext): RmsNormVariant {
  return kernelLadder.choice(ctx, "rmsnorm") as RmsNormVariant;
}

interface VariantChoice {
  variant?: RmsNormVariant;
  /**
   * Invocations per row of the `subgroup` variant (default 64). Tests set sizes that are not a
   * multiple of the subgroup size, so the last subgroup of each workgroup is partial.
   */
  workgroupSize?: number;
}

export interface RmsNormArgs extends VariantChoice {
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
}

export interface RmsNormBackwardArgs extends VariantChoice {
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
}

/** This kernel's entry in the kernel ladder (listed in src/kernels/registry.ts). */
export const RMSNORM_LADDER: LadderKernel = {
  name: "rmsnorm",
  variants: RMSNORM_VARIANTS,
  prior: (ctx) => ctx.isSoftware ? "row" : "workgroup",
  variantAvailable: (ctx, v) => rmsNormVariantAvailable(ctx, v as RmsNormVariant),
  shaders: [
    "rmsnorm.wgsl",
    "rmsnorm_subgroups.wgsl",
    "rmsnorm_common.wgsl",
    "workgroup_sum.wgsl",
    "subgroup_sum.wgsl",
  ],
  // Forward and backward of 512 rows of 1024, the shape of a short batch of a small model.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const [rows, dim] = [512, 1024];
    const x = bufs.random("ladder.rmsnorm.x", rows * dim, 21);
    const weight = bufs.random("ladder.rmsnorm.w", dim, 22);
    const dy = bufs.random("ladder.rmsnorm.dy", rows * dim, 23);
    const y = bufs.empty("ladder.rmsnorm.y", rows * dim * 4);
    const rstd = bufs.empty("ladder.rmsnorm.rstd", rows * 4);
    return Promise.resolve({
      run: async (batch: DispatchBatch, v: string) => {
        const variant = v as RmsNormVariant;
        await encodeRmsNorm(ctx, batch, { x, weight, y, rstd, rows, dim, eps: 1e-5, variant });
        await encodeRmsNormBackward(ctx, batch, { x, weight, rstd, dy, dx: y, rows, dim, variant });
      },
      destroy: () => bufs.destroy(),
    });
  },
};

/** shaders/rmsnorm_common.wgsl's Params (every variant, both directions). */
const RMSNORM_PARAMS = uniformLayout("Params", {
  rows: "u32",
  dim: "u32",
  eps: "f32",
  accumulate: "u32",
  groups_x: "u32",
  _pad0: "u32",
  _pad1: "u32",
  _pad2: "u32",
});

function params(ctx: GpuContext, rows: number, dim: number, eps: number, acc: boolean, gx: number) {
  return ctx.uniform(RMSNORM_PARAMS.pack({ rows, dim, eps, accumulate: acc, groups_x: gx }));
}

interface Plan {
  groups: [number, number];
  shader: string;
  shaderParams: Record<string, number>;
  /** Entry point suffix: forward_<suffix>, backward_<suffix>. */
  suffix: string;
}

async function plan(
  ctx: GpuContext,
  where: string,
  rows: number,
  args: VariantChoice,
): Promise<Plan> {
  const variant = args.variant ?? (await kernelLadder.variant(ctx, "rmsnorm") as RmsNormVariant);
  if (!RMSNORM_VARIANTS.includes(variant)) {
    throw invalidArgument(`${where}: unknown variant ${variant}`);
  }
  if (!rmsNormVariantAvailable(ctx, variant)) {
    throw invalidArgument(`${where}: variant ${variant} needs the subgroups feature`);
  }
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (variant === "row") {
    return {
      groups: grid(Math.ceil(rows / WG), max),
      shader: "rmsnorm.wgsl",
      shaderParams: {},
      suffix: "row",
    };
  }
  if (variant === "workgroup") {
    return { groups: grid(rows, max), shader: "rmsnorm.wgsl", shaderParams: {}, suffix: "wg" };
  }
  const size = args.workgroupSize ?? SUBGROUP_WG;
  if (
    !Number.isInteger(size) || size < 1 || size > ctx.limits.maxComputeInvocationsPerWorkgroup
  ) {
    throw invalidArgument(
      `${where}: workgroupSize must be 1..${ctx.limits.maxComputeInvocationsPerWorkgroup}, got ${size}`,
    );
  }
  return {
    groups: grid(rows, max),
    shader: "rmsnorm_subgroups.wgsl",
    shaderParams: { WG: size },
    suffix: "sg",
  };
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
  checkBindingSize("rmsnorm", "x", x, rows * dim);
  checkBindingSize("rmsnorm", "weight", weight, dim);
  checkBindingSize("rmsnorm", "y", y, rows * dim);
  checkBindingSize("rmsnorm", "rstd", rstd, rows);
  const pl = await plan(ctx, "rmsnorm", rows, args);
  const [gx, gy] = pl.groups;
  const pipeline = await ctx.pipeline(
    pl.shader,
    pl.shaderParams,
    `forward_${pl.suffix}`,
    RMSNORM_PARAMS,
  );
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
  checkBindingSize("rmsnorm backward", "x", x, rows * dim);
  checkBindingSize("rmsnorm backward", "weight", weight, dim);
  checkBindingSize("rmsnorm backward", "rstd", rstd, rows);
  checkBindingSize("rmsnorm backward", "dy", dy, rows * dim);
  checkBindingSize("rmsnorm backward", "dx", dx, rows * dim);
  const pl = await plan(ctx, "rmsnorm backward", rows, args);
  const [gx, gy] = pl.groups;
  const pipeline = await ctx.pipeline(
    pl.shader,
    pl.shaderParams,
    `backward_${pl.suffix}`,
    RMSNORM_PARAMS,
  );
  const u = params(ctx, rows, dim, 0, args.accumulate ?? false, gx);
  batch.dispatch(pipeline, [x, weight, rstd, dy, dx, u], [gx, gy]);
}
