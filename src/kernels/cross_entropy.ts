/**
 * The frozen lm_head fused with token cross-entropy (shaders/cross_entropy.wgsl), computed over
 * vocabulary chunks so the logits of every token never sit in memory at once:
 *   pass 1, per chunk: logits = h W_chunk^T, then an online softmax per row (running max,
 *     sum of exp, first argmax, the label's logit); the last chunk writes loss and correct;
 *   pass 2 (only when dh is wanted), per chunk: logits again, dlogits = (softmax - onehot) *
 *     gradScale in place, dh (+)= dlogits W_chunk. The last chunk's logits are still in
 *     scratch after pass 1, so pass 2 walks the chunks backwards and starts without recomputing.
 * Also encodeSumRows, to reduce per-row losses or correct counts to one number on the GPU.
 */
import { bindingParts, checkBindingSize, sharedScratch } from "./bindings.ts";
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { kernelLadder, ProbeBuffers, registerLadderKernel } from "./ladder.ts";

export const IGNORE_INDEX = -100;

export interface LmHeadCrossEntropyArgs {
  /** [rows, hidden], the final-normed hidden states. */
  h: Binding;
  /** lm_head f32 [vocab, hidden]. */
  weight: Binding;
  /** i32 [rows]; -100 = ignore. A label outside [0, vocab) gives a NaN loss. */
  labels: Binding;
  rows: number;
  hidden: number;
  vocab: number;
  /**
   * Vocabulary columns per pass. With more than one chunk, chunk*hidden must be a multiple of
   * 64 (each chunk of the weight is bound at a 256-byte boundary); 1024..8192 suits real GPUs.
   */
  chunk: number;
  /** f32 [rows]: cross-entropy in nats, 0 where ignored. */
  loss: Binding;
  /** u32 [rows]: 1 where argmax (first maximum) == label. */
  correct: Binding;
  /** [rows, hidden]: if given, overwritten with d(sum(loss) * gradScale)/dh. */
  dh?: Binding;
  /** Multiplies the gradient: a number, or a buffer holding it at element gradScaleIndex. */
  gradScale?: number | Binding;
  gradScaleIndex?: number;
  /**
   * crossEntropyScratchBytes(rows, chunk) bytes. Omitted: a scratch buffer kept per context and
   * grown as needed (counted in the "scratch" memory category).
   */
  scratch?: Binding;
  /** Forces a variant of the two products (tests, benchmarks); default crossEntropyVariant(ctx). */
  variant?: CrossEntropyVariant;
}

/**
 * `blocked`: 4x4 register blocks, no workgroup memory (CPU adapters, where barriers are slow);
 * `tiled`: 64x64 output tiles staged through workgroup memory (real GPUs).
 */
export type CrossEntropyVariant = "blocked" | "tiled";

/** The variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts). */
export function crossEntropyVariant(ctx: GpuContext): CrossEntropyVariant {
  return kernelLadder.choice(ctx, "cross_entropy") as CrossEntropyVariant;
}

const CROSS_ENTROPY_VARIANTS: readonly CrossEntropyVariant[] = ["blocked", "tiled"];

registerLadderKernel({
  name: "cross_entropy",
  variants: CROSS_ENTROPY_VARIANTS,
  prior: (ctx) => ctx.isSoftware ? "blocked" : "tiled",
  shaders: ["cross_entropy.wgsl"],
  // 64 rows, hidden 128, a 1024-word vocabulary in two chunks, with the gradient.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const [rows, hidden, vocab, chunk] = [64, 128, 1024, 512];
    const labels = Int32Array.from({ length: rows }, (_, i) => (i * 37) % vocab);
    const common = {
      h: bufs.random("ladder.ce.h", rows * hidden, 6),
      weight: bufs.random("ladder.ce.w", vocab * hidden, 7),
      labels: bufs.upload("ladder.ce.labels", labels),
      rows,
      hidden,
      vocab,
      chunk,
      loss: bufs.empty("ladder.ce.loss", rows * 4),
      correct: bufs.empty("ladder.ce.correct", rows * 4),
      dh: bufs.empty("ladder.ce.dh", rows * hidden * 4),
      gradScale: 1 / rows,
      scratch: bufs.empty("ladder.ce.scratch", crossEntropyScratchBytes(rows, chunk)),
    };
    return Promise.resolve({
      run: (batch: DispatchBatch, v: string) =>
        encodeLmHeadCrossEntropy(ctx, batch, { ...common, variant: v as CrossEntropyVariant }),
      destroy: () => bufs.destroy(),
    });
  },
});

