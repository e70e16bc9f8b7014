/**
 * SwiGLU of the Llama MLP, out = silu(gate)·up, and its gradients w.r.t. gate and up.
 * All buffers are f32 [n]; outputs are overwritten.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";

/** shaders/swiglu.wgsl's Params (forward and backward). */
const SWIGLU_PARAMS = uniformLayout("Params", {
  n: "u32",
  groups_x: "u32",
  _pad0: "u32",
  _pad1: "u32",
});

export interface SwigluArgs {
  gate: Binding;
  up: Binding;
  out: Binding;
  n: number;
}

export interface SwigluBackwardArgs {
  gate: Binding;
  up: Binding;
  /** Gradient of the loss w.r.t. out. */
  dout: Binding;
  dgate: Binding;
  dup: Binding;
  n: number;
}

function groups(ctx: GpuContext, n: number) {
  const [gx, gy] = grid(Math.ceil(n / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  return { gx, gy, params: ctx.uniform(SWIGLU_PARAMS.pack({ n, groups_x: gx })) };
}

export async function encodeSwiglu(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: SwigluArgs,
): Promise<void> {
  const { gate, up, out, n } = args;
  checkCount("swiglu", "n", n);
  checkBindingSize("swiglu", "gate", gate, n);
  checkBindingSize("swiglu", "up", up, n);
  checkBindingSize("swiglu", "out", out, n);
  const { gx, gy, params } = groups(ctx, n);
  const pipeline = await ctx.pipeline("swiglu.wgsl", {}, "forward", SWIGLU_PARAMS);
  batch.dispatch(pipeline, [gate, up, out, params], [gx, gy]);
}

export async function encodeSwigluBackward(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: SwigluBackwardArgs,
): Promise<void> {
  const { gate, up, dout, dgate, dup, n } = args;
  checkCount("swiglu backward", "n", n);
  for (
    const [field, b] of [["gate", gate], ["up", up], ["dout", dout], ["dgate", dgate], [
      "dup",
      dup,
    ]] as const
  ) {
    checkBindingSize("swiglu backward", field, b, n);
  }
  const { gx, gy, params } = groups(ctx, n);
  const pipeline = await ctx.pipeline("swiglu.wgsl", {}, "backward", SWIGLU_PARAMS);
  batch.dispatch(pipeline, [gate, up, dout, dgate, dup, params], [gx, gy]);
}
