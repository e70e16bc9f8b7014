/**
 * Which hardware paths the matmul kernels (dense and 4-bit) can take on this device, from
 * `ctx.capabilities` and never from the adapter's name: f16 tiles (`shader-f16`), subgroup
 * reductions (`subgroups`) and subgroup matrices (Dawn's `chromium-experimental-subgroup-matrix`).
 * Also the subgroup-matrix tile plan both families share (shaders/matmul_subgroup_matrix.wgsl,
 * shaders/matmul_4bit_subgroup_matrix.wgsl): a pure function of the reported config, so the WGSL
 * it yields can be generated and checked on machines without the feature.
 *
 * Precision of the f16 paths: operands are rounded to f16 when they are staged (relative error
 * 2^-11; |x| > 65504 overflows, |x| < 6.1e-5 loses relative precision down to 6e-8, then
 * flushes to zero), products and sums stay f32. Tiny gradients can lose most of their bits, so
 * the wrappers take an f16 variant only for calls that pass `allowF16` (precisionChoice).
 */
import type { GpuContext, SubgroupMatrixConfig } from "../gpu/context.ts";
import { type ShaderParams, shaderSource } from "../gpu/shader_source.ts";
import type { UniformLayout } from "../gpu/uniform_layout.ts";
import type { LadderDecision } from "./ladder.ts";

export type MatmulFeature = "f16" | "subgroups" | "subgroup_matrix";

/**
 * Workgroup size of the single-subgroup kernels (shaders/matmul_subgroup.wgsl,
 * matmul_4bit_subgroup.wgsl): the adapter's smallest subgroup size, so a workgroup never spans
 * two subgroups whatever size the driver picks. Undefined without a usable `subgroups` feature.
 */
export function subgroupWorkgroupSize(ctx: GpuContext): number | undefined {
  const c = ctx.capabilities;
  const s = c.subgroupMinSize;
  const ok = c.subgroups && Number.isInteger(s) && s >= 4 && s <= 128 && (s & (s - 1)) === 0 &&
    s <= ctx.limits.maxComputeWorkgroupSizeX;
  return ok ? s : undefined;
}

/** The configs a f16 x f16 -> f32 `subgroupMatrixMultiplyAccumulate` can use, in the order the
 * adapter reports them (preferred first). */
export function f16MatrixConfigs(ctx: GpuContext): SubgroupMatrixConfig[] {
  const c = ctx.capabilities;
  if (!c.f16 || !c.subgroups) return [];
  return c.subgroupMatrixConfigs.filter((m) =>
    m.componentType === "f16" && m.resultComponentType === "f32"
  );
}

/** The subgroup-matrix plan this device runs (the first reported config that plans), if any. */
export function deviceMatrixPlan(ctx: GpuContext): SubgroupMatrixPlan | undefined {
  for (const config of f16MatrixConfigs(ctx)) {
    const plan = planSubgroupMatrix(config, {
      workgroupSize: ctx.capabilities.subgroupMaxSize,
      maxWorkgroupBytes: ctx.limits.maxComputeWorkgroupStorageSize,
      maxInvocations: ctx.limits.maxComputeInvocationsPerWorkgroup,
    });
    if (plan) return plan;
  }
  return undefined;
}

export function hasMatmulFeature(ctx: GpuContext, f: MatmulFeature): boolean {
  switch (f) {
    case "f16":
      return ctx.capabilities.f16;
    case "subgroups":
      return subgroupWorkgroupSize(ctx) !== undefined;
    case "subgroup_matrix":
      return deviceMatrixPlan(ctx) !== undefined;
  }
}

/**
 * A workgroup of the subgroup-matrix kernels is one subgroup (`workgroupSize` = the adapter's
 * maximum subgroup size, as Dawn requires for workgroup_size.x) that owns a TILE_M x TILE_N
 * output tile as RM x RN result matrices of the config's M x N, and walks the reduction KT at a
 * time: operand tiles staged as f16 in workgroup memory, then RM x RN x (KT / K) multiply-adds.
 * One subgroup per workgroup keeps subgroup builtins (subgroup_id) out of these shaders: one
 * NVIDIA driver crashes when they meet subgroup matrices. Results leave through a workgroup
 * tile of one row of result matrices, where alpha, accumulate and the edges are applied.
 */
export interface SubgroupMatrixPlan {
  config: SubgroupMatrixConfig;
  workgroupSize: number;
  rm: number;
  rn: number;
  tileM: number;
  tileN: number;
  kt: number;
  /** Row strides (elements) of the staged tiles: padded by 16 bytes against bank conflicts. */
  aStride: number;
  /** Forward 4-bit: W rows [TILE_N][KT]; dense and backward: [KT][TILE_N]. */
  bStrideRows: number;
  bStrideCols: number;
  cStride: number;
  aLen: number;
  bLen: number;
  cLen: number;
  /** Workgroup bytes of the three tiles. */
  bytes: number;
}

export interface PlanLimits {
  workgroupSize: number;
  maxWorkgroupBytes: number;
  maxInvocations: number;
}

