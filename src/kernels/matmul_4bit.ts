/**
 * Matmuls through a frozen 4-bit weight (shaders/matmul_4bit.wgsl), W dequantized in
 * registers, never materialized:
 *   encodeMatmul4bit:  Y[m, out] (=|+=) X[m, in] . W^T   (forward)
 *   encodeMatmul4bitT: dX[m, in] (=|+=) dY[m, out] . W   (backward to the input)
 * Variants, chosen per adapter by the kernel ladder, forward and backward apart (or forced
 * with `variant`); each joins the ladder only where the device has what it needs:
 * - "regblock": register tiles, no barriers, vec4 activation loads, code tables as shader
 *   constants; what llvmpipe runs fast. From m >= WIDE_MIN_M rows it runs the `_wide` kernels
 *   (larger tiles: more arithmetic per load, but rows past m are wasted work, so small m keeps
 *   the narrow tiles). Shapes without whole packed words per row (in % 8 != 0; narrow backward
 *   also out % 4 != 0) take its scalar `_any` kernels.
 * - "tiled": activation and dequantized-W tiles staged in workgroup memory; for real GPUs.
 * - "tiled_f16" (shaders/matmul_4bit_f16.wgsl, needs shader-f16): "tiled" with f16 tiles, f32
 *   arithmetic.
 * - "subgroup" (matmul_4bit_subgroup.wgsl, needs subgroups): for m <= GEMV_MAX_M rows a GEMV
 *   kernel that streams W once with subgroup reductions; larger m run "tiled". f32 throughout.
 * - "subgroup_matrix" (matmul_4bit_subgroup_matrix.wgsl, needs a f16 -> f32 subgroup-matrix
 *   config): W tiles dequantized to f16 in workgroup memory, multiplied on the matrix units with
 *   f32 accumulation; m <= GEMV_MAX_M takes the GEMV kernel (streaming W is the whole cost).
 * The f16 variants round activations and weights to f16 (src/kernels/matmul_features.ts);
 * a call without `variant` gets one only with `allowF16`, else the fastest f32 variant timed.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import type { ShaderParams } from "../gpu/shader_source.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkBindingLimit, checkBindingSize, checkCount } from "./shape_checks.ts";
import { dequantShaderParams, type GpuQuantWeight, offsetBits } from "./quant_weight.ts";
import { kernelLadder, type LadderKernel, ProbeBuffers } from "./ladder.ts";
import {
  deviceMatrixPlan,
  hasMatmulFeature,
  type MatmulFeature,
  matmulPipeline,
  precisionChoice,
  type SubgroupMatrixPlan,
  subgroupMatrixShaderParams,
  subgroupWorkgroupSize,
  type WgslTransform,
} from "./matmul_features.ts";

export type Matmul4bitVariant =
  | "regblock"
  | "tiled"
  | "tiled_f16"
  | "subgroup"
  | "subgroup_matrix";
export const MATMUL_4BIT_VARIANTS: readonly Matmul4bitVariant[] = [
  "regblock",
  "tiled",
  "tiled_f16",
  "subgroup",
  "subgroup_matrix",
];
/** The variants with f32 activations, weights and arithmetic. */
export const MATMUL_4BIT_F32_VARIANTS: readonly Matmul4bitVariant[] = [
  "regblock",
  "tiled",
  "subgroup",
];

const NEEDS: Record<Matmul4bitVariant, MatmulFeature | undefined> = {
  regblock: undefined,
  tiled: undefined,
  tiled_f16: "f16",
  subgroup: "subgroups",
  subgroup_matrix: "subgroup_matrix",
};

/** Whether this device can run `variant`. */
export function matmul4bitVariantAvailable(ctx: GpuContext, variant: Matmul4bitVariant): boolean {
  const need = NEEDS[variant];
  return need === undefined || hasMatmulFeature(ctx, need);
}

export function availableMatmul4bitVariants(ctx: GpuContext): Matmul4bitVariant[] {
  return MATMUL_4BIT_VARIANTS.filter((v) => matmul4bitVariantAvailable(ctx, v));
}

const SHADER = "matmul_4bit.wgsl";
/** shaders/matmul_4bit_common.wgsl's Params, which every variant's shader includes. */
const MATMUL_4BIT_PARAMS = uniformLayout("Params", {
  m: "u32",
  n_in: "u32",
  n_out: "u32",
  accumulate: "u32",
  groups_x: "u32",
  tiles: "u32",
  offset_bits: "u32",
  block_shift: "u32",
});
const REGBLOCK_WG = 64;
const TILE = 64;
/**
 * The wide kernels' tiles (llvmpipe, measured on the Llama shapes ÷8): forward 32 rows x 16
 * outputs, backward 16 rows x 4 packed words (32 columns); small workgroups so that m = 128 still
 * gives every core several. Forward 32 x 32 runs about as fast but llvmpipe takes ~65 s to
 * compile it (32 x 16: ~16 s, once per machine with Mesa's shader disk cache).
 */
