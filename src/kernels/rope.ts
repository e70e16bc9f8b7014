/**
 * Rotary position embedding (Llama, split halves) in place on [rows, heads*headDim], and the
 * inverse frequencies it rotates by, computed as transformers' `modeling_rope_utils.py` does
 * ("default", "linear" and "llama3" rope types) in float32.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { checkBindingSize, checkCount, UnexpectedShapeError } from "./shape_checks.ts";

/** shaders/rope.wgsl's Params. */
const ROPE_PARAMS = uniformLayout("Params", {
  total: "u32",
  heads: "u32",
  head_dim: "u32",
  half: "u32",
  // +1 rotates, -1 rotates back (the backward pass).
  sign: "f32",
  groups_x: "u32",
  _pad0: "u32",
  _pad1: "u32",
});

export type RopeScaling =
  | { type: "linear"; factor: number }
  | {
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositionEmbeddings: number;
  };

const f32 = Math.fround;

/**
 * inv_freq[i] = 1 / theta^(2i/headDim), i < headDim/2, then the scaling: "linear" divides by
 * factor; "llama3" divides long wavelengths (> original/lowFreqFactor) by factor, keeps short
 * ones (< original/highFreqFactor) and blends in between. Each step is rounded to f32 as torch
 * computes it in a float32 tensor.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling): Float32Array {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw invalidArgument(`rope: head_dim must be a positive even integer, got ${headDim}`);
  }
  if (!(theta > 0)) throw invalidArgument(`rope: rope_theta must be > 0, got ${theta}`);
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = f32(1 / f32(Math.pow(theta, f32((2 * i) / headDim))));
  }
  if (!scaling) return inv;
  if (!(scaling.factor > 0)) {
    throw invalidArgument(`rope: rope_scaling.factor must be > 0, got ${scaling.factor}`);
  }
  if (scaling.type === "linear") {
    for (let i = 0; i < half; i++) inv[i] = f32(inv[i] / scaling.factor);
    return inv;
  }
  if (scaling.type !== "llama3") {
    throw invalidArgument(
      `rope: rope_scaling type ${(scaling as { type: string }).type} unsupported`,
    );
  }
  const { factor, lowFreqFactor: low, highFreqFactor: high } = scaling;
  const old = scaling.originalMaxPositionEmbeddings;
  if (!(high > low) || !(low > 0) || !(old > 0)) {
    throw invalidArgument(
      `rope: llama3 rope_scaling needs high_freq_factor > low_freq_factor > 0 and ` +
        `original_max_position_embeddings > 0, got ${high}, ${low}, ${old}`,
    );
  }
  const lowFreqWavelen = old / low;
  const highFreqWavelen = old / high;
  for (let i = 0; i < half; i++) {
    const wavelen = f32((2 * Math.PI) / inv[i]);
    const scaled = wavelen > lowFreqWavelen ? f32(inv[i] / factor) : inv[i];
    if (!(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)) {
      const smooth = f32((f32(old / wavelen) - low) / (high - low));
      inv[i] = f32(f32(f32((1 - smooth) * scaled) / factor) + f32(smooth * scaled));
    } else {
      inv[i] = scaled;
    }
  }
  return inv;
}

export interface RopeArgs {
  /** [rows, heads*headDim], rotated in place. */
  x: Binding;
  /** u32 [rows]: the position of each row. */
  positions: Binding;
  /** f32 [headDim/2] from ropeInvFreq. */
  invFreq: Binding;
  rows: number;
  heads: number;
  headDim: number;
  /** Rotate by -angle: undoes the forward rotation; the backward pass of rope. */
  inverse?: boolean;
}

export async function encodeRope(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: RopeArgs,
): Promise<void> {
  const { x, positions, invFreq, rows, heads, headDim } = args;
  checkCount("rope", "rows", rows);
  checkCount("rope", "heads", heads);
  checkCount("rope", "head_dim", headDim);
  if (headDim % 2 !== 0) {
    throw new UnexpectedShapeError("rope", "head_dim", "an even integer", String(headDim));
  }
  const half = headDim / 2;
  checkBindingSize("rope", "x", x, rows * heads * headDim);
  checkBindingSize("rope", "positions", positions, rows);
  checkBindingSize("rope", "invFreq", invFreq, half);
  const total = rows * heads * half;
  const [gx, gy] = grid(Math.ceil(total / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const u = ROPE_PARAMS.pack({
    total,
    heads,
    head_dim: headDim,
    half,
    sign: args.inverse ? -1 : 1,
    groups_x: gx,
  });
  const pipeline = await ctx.pipeline("rope.wgsl", {}, "main", ROPE_PARAMS);
  batch.dispatch(pipeline, [x, positions, invFreq, ctx.uniform(u)], [gx, gy]);
}
