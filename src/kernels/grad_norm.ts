/**
 * Global L2 norm over all LoRA gradients and torch.nn.utils.clip_grad_norm_'s scale,
 * min(1, maxNorm / (norm + 1e-6)), computed on the GPU with a fixed reduction order (two runs
 * give identical bits). The result stays on the GPU: encodeAdamW reads the scale from `out`.
 * Variants, chosen per adapter by the kernel ladder (src/kernels/ladder.ts) unless `variant`
 * forces one: `workgroup` (a tree reduction in workgroup memory; shaders/grad_norm.wgsl) and
 * `subgroup` (subgroupAdd, 2 barriers per workgroup instead of 10;
 * shaders/grad_norm_subgroups.wgsl), only where the device has the `subgroups` feature. Both
 * read each element once and sum in f32; no f16 variant, as the inputs are f32 and the sum of
 * squares needs f32's range and precision.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";
import { kernelLadder, type LadderKernel, ProbeBuffers } from "./ladder.ts";

/** shaders/grad_norm_common.wgsl's uniforms: one per tensor of the partial pass, one to finish. */
const PARTIAL_PARAMS = uniformLayout("PartialParams", {
  n: "u32",
  base: "u32",
  groups_x: "u32",
  // The tensor's first element in its binding.
  offset: "u32",
});
const FINISH_PARAMS = uniformLayout("FinishParams", {
  count: "u32",
  clip: "u32",
  max_norm: "f32",
  _pad: "u32",
});

/** Elements summed per workgroup of the partial pass (PER_GROUP in the shaders). */
const PER_GROUP = 2048;
/** Invocations per workgroup (WG in shaders/grad_norm.wgsl; the subgroup variant's default). */
const WG = 256;

export type GradNormVariant = "workgroup" | "subgroup";
export const GRAD_NORM_VARIANTS: readonly GradNormVariant[] = ["workgroup", "subgroup"];

/** Whether this device can run the variant (`subgroup` needs the `subgroups` feature). */
export function gradNormVariantAvailable(ctx: GpuContext, variant: GradNormVariant): boolean {
  return variant !== "subgroup" || ctx.capabilities.subgroups;
}

export interface GradTensor {
  buffer: Binding;
  /** Elements. */
  n: number;
  /** First element within `buffer` (no alignment needed, unlike a Binding offset); default 0. */
  offset?: number;
}

export interface GlobalNormArgs {
  tensors: GradTensor[];
  /** f32 [2]: [norm, clipScale]. */
  out: Binding;
  /** 0 (or less): no clipping, clipScale = 1. */
  maxNorm: number;
  /** At least globalNormScratchBytes(tensors) bytes. */
  scratch: Binding;
  /** Forces a variant (tests, benchmarks); default the kernel ladder's choice. */
  variant?: GradNormVariant;
  /**
   * Invocations per workgroup of the `subgroup` variant (default 256). Tests set sizes that are
   * not a multiple of the subgroup size, so the last subgroup of each workgroup is partial.
   */
  workgroupSize?: number;
  /**
   * Splits the partial pass's grid as if the adapter allowed this many workgroups per dimension
   * (tests: a 2-D grid without a 134M-element tensor); default the adapter's limit.
   */
  maxWorkgroupsPerDimension?: number;
}

/** Scratch bytes for the per-workgroup partial sums of these tensors. */
export function globalNormScratchBytes(tensors: Array<{ n: number } | number>): number {
  let partials = 0;
  for (const t of tensors) partials += Math.ceil((typeof t === "number" ? t : t.n) / PER_GROUP);
  return Math.max(1, partials) * 4;
}