const WIDE = {
  forward: { tm: 32, cols: 16, minM: 32 },
  backward: { tm: 16, cols: 32, minM: 32 },
};
const WIDE_WG = 16;
const WIDE_OC = WIDE.forward.cols;
const WIDE_NW = WIDE.backward.cols / 8;
/** Rows up to which "subgroup" and "subgroup_matrix" run the GEMV kernels. */
export const GEMV_MAX_M = 16;
/** GEMV: outputs per forward workgroup (R in the shader); rows per backward workgroup. */
const GEMV_OUTPUTS = 4;
const GEMV_BACKWARD_MAX_TM = 8;

/**
 * The forward variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts; the
 * backward product is laddered on its own as "matmul_4bit_t").
 */
export function chooseMatmul4bitVariant(ctx: GpuContext): Matmul4bitVariant {
  return kernelLadder.choice(ctx, "matmul_4bit") as Matmul4bitVariant;
}

/**
 * A random double-quantized weight (any codes are valid weights) in probe buffers (scratch), and
 * activations for a 64-row product, as the ladder's probe of either direction.
 */
function probe4bit(ctx: GpuContext, backward: boolean) {
  const bufs = new ProbeBuffers(ctx);
  const [m, nIn, nOut, blocksize] = [64, 256, 512, 64];
  const blocks = (nIn * nOut) / blocksize;
  const packed = bufs.randomBytes("ladder.w4.packed", (nIn * nOut) / 2, 3);
  const absmax = bufs.randomBytes("ladder.w4.absmax", blocks, 4);
  const nestedAbsmax = bufs.upload(
    "ladder.w4.nested",
    new Float32Array(Math.ceil(blocks / 256)).fill(0.1),
  );
  const code = (n: number) => Float32Array.from({ length: n }, (_, i) => -1 + (2 * i) / (n - 1));
  const w: GpuQuantWeight = {
    label: "ladder.w4",
    quantType: "nf4",
    blocksize,
    outFeatures: nOut,
    inFeatures: nIn,
    doubleQuant: true,
    packed,
    absmax,
    nestedAbsmax,
    bindings: [packed, absmax, nestedAbsmax],
    quantMap: code(16),
    nestedMap: code(256),
    offset: 0.05,
    destroy: () => {},
  };
  const a = bufs.random("ladder.w4.a", m * (backward ? nOut : nIn), 5);
  const b = bufs.empty("ladder.w4.b", m * (backward ? nIn : nOut) * 4);
  return Promise.resolve({
    run: async (batch: DispatchBatch, v: string) => {
      const variant = v as Matmul4bitVariant;
      if (backward) await encodeMatmul4bitT(ctx, batch, { dy: a, w, dx: b, m, variant });
      else await encodeMatmul4bit(ctx, batch, { x: a, w, y: b, m, variant });
    },
    destroy: () => bufs.destroy(),
  });
}

/** The ladder's entry for either direction (listed in src/kernels/registry.ts). */
function matmul4bitLadder(backward: boolean): LadderKernel {
  return {
    name: backward ? "matmul_4bit_t" : "matmul_4bit",
    variants: MATMUL_4BIT_VARIANTS,
    prior: (ctx) => ctx.isSoftware ? "regblock" : "tiled",
    variantAvailable: (ctx, v) => matmul4bitVariantAvailable(ctx, v as Matmul4bitVariant),
    shaders: [
      SHADER,
      "matmul_4bit_common.wgsl",
      "matmul_4bit_tiled_store.wgsl",
      "matmul_4bit_f16.wgsl",
      "matmul_4bit_subgroup.wgsl",
      "matmul_4bit_subgroup_matrix.wgsl",
      "dequant_4bit.wgsl",
    ],
    probe: (ctx) => probe4bit(ctx, backward),
  };
}

export const MATMUL_4BIT_LADDER = matmul4bitLadder(false);
export const MATMUL_4BIT_T_LADDER = matmul4bitLadder(true);