function align256(bytes: number): number {
  return Math.ceil(bytes / 256) * 256;
}

/** Scratch: one chunk of logits [rows, chunk], then per-row softmax stats [rows, 4]. */
export function crossEntropyScratchBytes(rows: number, chunk: number): number {
  return align256(rows * chunk * 4) + rows * 16;
}

export async function encodeLmHeadCrossEntropy(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: LmHeadCrossEntropyArgs,
): Promise<void> {
  const where = "lm_head cross-entropy";
  const { rows, hidden, vocab } = args;
  for (const name of ["rows", "hidden", "vocab", "chunk"] as const) {
    const v = args[name];
    if (!Number.isInteger(v) || v < 1) {
      throw invalidArgument(`${where}: ${name} must be >= 1, got ${v}`);
    }
  }
  const chunk = Math.min(args.chunk, vocab);
  const nChunks = Math.ceil(vocab / chunk);
  if (nChunks > 1 && (chunk * hidden) % 64 !== 0) {
    throw invalidArgument(
      `${where}: chunk ${chunk} x hidden ${hidden} must be a multiple of 64 so that weight chunks ` +
        `start at 256-byte boundaries`,
    );
  }
  checkBindingSize(where, "h", args.h, rows * hidden);
  checkBindingSize(where, "weight", args.weight, vocab * hidden);
  checkBindingSize(where, "labels", args.labels, rows);
  checkBindingSize(where, "loss", args.loss, rows);
  checkBindingSize(where, "correct", args.correct, rows);
  if (args.dh) checkBindingSize(where, "dh", args.dh, rows * hidden);
  const scaleIndex = args.gradScaleIndex ?? 0;
  const scaleBuf = typeof args.gradScale === "object" ? args.gradScale : undefined;
  if (scaleBuf) checkBindingSize(where, "gradScale", scaleBuf, scaleIndex + 1);
  const scaleValue = typeof args.gradScale === "number" ? args.gradScale : 1;
  if (!Number.isFinite(scaleValue)) throw invalidArgument(`${where}: gradScale must be finite`);

  const logitsBytes = rows * chunk * 4;
  const limit = ctx.limits.maxStorageBufferBindingSize;
  if (logitsBytes > limit || chunk * hidden * 4 > limit) {
    throw invalidArgument(
      `${where}: chunk ${chunk} makes a binding over the adapter's limit ${limit} bytes ` +
        `(rows ${rows}, hidden ${hidden}); use a smaller chunk`,
    );
  }
  const scratchBytes = crossEntropyScratchBytes(rows, chunk);
  const scratch = args.scratch ?? sharedScratch(ctx, "cross-entropy scratch", scratchBytes);
  checkBindingSize(where, "scratch", scratch, scratchBytes / 4);
  const s = bindingParts(scratch);
  const logits: Binding = { buffer: s.buffer, offset: s.offset, size: logitsBytes };
  const stats: Binding = {
    buffer: s.buffer,
    offset: s.offset + align256(logitsBytes),
    size: rows * 16,
  };
  const w = bindingParts(args.weight);
  const weightChunk = (c0: number, cols: number): Binding => ({
    buffer: w.buffer,
    offset: w.offset + c0 * hidden * 4,
    size: cols * hidden * 4,
  });

  const variant = args.variant ??
    (await kernelLadder.variant(ctx, "cross_entropy") as CrossEntropyVariant);
  if (variant !== "blocked" && variant !== "tiled") {
    throw invalidArgument(`${where}: unknown variant ${variant}`);
  }
  const tiled = variant === "tiled";
  // Output edge covered by one workgroup of the product kernels.
  const edge = tiled ? 64 : 32;
  const [pLogits, pStats, pDl, pDh] = await Promise.all([
    ctx.pipeline("cross_entropy.wgsl", {}, tiled ? "logits_tiled" : "logits"),
    ctx.pipeline("cross_entropy.wgsl", {}, "stats"),
    ctx.pipeline("cross_entropy.wgsl", {}, scaleBuf ? "dlogits_scaled" : "dlogits"),
    ctx.pipeline("cross_entropy.wgsl", {}, tiled ? "dh_tiled" : "dh"),
  ]);
  const uniform = (
    c0: number,
    cols: number,
    o: { first?: boolean; last?: boolean; gx?: number },
  ) => {
    const u = new Uint32Array(12);
    u.set([
      rows,
      hidden,
      vocab,
      c0,
      cols,
      o.first ? 1 : 0,
      o.last ? 1 : 0,
      c0 + cols < vocab ? 1 : 0, // dh accumulates on every chunk but the last (pass 2 runs backwards)
      o.gx ?? 0,
      scaleIndex,
    ]);
    new Float32Array(u.buffer)[10] = scaleValue;
    return ctx.uniform(u);
  };
  const encodeLogits = (c0: number, cols: number) =>
    batch.dispatch(pLogits, [args.h, weightChunk(c0, cols), logits, uniform(c0, cols, {})], [
      Math.ceil(cols / edge),
      Math.ceil(rows / edge),
    ]);

  for (let c = 0; c < nChunks; c++) {
    const c0 = c * chunk;
    const cols = Math.min(chunk, vocab - c0);
    encodeLogits(c0, cols);
    const [gx, gy] = grid(Math.ceil(rows / 64));
    batch.dispatch(pStats, [
      logits,
      args.labels,
      stats,
      args.loss,
      args.correct,
      uniform(c0, cols, { first: c === 0, last: c === nChunks - 1, gx }),
    ], [gx, gy]);
  }
  if (!args.dh) return;
  for (let c = nChunks - 1; c >= 0; c--) {
    const c0 = c * chunk;
    const cols = Math.min(chunk, vocab - c0);
    if (c !== nChunks - 1) encodeLogits(c0, cols);
    const [gx, gy] = grid(Math.ceil((rows * cols) / 256));
    const dlBindings: Array<Binding | GPUBuffer> = [
      logits,
      args.labels,
      stats,
      uniform(c0, cols, { gx }),
    ];
    if (scaleBuf) dlBindings.push(scaleBuf);
    batch.dispatch(pDl, dlBindings, [gx, gy]);
    batch.dispatch(pDh, [logits, weightChunk(c0, cols), args.dh, uniform(c0, cols, {})], [
      Math.ceil(hidden / edge),
      Math.ceil(rows / edge),
    ]);
  }
}

export interface SumRowsArgs {
  input: Binding;
  n: number;
  /** out[outIndex] = sum (or += with accumulate, e.g. over micro-batches). */
  out: Binding;
  outIndex?: number;
  accumulate?: boolean;
  /** Element type of input and out; default f32 (u32 for `correct`). */
  type?: "f32" | "u32";
}

/** Sums n elements into one, in a fixed order (same bits every run), in one workgroup. */
export async function encodeSumRows(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: SumRowsArgs,
): Promise<void> {
  const where = "sum rows";
  const { n } = args;
  const outIndex = args.outIndex ?? 0;
  if (!Number.isInteger(n) || n < 0) throw invalidArgument(`${where}: n must be >= 0, got ${n}`);
  checkBindingSize(where, "input", args.input, n);
  checkBindingSize(where, "out", args.out, outIndex + 1);
  const pipeline = await ctx.pipeline("cross_entropy.wgsl", {}, `sum_${args.type ?? "f32"}`);
  const u = new Uint32Array([n, args.accumulate ? 1 : 0, outIndex, 0]);
  batch.dispatch(pipeline, [args.input, args.out, ctx.uniform(u)], [1]);
}
