/**
 * Dense matmul: C[m,n] (=|+=) alpha · op(A) · op(B), op(A) [m,k] (A stored [k,m] when transA),
 * op(B) [k,n] (B stored [n,k] when transB); f32 buffers. Used for the LoRA products and as the
 * dense baseline of benchmarks. Variants, chosen per adapter by the kernel ladder unless
 * `variant` forces one; each joins the ladder only where the device has what it needs
 * (src/kernels/matmul_features.ts):
 * - `blocked` (shaders/matmul.wgsl): register blocking, no barriers; llvmpipe and other CPUs.
 * - `tiled` (matmul.wgsl): f32 workgroup-memory tiles; real GPUs.
 * - `tiled_f16` (matmul_f16.wgsl, needs shader-f16): `tiled` with f16 tiles, f32 arithmetic.
 * - `subgroup` (matmul_subgroup.wgsl, needs subgroups): skinny products (one side of C at most
 *   SPLIT_K_MAX_SIDE, a long reduction: the LoRA products) split the reduction across a
 *   subgroup; other shapes run `tiled`. f32 throughout.
 * - `subgroup_matrix` (matmul_subgroup_matrix.wgsl, needs a f16 -> f32 subgroup-matrix config):
 *   f16 tiles multiplied on the matrix units, f32 accumulation.
 * The f16 variants round the operands to f16 (see matmul_features.ts): a call without `variant`
 * gets one only with `allowF16`, else the fastest f32 variant the ladder timed.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import type { ShaderParams } from "../gpu/shader_source.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";
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

export type MatmulVariant = "blocked" | "tiled" | "tiled_f16" | "subgroup" | "subgroup_matrix";
export const MATMUL_VARIANTS: readonly MatmulVariant[] = [
  "blocked",
  "tiled",
  "tiled_f16",
  "subgroup",
  "subgroup_matrix",
];
/** The variants with f32 operands and arithmetic (same accuracy as `tiled`). */
export const MATMUL_F32_VARIANTS: readonly MatmulVariant[] = ["blocked", "tiled", "subgroup"];

/** What each variant needs beyond core WebGPU. */
const NEEDS: Record<MatmulVariant, MatmulFeature | undefined> = {
  blocked: undefined,
  tiled: undefined,
  tiled_f16: "f16",
  subgroup: "subgroups",
  subgroup_matrix: "subgroup_matrix",
};

/** Whether this device can run `variant`. */
export function matmulVariantAvailable(ctx: GpuContext, variant: MatmulVariant): boolean {
  const need = NEEDS[variant];
  return need === undefined || hasMatmulFeature(ctx, need);
}

export function availableMatmulVariants(ctx: GpuContext): MatmulVariant[] {
  return MATMUL_VARIANTS.filter((v) => matmulVariantAvailable(ctx, v));
}

export interface MatmulArgs {
  a: Binding;
  b: Binding;
  c: Binding;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  /** C += alpha·op(A)·op(B) instead of C = alpha·op(A)·op(B). */
  accumulate?: boolean;
  /** Forces a variant (tests, benchmarks); default chooseMatmulVariant(ctx). */
  variant?: MatmulVariant;
  /**
   * Without `variant`: the ladder's choice may be an f16 variant (operands rounded to f16, see
   * matmul_features.ts). Default false: the fastest f32 variant.
   */
  allowF16?: boolean;
}

/** Outputs per invocation / per workgroup edge of each variant (see shaders/matmul.wgsl). */
const BLOCKED_ROWS = 16; // rows of C per workgroup (the same for all its invocations)
const BLOCKED_COLS = 8 * 16; // 8 invocations × 16 columns
const TILE = 64;
/** The `subgroup` variant's split-reduction kernel: 4x4 blocks of C, for products whose
 * narrower side is at most this and whose reduction is at least SPLIT_K_MIN_K. */
const SPLIT_K_BLOCK = 4;
const SPLIT_K_MAX_SIDE = 32;
const SPLIT_K_MIN_K = 64;

