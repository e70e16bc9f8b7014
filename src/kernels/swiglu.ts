/**
 * SwiGLU of the Llama MLP, out = silu(gate)·up, and its gradients w.r.t. gate and up.
 * All buffers are f32 [n]; outputs are overwritten.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { checkBinding, checkCount } from "./matmul.ts";

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
  return { gx, gy, params: ctx.uniform(new Uint32Array([n, gx, 0, 0])) };
}

export async function encodeSwiglu(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: SwigluArgs,
): Promise<void> {
  const { gate, up, out, n } = args;
  checkCount("swiglu", "n", n);
  checkBinding("swiglu", "gate", gate, n);
  checkBinding("swiglu", "up", up, n);
  checkBinding("swiglu", "out", out, n);
  const { gx, gy, params } = groups(ctx, n);
  const pipeline = await ctx.pipeline("swiglu.wgsl", {}, "forward");
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
    checkBinding("swiglu backward", field, b, n);
  }
  const { gx, gy, params } = groups(ctx, n);
  const pipeline = await ctx.pipeline("swiglu.wgsl", {}, "backward");
  batch.dispatch(pipeline, [gate, up, dout, dgate, dup, params], [gx, gy]);
}
