/** Fill a buffer with a repeated 32-bit value (zeros for gradients, NaN to poison outputs). */
import { type DispatchBatch, type GpuBuffer, type GpuContext, grid } from "../gpu/context.ts";
import { f32Bits } from "../io/dtype.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";

/** shaders/fill.wgsl's Params. */
const FILL_PARAMS = uniformLayout("Params", {
  count: "u32",
  value: "u32",
  groups_x: "u32",
  _pad: "u32",
});

export async function encodeFill(
  ctx: GpuContext,
  batch: DispatchBatch,
  buf: GpuBuffer,
  bits: number,
  count = Math.ceil(buf.size / 4),
): Promise<void> {
  const pipeline = await ctx.pipeline("fill.wgsl", {}, "main", FILL_PARAMS);
  const [gx, gy] = grid(Math.ceil(count / 256));
  const params = FILL_PARAMS.pack({ count, value: bits >>> 0, groups_x: gx });
  batch.dispatch(pipeline, [buf, ctx.uniform(params)], [gx, gy]);
}

export const F32_NAN_BITS = 0x7fc00000;

/** Fills and submits at once. */
export async function fill(ctx: GpuContext, buf: GpuBuffer, value: number): Promise<void> {
  const batch = ctx.batch("fill");
  await encodeFill(ctx, batch, buf, f32Bits(value));
  batch.submit();
}