/** This kernel's entry in the kernel ladder (listed in src/kernels/registry.ts). */
export const GRAD_NORM_LADDER: LadderKernel = {
  name: "grad_norm",
  variants: GRAD_NORM_VARIANTS,
  prior: () => "workgroup",
  variantAvailable: (ctx, v) => gradNormVariantAvailable(ctx, v as GradNormVariant),
  shaders: [
    "grad_norm.wgsl",
    "grad_norm_subgroups.wgsl",
    "grad_norm_common.wgsl",
    "workgroup_sum.wgsl",
    "subgroup_sum.wgsl",
  ],
  // Eight rank-16 LoRA factors of a 4096-wide layer: 8 tensors of 64K gradients.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const n = 16 * 4096;
    const tensors = Array.from({ length: 8 }, (_, i) => ({
      buffer: bufs.random(`ladder.grad_norm.g${i}`, n, 31 + i),
      n,
    }));
    const out = bufs.empty("ladder.grad_norm.out", 8);
    const scratch = bufs.empty("ladder.grad_norm.scratch", globalNormScratchBytes(tensors));
    return Promise.resolve({
      run: (batch: DispatchBatch, v: string) =>
        encodeGlobalNorm(ctx, batch, {
          tensors,
          out,
          maxNorm: 1,
          scratch,
          variant: v as GradNormVariant,
        }),
      destroy: () => bufs.destroy(),
    });
  },
};

async function pipelines(ctx: GpuContext, args: GlobalNormArgs, where: string) {
  const variant = args.variant ??
    (await kernelLadder.variant(ctx, "grad_norm") as GradNormVariant);
  if (!GRAD_NORM_VARIANTS.includes(variant)) {
    throw invalidArgument(`${where}: unknown variant ${variant}`);
  }
  if (!gradNormVariantAvailable(ctx, variant)) {
    throw invalidArgument(`${where}: variant ${variant} needs the subgroups feature`);
  }
  let shader = "grad_norm.wgsl";
  let params = {};
  if (variant === "subgroup") {
    const size = args.workgroupSize ?? WG;
    const max = ctx.limits.maxComputeInvocationsPerWorkgroup;
    if (!Number.isInteger(size) || size < 1 || size > max) {
      throw invalidArgument(`${where}: workgroupSize must be 1..${max}, got ${size}`);
    }
    shader = "grad_norm_subgroups.wgsl";
    params = { WG: size };
  }
  return {
    partial: await ctx.pipeline(shader, params, "partial", PARTIAL_PARAMS),
    finish: await ctx.pipeline(shader, params, "finish", FINISH_PARAMS),
  };
}

export async function encodeGlobalNorm(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: GlobalNormArgs,
): Promise<void> {
  const where = "grad_norm";
  if (!Number.isFinite(args.maxNorm)) {
    throw invalidArgument(`${where}: maxNorm must be finite, got ${args.maxNorm}`);
  }
  checkBindingSize(where, "out", args.out, 2);
  const scratchBytes = globalNormScratchBytes(args.tensors);
  checkBindingSize(where, "scratch", args.scratch, scratchBytes / 4);
  const maxPerDim = args.maxWorkgroupsPerDimension ?? ctx.limits.maxComputeWorkgroupsPerDimension;
  if (!Number.isInteger(maxPerDim) || maxPerDim < 1) {
    throw invalidArgument(`${where}: maxWorkgroupsPerDimension must be >= 1, got ${maxPerDim}`);
  }
  args.tensors.forEach((t, i) => {
    checkCount(where, `tensors[${i}].n`, t.n, 0);
    const offset = t.offset ?? 0;
    checkCount(where, `tensors[${i}].offset`, offset, 0);
    checkBindingSize(where, `tensors[${i}]`, t.buffer, offset + t.n);
  });
  const { partial, finish } = await pipelines(ctx, args, where);
  let base = 0;
  for (const t of args.tensors) {
    if (t.n === 0) continue;
    const groups = Math.ceil(t.n / PER_GROUP);
    const [gx, gy] = grid(groups, maxPerDim);
    const u = ctx.uniform(
      PARTIAL_PARAMS.pack({ n: t.n, base, groups_x: gx, offset: t.offset ?? 0 }),
    );
    batch.dispatch(partial, [t.buffer, args.scratch, u], [gx, gy]);
    base += groups;
  }
  const u = FINISH_PARAMS.pack({ count: base, clip: args.maxNorm > 0, max_norm: args.maxNorm });
  batch.dispatch(finish, [args.scratch, args.out, ctx.uniform(u)], [1]);
}
