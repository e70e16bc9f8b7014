/**
 * The bitsandbytes 32-bit AdamW step (../../../shared/REFERENCE.md §9) in float32, one element
 * per invocation. Every tensor argument may be a slice, so a paged optimizer streams pages of
 * (param, grad, m, v) through it; an element's update depends only on that element, so paged
 * and resident runs give identical bits. Slices are Bindings, so pages start at multiples of 256
 * bytes (64 elements); a page may end anywhere (`n`).
 */
import {
  type Binding,
  type DispatchBatch,
  GpuBuffer,
  type GpuContext,
  grid,
} from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";

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
}

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
  if (!Number.isInteger(n) || n < 0) throw invalidArgument(`${where}: n must be >= 0, got ${n}`);
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
    checkSize(where, name, b, n);
  }
  const scaleIndex = args.gradScaleIndex ?? 0;
  if (args.gradScale) checkSize(where, "gradScale", args.gradScale, scaleIndex + 1);

  const s = adamwScalars(args);
  const [gx, gy] = grid(Math.ceil(n / 256));
  const u = new Uint32Array(12);
  u.set([n, gx, scaleIndex, s.decayOn ? 1 : 0]);
  new Float32Array(u.buffer, 16).set([
    s.beta1,
    s.beta2,
    s.oneMinusBeta1,
    s.oneMinusBeta2,
    s.stepSize,
    s.epsC2,
    s.decay,
    0,
  ]);
  const bindings: Array<Binding | GPUBuffer> = [
    args.param,
    args.grad,
    args.m,
    args.v,
    ctx.uniform(u),
  ];
  if (args.gradScale) bindings.push(args.gradScale);
  const pipeline = await ctx.pipeline("adamw.wgsl", {}, args.gradScale ? "main_scaled" : "main");
  batch.dispatch(pipeline, bindings, [gx, gy]);
}

function checkSize(where: string, name: string, b: Binding, elems: number): void {
  const size = b instanceof GpuBuffer ? b.size : b.size;
  const label = b instanceof GpuBuffer ? b.label : b.buffer.label;
  if (size < elems * 4) {
    throw invalidArgument(`${where}: ${name} (${label}) holds ${size} bytes, needs ${elems * 4}`);
  }
}
