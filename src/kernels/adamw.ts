/**
 * The bitsandbytes 32-bit AdamW step (../../../shared/REFERENCE.md §9) in float32, one element
 * per invocation. Every tensor argument may be a slice, so a paged optimizer streams pages of
 * (param, grad, m, v) through it; an element's update depends only on that element, so paged
 * and resident runs give identical bits. Slices are Bindings, so pages start at multiples of 256
 * bytes (64 elements); a page may end anywhere (`n`).
 * Variants, chosen per adapter by the kernel ladder (src/kernels/ladder.ts) unless `variant`
 * forces one: `scalar`, one element per invocation, and `vec4`, four per invocation with 16-byte
 * loads and stores (the last n % 4 elements by the scalar entry). Both do the same f32
 * operations in the same order, so they give the same bits. There is no f16 or subgroup variant:
 * the update is elementwise (nothing to reduce), bitsandbytes keeps the moments and the update
 * in f32, and the buffers stay f32, so f16 could only round values the f32 kernel keeps, and
 * would change the bits, while the kernel's cost is its 28 bytes of memory traffic per element.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { bindingParts } from "./bindings.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";
import { kernelLadder, type LadderKernel, ProbeBuffers } from "./ladder.ts";

export type AdamWVariant = "scalar" | "vec4";
export const ADAMW_VARIANTS: readonly AdamWVariant[] = ["scalar", "vec4"];

/** Invocations per workgroup of every entry point of shaders/adamw.wgsl. */
const WG = 256;

/** shaders/adamw.wgsl's Params (every entry point). */
const ADAMW_PARAMS = uniformLayout("Params", {
  n: "u32",
  groups_x: "u32",
  scale_index: "u32",
  decay_on: "u32",
  beta1: "f32",
  beta2: "f32",
  one_minus_beta1: "f32",
  one_minus_beta2: "f32",
  step_size: "f32",
  eps_c2: "f32",
  decay: "f32",
  // `main*`: the first element to update; `main_vec4*`: 0, and n counts vec4s.
  first: "u32",
});

export interface AdamWArgs {
  param: Binding;
  grad: Binding;
  /** First moment, float32, same length as param. */
  m: Binding;
  /** Second moment. */
  v: Binding;
  n: number;
  lr: number;
  /** default 0.9 */
  beta1?: number;
  /** default 0.999 */
  beta2?: number;
  /** default 1e-8 */
  eps?: number;
  /** Decoupled decay applied after the step (p *= 1 - lr*wd); default 0. */
  weightDecay?: number;
  /** 1 for the first step. */
  step: number;
  /**
   * Multiplies the gradient (bitsandbytes' gnorm_scale): a buffer holding the clip scale at
   * element `gradScaleIndex` (default 0), e.g. `{gradScale: normOut, gradScaleIndex: 1}` with
   * the `[norm, clipScale]` output of encodeGlobalNorm. Omitted: scale 1.
   */
  gradScale?: Binding;
  gradScaleIndex?: number;
  /** Forces a variant (tests, benchmarks); default the kernel ladder's choice. */
  variant?: AdamWVariant;
  /**
   * Splits the grid as if the adapter allowed this many workgroups per dimension (tests: a 2-D
   * grid without 17M-element tensors); default the adapter's limit.
   */
  maxWorkgroupsPerDimension?: number;
}

/** This kernel's entry in the kernel ladder (listed in src/kernels/registry.ts). */
export const ADAMW_LADDER: LadderKernel = {
  name: "adamw",
  variants: ADAMW_VARIANTS,
  prior: () => "scalar",
  shaders: ["adamw.wgsl"],
  // One step over 256K parameters (a rank-16 adapter of four 4096-wide projections).
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const n = 4 * 16 * 4096;
    const state = {
      param: bufs.random("ladder.adamw.param", n, 41),
      grad: bufs.random("ladder.adamw.grad", n, 42),
      m: bufs.upload("ladder.adamw.m", new Float32Array(n)),
      v: bufs.upload("ladder.adamw.v", new Float32Array(n)),
    };
    return Promise.resolve({
      run: (batch: DispatchBatch, v: string) =>
        encodeAdamW(ctx, batch, {
          ...state,
          n,
          lr: 1e-4,
          weightDecay: 0.01,
          step: 1,
          variant: v as AdamWVariant,
        }),
      destroy: () => bufs.destroy(),
    });
  },
};

