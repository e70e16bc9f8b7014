/**
 * Global L2 norm over all LoRA gradients and torch.nn.utils.clip_grad_norm_'s scale,
 * min(1, maxNorm / (norm + 1e-6)), computed on the GPU with a fixed reduction order (two runs
 * give identical bits). The result stays on the GPU: encodeAdamW reads the scale from `out`.
 */
import {
  type Binding,
  type DispatchBatch,
  GpuBuffer,
  type GpuContext,
  grid,
} from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";

/** Elements summed per workgroup of the partial pass (256 invocations x 8). */
const PER_GROUP = 2048;

export interface GradTensor {
  buffer: Binding;
  /** Elements. */
  n: number;
  /** First element within `buffer` (no alignment needed, unlike a Binding offset); default 0. */
  offset?: number;
}

export interface GlobalNormArgs {
  tensors: GradTensor[];
  /** f32 [2]: [norm, clipScale]. */
  out: Binding;
  /** 0 (or less): no clipping, clipScale = 1. */
  maxNorm: number;
  /** At least globalNormScratchBytes(tensors) bytes. */
  scratch: Binding;
}

/** Scratch bytes for the per-workgroup partial sums of these tensors. */
export function globalNormScratchBytes(tensors: Array<{ n: number } | number>): number {
  let partials = 0;
  for (const t of tensors) partials += Math.ceil((typeof t === "number" ? t : t.n) / PER_GROUP);
  return Math.max(1, partials) * 4;
}

export async function encodeGlobalNorm(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: GlobalNormArgs,
): Promise<void> {
  const where = "grad_norm";
  if (!Number.isFinite(args.maxNorm)) {
    throw invalidArgument(`${where}: maxNorm must be finite, got ${args.maxNorm}`);
  }
  checkSize(where, "out", args.out, 2);
  const scratchBytes = globalNormScratchBytes(args.tensors);
  checkSize(where, "scratch", args.scratch, scratchBytes / 4);
  const partial = await ctx.pipeline("grad_norm.wgsl", {}, "partial");
  const finish = await ctx.pipeline("grad_norm.wgsl", {}, "finish");
  let base = 0;
  args.tensors.forEach((t, i) => {
    if (!Number.isInteger(t.n) || t.n < 0) {
      throw invalidArgument(`${where}: tensors[${i}].n must be >= 0, got ${t.n}`);
    }
    const offset = t.offset ?? 0;
    if (!Number.isInteger(offset) || offset < 0) {
      throw invalidArgument(`${where}: tensors[${i}].offset must be >= 0, got ${offset}`);
    }
    checkSize(where, `tensors[${i}]`, t.buffer, offset + t.n);
  });
  for (const t of args.tensors) {
    if (t.n === 0) continue;
    const groups = Math.ceil(t.n / PER_GROUP);
    const [gx, gy] = grid(groups);
    batch.dispatch(partial, [
      t.buffer,
      args.scratch,
      ctx.uniform(new Uint32Array([t.n, base, gx, t.offset ?? 0])),
    ], [
      gx,
      gy,
    ]);
    base += groups;
  }
  const u = new Uint32Array([base, args.maxNorm > 0 ? 1 : 0, 0, 0]);
  new Float32Array(u.buffer)[2] = args.maxNorm;
  batch.dispatch(finish, [args.scratch, args.out, ctx.uniform(u)], [1]);
}

function checkSize(where: string, name: string, b: Binding, elems: number): void {
  const size = b instanceof GpuBuffer ? b.size : b.size;
  const label = b instanceof GpuBuffer ? b.label : b.buffer.label;
  if (size < elems * 4) {
    throw invalidArgument(`${where}: ${name} (${label}) holds ${size} bytes, needs ${elems * 4}`);
  }
}
