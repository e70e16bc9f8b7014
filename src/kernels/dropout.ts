/**
 * Inverted dropout (LoRA's `lora_dropout`) with a stateless mask: element i is kept when a
 * counter-based hash of (seed, stream, i) clears the threshold, and kept elements are scaled
 * by 1/(1-p). The backward pass calls encodeDropout on the gradient with the same seed and
 * stream, which multiplies it by the identical mask.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { bindingParts } from "./bindings.ts";
import { checkBindingSize, checkCount } from "./shape_checks.ts";

/** shaders/dropout.wgsl's Params (both entry points). */
const DROPOUT_PARAMS = uniformLayout("Params", {
  n: "u32",
  threshold: "u32",
  seed: "u32",
  stream: "u32",
  scale: "f32",
  groups_x: "u32",
  first: "u32",
  _pad1: "u32",
});

export interface DropoutArgs {
  x: Binding;
  /** May be `x` itself (same buffer and offset): then the update is in place. */
  out: Binding;
  n: number;
  /** Drop probability in [0, 1). */
  p: number;
  seed: number;
  /** Distinguishes masks within one seed, e.g. step*1000 + layer*10 + module. */
  stream: number;
  /**
   * Mask index of element 0 (default 0): x is elements first..first+n-1 of a larger tensor
   * (a chunk of its rows), masked as that tensor would be.
   */
  first?: number;
}

export async function encodeDropout(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: DropoutArgs,
): Promise<void> {
  const { n, p } = args;
  checkCount("dropout", "n", n, 0);
  if (!(p >= 0 && p < 1)) throw invalidArgument(`dropout: p must be in [0, 1), got ${p}`);
  const first = args.first ?? 0;
  if (!Number.isInteger(first) || first < 0 || first + n > 2 ** 32) {
    throw invalidArgument(`dropout: first must be in 0..2^32-n, got ${first}`);
  }
  if (n === 0) return;
  checkBindingSize("dropout", "x", args.x, n);
  checkBindingSize("dropout", "out", args.out, n);
  const [gx, gy] = grid(Math.ceil(n / 256));
  const params = ctx.uniform(dropoutParams(n, p, args.seed, args.stream, gx, first));
  const xb = bindingParts(args.x);
  const ob = bindingParts(args.out);
  if (xb.buffer === ob.buffer) {
    if (xb.offset !== ob.offset) {
      const lo = Math.min(xb.offset, ob.offset);
      const hi = Math.max(xb.offset, ob.offset);
      if (lo + n * 4 > hi) {
        throw invalidArgument(
          `dropout: x and out overlap at different offsets in ${xb.buffer.label}`,
        );
      }
    } else {
      const pipeline = await ctx.pipeline("dropout.wgsl", {}, "main_inplace", DROPOUT_PARAMS);
      batch.dispatch(pipeline, [args.out, params], [gx, gy]);
      return;
    }
  }
  const pipeline = await ctx.pipeline("dropout.wgsl", {}, "main", DROPOUT_PARAMS);
  batch.dispatch(pipeline, [args.x, args.out, params], [gx, gy]);
}

/** The dropout scale for kept elements as the kernel uses it (float32). */
export function dropoutScale(p: number): number {
  return Math.fround(1 / (1 - p));
}

/** round(p * 2^24): an element is kept when the top 24 bits of its hash are >= this. */
export function dropoutThreshold(p: number): number {
  return Math.round(p * 16777216);
}

/**
 * The mask the GPU applies, times the scale: 0 for dropped elements, 1/(1-p) (as float32) for
 * kept ones, so `out = x * mask` elementwise.
 */
export function dropoutMaskHost(seed: number, stream: number, n: number, p: number): Float32Array {
  if (!(p >= 0 && p < 1)) throw invalidArgument(`dropout: p must be in [0, 1), got ${p}`);
  const threshold = dropoutThreshold(p);
  const scale = dropoutScale(p);
  const k1 = mix32(mix32((seed ^ 0x9e3779b9) >>> 0) ^ (stream >>> 0));
  const k2 = mix32(k1 ^ 0x85ebca6b);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = mix32(mix32((i + k1) >>> 0) ^ k2);
    out[i] = (u >>> 8) >= threshold ? scale : 0;
  }
  return out;
}

/** lowbias32, as in shaders/dropout.wgsl. */
function mix32(v: number): number {
  let h = v >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

function dropoutParams(
  n: number,
  p: number,
  seed: number,
  stream: number,
  gx: number,
  first: number,
) {
  return DROPOUT_PARAMS.pack({
    n,
    threshold: dropoutThreshold(p),
    seed: seed >>> 0,
    stream: stream >>> 0,
    scale: dropoutScale(p),
    groups_x: gx,
    first,
  });
}