/** shaders/matmul_common.wgsl's Params, which every dense variant's shader includes. */
const MATMUL_PARAMS = uniformLayout("Params", {
  m: "u32",
  n: "u32",
  k: "u32",
  accumulate: "u32",
  // Strides of op(A)[i, kk], op(B)[kk, j] and C[i, j].
  a_row: "u32",
  a_k: "u32",
  b_k: "u32",
  b_col: "u32",
  c_row: "u32",
  c_col: "u32",
  tiles_n: "u32",
  groups_x: "u32",
  alpha: "f32",
  tiles: "u32",
  _pad0: "u32",
  _pad1: "u32",
});

/** The variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts). */
export function chooseMatmulVariant(ctx: GpuContext): MatmulVariant {
  return kernelLadder.choice(ctx, "matmul") as MatmulVariant;
}

/** This kernel's entry in the kernel ladder (listed in src/kernels/registry.ts). */
export const MATMUL_LADDER: LadderKernel = {
  name: "matmul",
  variants: MATMUL_VARIANTS,
  prior: (ctx) => ctx.isSoftware ? "blocked" : "tiled",
  variantAvailable: (ctx, v) => matmulVariantAvailable(ctx, v as MatmulVariant),
  shaders: [
    "matmul.wgsl",
    "matmul_common.wgsl",
    "matmul_f16.wgsl",
    "matmul_subgroup.wgsl",
    "matmul_subgroup_matrix.wgsl",
  ],
  // A linear-sized product and the two skinny LoRA products of a rank-16 adapter.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const [m, n, k, r] = [128, 256, 256, 16];
    const x = bufs.random("ladder.matmul.x", m * k, 1);
    const w = bufs.random("ladder.matmul.w", n * k, 2);
    const y = bufs.empty("ladder.matmul.y", m * n * 4);
    const t = bufs.empty("ladder.matmul.t", m * r * 4);
    const g = bufs.empty("ladder.matmul.g", r * k * 4);
    return Promise.resolve({
      run: async (batch: DispatchBatch, v: string) => {
        const variant = v as MatmulVariant;
        await encodeMatmul(ctx, batch, { a: x, b: w, c: y, m, n, k, transB: true, variant });
        await encodeMatmul(ctx, batch, { a: x, b: w, c: t, m, n: r, k, transB: true, variant });
        await encodeMatmul(ctx, batch, {
          a: t,
          b: x,
          c: g,
          m: r,
          n: k,
          k: m,
          transA: true,
          variant,
        });
      },
      destroy: () => bufs.destroy(),
    });
  },
};

/** Throws naming the op, the variant and the missing feature when the device lacks it. */
export function requireMatmulVariant(ctx: GpuContext, op: string, variant: MatmulVariant): void {
  if (!MATMUL_VARIANTS.includes(variant)) {
    throw invalidArgument(`${op}: unknown variant ${variant}`);
  }
  if (!matmulVariantAvailable(ctx, variant)) {
    throw invalidArgument(
      `${op}: variant ${variant} needs ${NEEDS[variant]}, which ${ctx.adapterKey} lacks`,
    );
  }
}

export async function encodeMatmul(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: MatmulArgs,
): Promise<void> {
  const { a, b, c, m, n, k } = args;
  checkCount("matmul", "m", m);
  checkCount("matmul", "n", n);
  checkCount("matmul", "k", k);
  checkBindingSize("matmul", "a", a, m * k);
  checkBindingSize("matmul", "b", b, k * n);
  checkBindingSize("matmul", "c", c, m * n);
  const variant = args.variant ?? await ladderVariant(ctx, args.allowF16);
  requireMatmulVariant(ctx, "matmul", variant);
  await encodeDense(ctx, batch, args, denseKernel(ctx, variant, args, "f32"));
}

async function ladderVariant(ctx: GpuContext, allowF16 = false): Promise<MatmulVariant> {
  const d = await kernelLadder.decide(ctx, "matmul");
  const fallback = ctx.isSoftware ? "blocked" : "tiled";
  return precisionChoice(d, MATMUL_F32_VARIANTS, fallback, allowF16) as MatmulVariant;
}

/** One pipeline of the dense family and the C tile each of its workgroups owns. */
export interface DenseKernel {
  shader: string;
  params: ShaderParams;
  entry: string;
  rows: number;
  cols: number;
  /** The blocked kernel computes C^T = op(B)^T op(A)^T when that wastes less of its tile. */
  mayTranspose?: boolean;
  transform?: WgslTransform;
}