export interface Matmul4bitArgs {
  /** X [m, in] f32. */
  x: Binding;
  w: GpuQuantWeight;
  /** Y [m, out] f32. */
  y: Binding;
  m: number;
  /** Add into Y instead of overwriting it. */
  accumulate?: boolean;
  /** Force a variant (tests, benchmarks); default the kernel ladder's choice. */
  variant?: Matmul4bitVariant;
  /** Without `variant`: the ladder's choice may be an f16 variant (X and W rounded to f16).
   * Default false: the fastest f32 variant. */
  allowF16?: boolean;
}

export interface Matmul4bitTArgs {
  /** dY [m, out] f32. */
  dy: Binding;
  w: GpuQuantWeight;
  /** dX [m, in] f32. */
  dx: Binding;
  m: number;
  accumulate?: boolean;
  variant?: Matmul4bitVariant;
  allowF16?: boolean;
}

/** Y[m, out] (=|+=) X[m, in] . W^T. */
export async function encodeMatmul4bit(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: Matmul4bitArgs,
): Promise<void> {
  const { w, m } = args;
  checkShapes(ctx, "encodeMatmul4bit", w, m, [
    ["x", args.x, m * w.inFeatures],
    ["y", args.y, m * w.outFeatures],
  ]);
  const variant = args.variant ?? await ladderVariant(ctx, "matmul_4bit", args.allowF16);
  requireVariant(ctx, "encodeMatmul4bit", variant);
  const plan = planDispatch(ctx, w, variant, {
    entry: "forward",
    m,
    // Regblock: up to 16 rows x 4 outputs per invocation; vec4 rows of X need in % 8 == 0.
    maxTm: 16,
    colsPerInvocation: 4,
    nCols: w.outFeatures,
    vectorized: w.inFeatures % 8 === 0,
    wide: w.inFeatures % 8 === 0,
  });
  await dispatch(ctx, batch, w, plan, args.x, args.y, m, args.accumulate);
}

/** dX[m, in] (=|+=) dY[m, out] . W. */
export async function encodeMatmul4bitT(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: Matmul4bitTArgs,
): Promise<void> {
  const { w, m } = args;
  checkShapes(ctx, "encodeMatmul4bitT", w, m, [
    ["dy", args.dy, m * w.outFeatures],
    ["dx", args.dx, m * w.inFeatures],
  ]);
  const variant = args.variant ?? await ladderVariant(ctx, "matmul_4bit_t", args.allowF16);
  requireVariant(ctx, "encodeMatmul4bitT", variant);
  const plan = planDispatch(ctx, w, variant, {
    entry: "backward",
    m,
    // Regblock: up to 8 rows x 8 columns (one packed word); vec4 dY needs out % 4 == 0.
    maxTm: 8,
    colsPerInvocation: 8,
    nCols: w.inFeatures,
    vectorized: w.inFeatures % 8 === 0 && w.outFeatures % 4 === 0,
    wide: w.inFeatures % 8 === 0,
  });
  await dispatch(ctx, batch, w, plan, args.dy, args.dx, m, args.accumulate);
}

async function ladderVariant(
  ctx: GpuContext,
  kernel: string,
  allowF16 = false,
): Promise<Matmul4bitVariant> {
  const d = await kernelLadder.decide(ctx, kernel);
  const fallback = ctx.isSoftware ? "regblock" : "tiled";
  return precisionChoice(d, MATMUL_4BIT_F32_VARIANTS, fallback, allowF16) as Matmul4bitVariant;
}

/** Throws naming the op, the variant and the missing feature when the device lacks it. */
function requireVariant(ctx: GpuContext, op: string, variant: Matmul4bitVariant): void {
  if (!MATMUL_4BIT_VARIANTS.includes(variant)) {
    throw invalidArgument(`${op}: unknown variant ${variant}`);
  }
  if (!matmul4bitVariantAvailable(ctx, variant)) {
    throw invalidArgument(
      `${op}: variant ${variant} needs ${NEEDS[variant]}, which ${ctx.adapterKey} lacks`,
    );
  }
}

interface Plan {
  shader: string;
  entry: string;
  /** The kernel's template parameters besides the weight's (dequant, ALIGNED). */
  params: ShaderParams;
  workgroups: [number, number, number];
  /** Workgroups along x of a 1-D grid (unused by the 2-D regblock grids). */
  groupsX: number;
  tiles: number;
  transform?: WgslTransform;
}

interface PlanShape {
  entry: "forward" | "backward";
  m: number;
  maxTm: number;
  colsPerInvocation: number;
  nCols: number;
  /** The regblock (narrow) kernels' vec4 loads fit the shape. */
  vectorized: boolean;
  /** The wide kernels' loads fit the shape. */
  wide: boolean;
}