/** The per-step float32 scalars, computed as the CUDA kernel does (powf, sqrtf in float). */
export function adamwScalars(args: {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  step: number;
}) {
  const f = Math.fround;
  const b1 = f(args.beta1 ?? 0.9);
  const b2 = f(args.beta2 ?? 0.999);
  const eps = f(args.eps ?? 1e-8);
  const lr = f(args.lr);
  const wd = f(args.weightDecay ?? 0);
  const c1 = f(1 - f(Math.pow(b1, args.step)));
  const c2 = f(Math.sqrt(f(1 - f(Math.pow(b2, args.step)))));
  return {
    beta1: b1,
    beta2: b2,
    oneMinusBeta1: f(1 - b1),
    oneMinusBeta2: f(1 - b2),
    stepSize: f(f(-lr * c2) / c1),
    epsC2: f(eps * c2),
    decayOn: wd > 0,
    decay: f(1 - f(lr * wd)),
  };
}

export async function encodeAdamW(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: AdamWArgs,
): Promise<void> {
  const { n, step } = args;
  const where = "adamw";
  checkCount(where, "n", n, 0);
  if (!Number.isInteger(step) || step < 1) {
    throw invalidArgument(`${where}: step must be an integer >= 1, got ${step}`);
  }
  if (!Number.isFinite(args.lr)) {
    throw invalidArgument(`${where}: lr must be finite, got ${args.lr}`);
  }
  for (const [name, b] of [["beta1", args.beta1], ["beta2", args.beta2]] as const) {
    if (b !== undefined && !(b >= 0 && b < 1)) {
      throw invalidArgument(`${where}: ${name} must be in [0, 1), got ${b}`);
    }
  }
  if (args.eps !== undefined && !(args.eps >= 0)) {
    throw invalidArgument(`${where}: eps must be >= 0, got ${args.eps}`);
  }
  if (args.weightDecay !== undefined && !(args.weightDecay >= 0)) {
    throw invalidArgument(`${where}: weightDecay must be >= 0, got ${args.weightDecay}`);
  }
  if (n === 0) return;
  for (
    const [name, b] of [["param", args.param], ["grad", args.grad], ["m", args.m], [
      "v",
      args.v,
    ]] as const
  ) {
    checkBindingSize(where, name, b, n);
  }
  const scaleIndex = args.gradScaleIndex ?? 0;
  if (args.gradScale) checkBindingSize(where, "gradScale", args.gradScale, scaleIndex + 1);

  const maxPerDim = args.maxWorkgroupsPerDimension ?? ctx.limits.maxComputeWorkgroupsPerDimension;
  if (!Number.isInteger(maxPerDim) || maxPerDim < 1) {
    throw invalidArgument(`${where}: maxWorkgroupsPerDimension must be >= 1, got ${maxPerDim}`);
  }
  const variant = args.variant ?? (await kernelLadder.variant(ctx, "adamw") as AdamWVariant);
  if (!ADAMW_VARIANTS.includes(variant)) {
    throw invalidArgument(`${where}: unknown variant ${variant}`);
  }

  const s = adamwScalars(args);
  const scaled = args.gradScale ? "_scaled" : "";
  /** Updates `count` elements (vec4s for the vec4 entry) from element `first` on. */
  const dispatch = async (entry: string, count: number, first: number, tensors: Binding[]) => {
    const [gx, gy] = grid(Math.ceil((count - first) / WG), maxPerDim);
    const u = ADAMW_PARAMS.pack({
      n: count,
      groups_x: gx,
      scale_index: scaleIndex,
      decay_on: s.decayOn,
      beta1: s.beta1,
      beta2: s.beta2,
      one_minus_beta1: s.oneMinusBeta1,
      one_minus_beta2: s.oneMinusBeta2,
      step_size: s.stepSize,
      eps_c2: s.epsC2,
      decay: s.decay,
      first,
    });
    const bindings: Array<Binding | GPUBuffer> = [...tensors, ctx.uniform(u)];
    if (args.gradScale) bindings.push(args.gradScale);
    const pipeline = await ctx.pipeline("adamw.wgsl", {}, entry + scaled, ADAMW_PARAMS);
    batch.dispatch(pipeline, bindings, [gx, gy]);
  };
  const tensors = [args.param, args.grad, args.m, args.v];
  const quads = variant === "vec4" ? Math.floor(n / 4) : 0;
  if (quads > 0) {
    // The same slices cut to whole vec4s: a vec4 array binding ignores a trailing partial one.
    const prefix = tensors.map((b) => ({ ...bindingParts(b), size: quads * 16 }));
    await dispatch("main_vec4", quads, 0, prefix);
  }
  if (4 * quads < n) await dispatch("main", n, 4 * quads, tensors);
}