/** The kernel a variant runs for this shape; `input` is the operands' element type. */
export function denseKernel(
  ctx: GpuContext,
  variant: MatmulVariant,
  shape: { m: number; n: number; k: number },
  input: "f32" | "f16",
): DenseKernel {
  const tiled = { shader: "matmul.wgsl", params: {}, entry: "tiled", rows: TILE, cols: TILE };
  switch (variant) {
    case "blocked":
      return {
        shader: "matmul.wgsl",
        params: {},
        entry: "blocked",
        rows: BLOCKED_ROWS,
        cols: BLOCKED_COLS,
        mayTranspose: true,
      };
    case "tiled":
      return tiled;
    case "tiled_f16":
      return { ...tiled, shader: "matmul_f16.wgsl", params: { IN_T: input }, entry: "tiled_f16" };
    case "subgroup": {
      const sg = subgroupWorkgroupSize(ctx)!;
      if (Math.min(shape.m, shape.n) <= SPLIT_K_MAX_SIDE && shape.k >= SPLIT_K_MIN_K) {
        return {
          shader: "matmul_subgroup.wgsl",
          params: { SG: sg },
          entry: "split_k",
          rows: SPLIT_K_BLOCK,
          cols: SPLIT_K_BLOCK,
        };
      }
      return tiled;
    }
    case "subgroup_matrix":
      return subgroupMatrixKernel(deviceMatrixPlan(ctx)!, input);
  }
}

/** The subgroup-matrix kernel of a plan (any plan: tests emulate configs the device lacks). */
export function subgroupMatrixKernel(
  plan: SubgroupMatrixPlan,
  input: "f32" | "f16",
  transform?: WgslTransform,
): DenseKernel {
  return {
    shader: "matmul_subgroup_matrix.wgsl",
    params: { ...subgroupMatrixShaderParams(plan), IN_T: input },
    entry: "main",
    rows: plan.tileM,
    cols: plan.tileN,
    transform,
  };
}

/** Records one dense product with `kernel`; the shapes and bindings are already checked. */
export async function encodeDense(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: Omit<MatmulArgs, "variant">,
  kernel: DenseKernel,
): Promise<void> {
  const { a, b, c, m, n, k } = args;
  // Strides of op(A)[i,kk], op(B)[kk,j] and C[i,j].
  const [aRow, aK] = args.transA ? [1, m] : [k, 1];
  const [bK, bCol] = args.transB ? [1, k] : [n, 1];

  let lhs = a, rhs = b, M = m, N = n;
  let s = { aRow, aK, bK, bCol, cRow: n, cCol: 1 };
  const { rows, cols } = kernel;
  if (kernel.mayTranspose) {
    // The blocked kernel's tile is 16 x 128; computing C^T = op(B)^T op(A)^T instead wastes
    // less of it when m is the wider side (skinny LoRA products).
    const padded = (r: number, q: number) => Math.ceil(r / rows) * Math.ceil(q / cols);
    if (padded(n, m) < padded(m, n)) {
      lhs = b;
      rhs = a;
      M = n;
      N = m;
      s = { aRow: bCol, aK: bK, bK: aK, bCol: aRow, cRow: 1, cCol: n };
    }
  }
  const tilesN = Math.ceil(N / cols);
  const tiles = Math.ceil(M / rows) * tilesN;
  const [gx, gy] = grid(tiles, ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await matmulPipeline(
    ctx,
    kernel.shader,
    kernel.params,
    kernel.entry,
    MATMUL_PARAMS,
    kernel.transform,
  );
  const params = MATMUL_PARAMS.pack({
    m: M,
    n: N,
    k,
    accumulate: args.accumulate ?? false,
    a_row: s.aRow,
    a_k: s.aK,
    b_k: s.bK,
    b_col: s.bCol,
    c_row: s.cRow,
    c_col: s.cCol,
    tiles_n: tilesN,
    groups_x: gx,
    alpha: args.alpha ?? 1,
    tiles,
  });
  batch.dispatch(pipeline, [lhs, rhs, c, ctx.uniform(params)], [gx, gy]);
}