/** matmul_4bit.wgsl's template besides the weight's; fixed values where a kernel ignores one
 * keep to one pipeline per entry. */
function regblockParams(tm: number, wg: number): ShaderParams {
  return { TM: tm, WG: wg, OC: WIDE_OC, NW: WIDE_NW };
}

function planDispatch(
  ctx: GpuContext,
  w: GpuQuantWeight,
  variant: Matmul4bitVariant,
  o: PlanShape,
): Plan {
  const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
  const sg = subgroupWorkgroupSize(ctx);
  switch (variant) {
    case "tiled":
    case "tiled_f16":
      return tiledPlan(ctx, variant, o);
    case "subgroup":
      return o.m <= GEMV_MAX_M ? gemvPlan(ctx, w, o, sg!) : tiledPlan(ctx, "tiled", o);
    case "subgroup_matrix":
      return o.m <= GEMV_MAX_M && sg !== undefined
        ? gemvPlan(ctx, w, o, sg)
        : subgroupMatrixPlan(ctx, deviceMatrixPlan(ctx)!, o);
    case "regblock":
      break;
  }
  const wide = WIDE[o.entry];
  if (o.wide && o.m >= wide.minM) {
    const tiles = Math.ceil(o.nCols / wide.cols);
    const gx = Math.ceil(tiles / WIDE_WG);
    const gy = Math.ceil(o.m / wide.tm);
    if (gx <= maxDim && gy <= maxDim) {
      return {
        shader: SHADER,
        entry: `${o.entry}_wide`,
        params: regblockParams(wide.tm, WIDE_WG),
        workgroups: [gx, gy, 1],
        groupsX: gx,
        tiles,
      };
    }
  }
  // Few register-tile heights, so few pipelines: 1, 4, then the largest.
  const tm = o.m >= o.maxTm ? o.maxTm : o.m >= 4 ? 4 : 1;
  const tiles = Math.ceil(o.nCols / o.colsPerInvocation);
  // 2-D grid: x over column tiles, y over row blocks, so a workgroup shares its rows.
  const gx = Math.ceil(tiles / REGBLOCK_WG);
  const gy = Math.ceil(o.m / tm);
  if (o.vectorized && gx <= maxDim && gy <= maxDim) {
    return {
      shader: SHADER,
      entry: `${o.entry}_regblock`,
      params: regblockParams(tm, REGBLOCK_WG),
      workgroups: [gx, gy, 1],
      groupsX: gx,
      tiles,
    };
  }
  const anyTm = Math.min(tm, 4);
  const [ax, ay] = grid(Math.ceil((tiles * Math.ceil(o.m / anyTm)) / REGBLOCK_WG), maxDim);
  return {
    shader: SHADER,
    entry: `${o.entry}_regblock_any`,
    params: regblockParams(anyTm, REGBLOCK_WG),
    workgroups: [ax, ay, 1],
    groupsX: ax,
    tiles,
  };
}

/** The workgroup-tiled kernels: 64 x 64 outputs per workgroup, 1-D grid. */
function tiledPlan(ctx: GpuContext, variant: "tiled" | "tiled_f16", o: PlanShape): Plan {
  const tiles = Math.ceil(o.nCols / TILE);
  const [gx, gy] = grid(tiles * Math.ceil(o.m / TILE), ctx.limits.maxComputeWorkgroupsPerDimension);
  const f16 = variant === "tiled_f16";
  return {
    shader: f16 ? "matmul_4bit_f16.wgsl" : SHADER,
    entry: `${o.entry}_${variant}`,
    params: f16 ? {} : regblockParams(1, REGBLOCK_WG),
    workgroups: [gx, gy, 1],
    groupsX: gx,
    tiles,
  };
}

/** The smallest power of two >= n. */
function pow2ceil(n: number): number {
  return 2 ** Math.ceil(Math.log2(n));
}

/**
 * The GEMV kernels (m <= GEMV_MAX_M): forward workgroups own GEMV_OUTPUTS outputs and every row
 * (TM = m rounded up to a power of two: few pipelines); backward ones own CW packed words of
 * columns for TM <= GEMV_BACKWARD_MAX_TM rows (grid z over row blocks).
 */