/** The output tile edge the plan aims for: 64 x 64 outputs share every staged operand tile. */
const TARGET_EDGE = 64;
/** At most this many accumulator values per invocation (registers). */
const MAX_ACC_PER_LANE = 128;
const KT_TARGET = 32;

/** The plan for one config, or undefined when it cannot fit this device. */
export function planSubgroupMatrix(
  config: SubgroupMatrixConfig,
  limits: PlanLimits,
): SubgroupMatrixPlan | undefined {
  const { M, N, K } = config;
  const wg = limits.workgroupSize;
  const pow2 = (v: number) => Number.isInteger(v) && v > 0 && (v & (v - 1)) === 0;
  if (![M, N, K, wg].every(pow2) || M > TARGET_EDGE || N > TARGET_EDGE || K > 64) return undefined;
  if (wg > limits.maxInvocations || wg > 256) return undefined;
  let rm = TARGET_EDGE / M;
  let rn = TARGET_EDGE / N;
  // Fewer result matrices where the subgroup is narrow (each lane holds M*N/wg per matrix).
  while (rm * rn * M * N > MAX_ACC_PER_LANE * wg && (rm > 1 || rn > 1)) {
    if (rm >= rn && rm > 1) rm /= 2;
    else rn /= 2;
  }
  const tileM = rm * M;
  const tileN = rn * N;
  const kt = Math.max(K, KT_TARGET);
  // 8 f16 (16 bytes) of padding per row; f32 rows of the result tile by 4 (16 bytes).
  const aStride = kt + 8;
  const bStrideRows = kt + 8;
  const bStrideCols = tileN + 8;
  const cStride = tileN + 4;
  const aLen = tileM * aStride;
  const bLen = Math.max(tileN * bStrideRows, kt * bStrideCols);
  const cLen = M * cStride;
  const bytes = 2 * aLen + 2 * bLen + 4 * cLen;
  // Staging loops give every invocation the same number of elements (uniform trip counts).
  const even = (n: number) => n % wg === 0;
  if (!even(tileM * kt) || !even(kt * tileN) || !even(M * tileN)) return undefined;
  if (!even((tileN * kt) / 8) || bytes > limits.maxWorkgroupBytes) return undefined;
  return {
    config,
    workgroupSize: wg,
    rm,
    rn,
    tileM,
    tileN,
    kt,
    aStride,
    bStrideRows,
    bStrideCols,
    cStride,
    aLen,
    bLen,
    cLen,
    bytes,
  };
}

/** Template parameters shared by both subgroup-matrix shaders. */
export function subgroupMatrixShaderParams(plan: SubgroupMatrixPlan): Record<string, number> {
  return {
    SM_M: plan.config.M,
    SM_N: plan.config.N,
    SM_K: plan.config.K,
    RM: plan.rm,
    RN: plan.rn,
    KT: plan.kt,
    WG: plan.workgroupSize,
    A_STRIDE: plan.aStride,
    B_STRIDE_ROWS: plan.bStrideRows,
    B_STRIDE_COLS: plan.bStrideCols,
    C_STRIDE: plan.cStride,
    A_LEN: plan.aLen,
    B_LEN: plan.bLen,
    C_LEN: plan.cLen,
  };
}

/**
 * Rewrites a kernel's WGSL before it is compiled: tests run the subgroup-matrix kernels on
 * adapters without the feature through an emulation of its builtins.
 */
export type WgslTransform = (code: string) => string;

const transformed = new WeakMap<GpuContext, Map<string, Promise<GPUComputePipeline>>>();

/** ctx.pipeline (its uniform layout checked), or (with a transform) the transformed source compiled once per context. */
export function matmulPipeline(
  ctx: GpuContext,
  shader: string,
  params: ShaderParams,
  entry: string,
  uniform: UniformLayout,
  transform?: WgslTransform,
): Promise<GPUComputePipeline> {
  if (!transform) return ctx.pipeline(shader, params, entry, uniform);
  const code = transform(shaderSource(shader, params));
  let byCode = transformed.get(ctx);
  if (!byCode) transformed.set(ctx, byCode = new Map());
  const key = `${entry}|${code}`;
  let p = byCode.get(key);
  if (!p) {
    p = ctx.pipelineFromCode(`${shader} (transformed)`, code, entry, uniform);
    byCode.set(key, p);
    p.catch(() => byCode.delete(key));
  }
  return p;
}

/**
 * The variant a call runs when it names none. The ladder times every variant the device has,
 * f16 ones included, but rounding operands to f16 is a precision decision, not a speed one: a
 * call gets an f16 variant only with `allowF16` (or when QLORAD_KERNEL_VARIANTS forces one);
 * otherwise the fastest f32 variant the ladder timed, else `fallback`.
 */
export function precisionChoice(
  d: LadderDecision,
  exact: readonly string[],
  fallback: string,
  allowF16: boolean,
): string {
  if (allowF16 || d.source === "override" || exact.includes(d.variant)) return d.variant;
  const timed = Object.entries(d.ms ?? {})
    .filter((e): e is [string, number] => exact.includes(e[0]) && e[1] !== null)
    .sort((a, b) => a[1] - b[1]);
  return timed[0]?.[0] ?? fallback;
}
