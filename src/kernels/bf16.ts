/**
 * bf16 <-> f32 over ranges of a packed bf16 buffer (shaders/bf16.wgsl): the LoRA parameters'
 * 16-bit compute copy (src/model/lora_params.ts) is expanded a layer at a time into an f32
 * window for the matmuls, and the optimizer packs each updated f32 master page back into it.
 * bf16 is stored two per 32-bit word, element 2i in the low 16 bits, so n elements take
 * `bf16BufferBytes(n)` bytes. A range starts at an even element `first` of the packed side, given
 * as a uniform (a 64-element page is 128 bytes of bf16, under the 256-byte binding-offset
 * alignment). The packed side is bound only from the 256-byte boundary at or before the range to
 * its end, never whole: a 70B adapter's bf16 copy (1.6 GB) may exceed the adapter's binding limit,
 * which the f32 path, binding slices, never met. Pack rounds to nearest even (src/io/dtype.ts's
 * f32ToBf16 on the host gives the same bits); expand is exact.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { checkBindingSize, checkCount, UnexpectedShapeError } from "./shape_checks.ts";
import { bindingParts } from "./bindings.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";

/** shaders/bf16.wgsl's Params. */
const BF16_PARAMS = uniformLayout("Params", {
  n: "u32",
  first: "u32",
  groups_x: "u32",
  _pad0: "u32",
});

/** Bytes of n bf16 values packed two per 32-bit word. */
export function bf16BufferBytes(n: number): number {
  return Math.ceil(n / 2) * 4;
}

async function convert(
  ctx: GpuContext,
  batch: DispatchBatch,
  entry: "expand" | "pack",
  args: { src: Binding; dst: Binding; n: number; first: number },
): Promise<void> {
  const kernel = `bf16_${entry}`;
  checkCount(kernel, "n", args.n);
  checkCount(kernel, "first", args.first, 0);
  if (args.first % 2 !== 0) {
    throw new UnexpectedShapeError(kernel, "first", "an even element", String(args.first));
  }
  const packedWords = (args.first + args.n + 1) >> 1;
  checkBindingSize(kernel, "src", args.src, entry === "expand" ? packedWords : args.n);
  checkBindingSize(kernel, "dst", args.dst, entry === "expand" ? args.n : packedWords);
  const words = Math.ceil(args.n / 2);
  // The packed side narrowed to the words of the range, from the 256-byte boundary before it.
  const packed = bindingParts(entry === "expand" ? args.src : args.dst);
  const startByte = packed.offset + args.first * 2;
  const alignedByte = Math.floor(startByte / 256) * 256;
  const narrow = {
    buffer: packed.buffer,
    offset: alignedByte,
    size: startByte + words * 4 - alignedByte,
  };
  const first = (startByte - alignedByte) / 2; // even: both byte offsets are multiples of 4
  const [gx, gy] = grid(Math.ceil(words / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await ctx.pipeline("bf16.wgsl", {}, entry, BF16_PARAMS);
  const params = BF16_PARAMS.pack({ n: args.n, first, groups_x: gx });
  const [src, dst] = entry === "expand" ? [narrow, args.dst] : [args.src, narrow];
  batch.dispatch(pipeline, [src, dst, ctx.uniform(params)], [gx, gy]);
}

/** dst[0..n) (f32) = src's bf16 elements [first, first + n), exactly. */
export function encodeExpandBf16(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { src: Binding; dst: Binding; n: number; first: number },
): Promise<void> {
  return convert(ctx, batch, "expand", args);
}

/** dst's bf16 elements [first, first + n) = src[0..n) (f32), rounded to nearest even. */
export function encodePackBf16(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: { src: Binding; dst: Binding; n: number; first: number },
): Promise<void> {
  return convert(ctx, batch, "pack", args);
}