function gemvPlan(ctx: GpuContext, w: GpuQuantWeight, o: PlanShape, sg: number): Plan {
  const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
  const cw = Math.max(1, sg / 4);
  const forward = o.entry === "forward";
  const tm = forward ? pow2ceil(o.m) : Math.min(pow2ceil(o.m), GEMV_BACKWARD_MAX_TM);
  const groups = forward
    ? Math.ceil(w.outFeatures / GEMV_OUTPUTS)
    : Math.ceil(Math.ceil(w.inFeatures / 8) / cw);
  const [gx, gy] = grid(groups, maxDim);
  return {
    shader: "matmul_4bit_subgroup.wgsl",
    entry: forward ? "forward_gemv" : "backward_gemv",
    params: { SG: sg, TM: tm, CW: cw },
    workgroups: [gx, gy, Math.ceil(o.m / tm)],
    groupsX: gx,
    tiles: groups,
  };
}

/** The subgroup-matrix kernels of `plan`: TILE_M x TILE_N outputs per workgroup, 1-D grid. */
function subgroupMatrixPlan(
  ctx: GpuContext,
  plan: SubgroupMatrixPlan,
  o: PlanShape,
  transform?: WgslTransform,
): Plan {
  const tiles = Math.ceil(o.nCols / plan.tileN);
  const [gx, gy] = grid(
    tiles * Math.ceil(o.m / plan.tileM),
    ctx.limits.maxComputeWorkgroupsPerDimension,
  );
  return {
    shader: "matmul_4bit_subgroup_matrix.wgsl",
    entry: `${o.entry}_sm`,
    params: subgroupMatrixShaderParams(plan),
    workgroups: [gx, gy, 1],
    groupsX: gx,
    tiles,
    transform,
  };
}

/**
 * Either direction on the subgroup-matrix kernels of an explicit plan, whatever the device
 * reports, the WGSL passed through `transform`: tests emulate the builtins with it on adapters
 * without the feature. `src`/`dst` are X/Y (forward) or dY/dX (backward).
 */
export async function encodeMatmul4bitSubgroupMatrix(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: {
    direction: "forward" | "backward";
    src: Binding;
    w: GpuQuantWeight;
    dst: Binding;
    m: number;
    accumulate?: boolean;
  },
  plan: SubgroupMatrixPlan,
  transform?: WgslTransform,
): Promise<void> {
  const { w, m } = args;
  const forward = args.direction === "forward";
  const [srcLen, dstLen] = forward ? [w.inFeatures, w.outFeatures] : [w.outFeatures, w.inFeatures];
  checkShapes(ctx, "encodeMatmul4bitSubgroupMatrix", w, m, [
    ["src", args.src, m * srcLen],
    ["dst", args.dst, m * dstLen],
  ]);
  const shape: PlanShape = {
    entry: args.direction,
    m,
    maxTm: 1,
    colsPerInvocation: 1,
    nCols: dstLen,
    vectorized: false,
    wide: false,
  };
  const p = subgroupMatrixPlan(ctx, plan, shape, transform);
  await dispatch(ctx, batch, w, p, args.src, args.dst, m, args.accumulate);
}

async function dispatch(
  ctx: GpuContext,
  batch: DispatchBatch,
  w: GpuQuantWeight,
  plan: Plan,
  src: Binding,
  dst: Binding,
  m: number,
  accumulate = false,
): Promise<void> {
  const pipeline = await matmulPipeline(
    ctx,
    plan.shader,
    { ...dequantShaderParams(w), ALIGNED: String(w.inFeatures % 8 === 0), ...plan.params },
    plan.entry,
    MATMUL_4BIT_PARAMS,
    plan.transform,
  );
  const params = MATMUL_4BIT_PARAMS.pack({
    m,
    n_in: w.inFeatures,
    n_out: w.outFeatures,
    accumulate,
    groups_x: plan.groupsX,
    tiles: plan.tiles,
    offset_bits: offsetBits(w),
    block_shift: Math.log2(w.blocksize),
  });
  batch.dispatch(pipeline, [...w.bindings, src, dst, ctx.uniform(params)], plan.workgroups);
}

/** m and the activations' bindings against W's shape and the device's largest binding. */
function checkShapes(
  ctx: GpuContext,
  op: string,
  w: GpuQuantWeight,
  m: number,
  tensors: Array<[string, Binding, number]>,
): void {
  const kernel = `${op}: ${w.label}`;
  checkCount(kernel, "m", m);
  const limit = ctx.limits.maxStorageBufferBindingSize;
  const shapes = `m=${m}, W [${w.outFeatures}, ${w.inFeatures}]`;
  for (const [name, b, elems] of tensors) {
    checkBindingSize(kernel, name, b, elems, 4, shapes);
    checkBindingLimit(kernel, name, b, limit, "maxStorageBufferBindingSize", "split m");
  }
}
