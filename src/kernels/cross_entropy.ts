/**
 * The frozen lm_head fused with token cross-entropy (shaders/cross_entropy*.wgsl), chunked over
 * token rows AND vocabulary columns, so the [tokens, vocab] logits never exist in full: the
 * scratch holds one block of [rowChunk, vocabChunk] logits and [rowChunk, 4] softmax stats,
 * whatever the number of tokens. lm_head is a 16-bit table in row chunks (src/kernels/
 * row_chunks.ts); a vocabulary block never straddles two table chunks (the last block of a
 * chunk is shorter), so each pass binds one chunk whole. Per row chunk:
 *   forward, per vocabulary block: logits = h W_block^T, then an online softmax per row (running
 *     max, sum of exp, first argmax, the label's logit); the last block writes loss and correct;
 *   backward (only when dh is wanted), per block in reverse: logits again, dlogits = (softmax -
 *     onehot) * gradScale in place, dh (+)= dlogits W_block. The last block's logits are still in
 *     scratch after the forward, so the backward starts without recomputing them.
 * No gradient flows into lm_head (it is frozen). Also encodeLmHeadLogits (full logits of a few
 * rows, for generation) and encodeSumRows (per-row losses or correct counts to one number).
 */
import { bindingParts, sharedScratch } from "./bindings.ts";
import { checkBindingSize, checkCount, UnexpectedShapeError } from "./shape_checks.ts";
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { kernelLadder, type LadderKernel, ProbeBuffers } from "./ladder.ts";
import { RowChunkedTable } from "./row_chunks.ts";

export const IGNORE_INDEX = -100;

/** Vocabulary columns per pass by default (ModelGraph's and the estimator's default too). */
export const DEFAULT_VOCAB_CHUNK = 2048;
/** Token rows per pass by default: the logits scratch is 8 MiB at the default vocabulary chunk. */
export const DEFAULT_ROW_CHUNK = 1024;

export interface LmHeadCrossEntropyArgs {
  /** f32 [rows, hidden], the final-normed hidden states. */
  h: Binding;
  /** lm_head [vocab, hidden], 16-bit in row chunks; vocab is its row count. */
  weight: RowChunkedTable;
  /** i32 [rows]; -100 = ignore. A label outside [0, vocab) gives a NaN loss. */
  labels: Binding;
  rows: number;
  hidden: number;
  /** Vocabulary columns per pass (at most; a table chunk's last block may be shorter). */
  chunk: number;
  /** Token rows per pass; default DEFAULT_ROW_CHUNK (at most rows). */
  rowChunk?: number;
  /** f32 [rows]: cross-entropy in nats, 0 where ignored. */
  loss: Binding;
  /** u32 [rows]: 1 where argmax (first maximum) == label. */
  correct: Binding;
  /** f32 [rows, hidden]: if given, overwritten with d(sum(loss) * gradScale)/dh. */
  dh?: Binding;
  /** Multiplies the gradient: a number, or a buffer holding it at element gradScaleIndex. */
  gradScale?: number | Binding;
  gradScaleIndex?: number;
  /**
   * crossEntropyScratchBytes(rowChunk, chunk) bytes (both clamped to rows and vocab). Omitted: a
   * scratch buffer kept per context and grown as needed ("scratch" memory category).
   */
  scratch?: Binding;
  /** Forces a variant (tests, benchmarks); default: the kernel ladder's choice. */
  variant?: CrossEntropyVariant;
}

/**
 * `blocked`: 4x4 register blocks, no workgroup memory, one invocation per row for the softmax
 * stats (CPU adapters, where barriers are slow);
 * `tiled`: 64x64 output tiles staged through workgroup memory (real GPUs);
 * `tiled_f16`: as tiled, the logits product with f16 tiles and f32 accumulation (`shader-f16`);
 * `subgroup`: as tiled, the softmax stats reduced by a subgroup per row (`subgroups`);
 * `subgroup_f16`: both.
 */
export type CrossEntropyVariant = "blocked" | "tiled" | "tiled_f16" | "subgroup" | "subgroup_f16";

interface VariantPlan {
  logits: { shader: string; entry: string };
  dh: string;
  stats: { shader: string; entry: string; rowsPerGroup: number };
  /** Output edge covered by one workgroup of the product kernels. */
  edge: number;
  f16: boolean;
  subgroups: boolean;
}

const CE = "cross_entropy.wgsl";
const SERIAL_STATS = { shader: CE, entry: "stats", rowsPerGroup: 64 };
const SUBGROUP_STATS = {
  shader: "cross_entropy_subgroup.wgsl",
  entry: "stats_subgroup",
  rowsPerGroup: 8,
};
const TILED_LOGITS = { shader: CE, entry: "logits_tiled" };
const F16_LOGITS = { shader: "cross_entropy_f16.wgsl", entry: "logits_tiled_f16" };
const tiled = { dh: "dh_tiled", edge: 64 };

const PLANS: Record<CrossEntropyVariant, VariantPlan> = {
  blocked: {
    logits: { shader: CE, entry: "logits" },
    dh: "dh",
    stats: SERIAL_STATS,
    edge: 32,
    f16: false,
    subgroups: false,
  },
  tiled: { ...tiled, logits: TILED_LOGITS, stats: SERIAL_STATS, f16: false, subgroups: false },
  tiled_f16: { ...tiled, logits: F16_LOGITS, stats: SERIAL_STATS, f16: true, subgroups: false },
  subgroup: { ...tiled, logits: TILED_LOGITS, stats: SUBGROUP_STATS, f16: false, subgroups: true },
  subgroup_f16: { ...tiled, logits: F16_LOGITS, stats: SUBGROUP_STATS, f16: true, subgroups: true },
};

export const CROSS_ENTROPY_VARIANTS = Object.keys(PLANS) as readonly CrossEntropyVariant[];

/**
 * Whether this device can run a variant: f16 variants need `shader-f16`; subgroup ones need
 * `subgroups` with subgroups that fill a 64-invocation workgroup evenly (at most 64 wide).
 */
export function crossEntropyVariantAvailable(ctx: GpuContext, variant: string): boolean {
  const plan = PLANS[variant as CrossEntropyVariant];
  if (!plan) return false;
  const caps = ctx.capabilities;
  if (plan.f16 && !caps.f16) return false;
  if (plan.subgroups && !(caps.subgroups && caps.subgroupMaxSize <= 64)) return false;
  return true;
}

/** The variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts). */
export function crossEntropyVariant(ctx: GpuContext): CrossEntropyVariant {
  return kernelLadder.choice(ctx, "cross_entropy") as CrossEntropyVariant;
}

/** This kernel's entry in the kernel ladder (listed in src/kernels/registry.ts). */
export const CROSS_ENTROPY_LADDER: LadderKernel = {
  name: "cross_entropy",
  variants: CROSS_ENTROPY_VARIANTS,
  variantAvailable: crossEntropyVariantAvailable,
  prior: (ctx) => ctx.isSoftware ? "blocked" : "tiled",
  shaders: [
    "cross_entropy.wgsl",
    "cross_entropy_common.wgsl",
    "cross_entropy_f16.wgsl",
    "cross_entropy_subgroup.wgsl",
    "table16.wgsl",
  ],
  // 64 rows, hidden 128, a 1024-word bf16 vocabulary in two blocks, with the gradient.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const [rows, hidden, vocab, chunk] = [64, 128, 1024, 512];
    const labels = Int32Array.from({ length: rows }, (_, i) => (i * 37) % vocab);
    // bf16 patterns of values in [-1/8, 1/8): sign, exponent 2^-4..2^-11, random mantissa.
    const bits = Uint16Array.from(
      { length: vocab * hidden },
      (_, i) => ((i & 1) << 15) | ((116 + (i % 8)) << 7) | ((i * 37) & 0x7f),
    );
    const weight = new RowChunkedTable("bf16", vocab, hidden, [
      { buffer: bufs.upload("ladder.ce.w", bits), row0: 0, rows: vocab },
    ]);
    const common = {
      h: bufs.random("ladder.ce.h", rows * hidden, 6),
      weight,
      labels: bufs.upload("ladder.ce.labels", labels),
      rows,
      hidden,
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
};

function align256(bytes: number): number {
  return Math.ceil(bytes / 256) * 256;
}

/** Scratch: one block of logits [rowChunk, vocabChunk], then softmax stats [rowChunk, 4]. */
export function crossEntropyScratchBytes(rowChunk: number, vocabChunk: number): number {
  return align256(rowChunk * vocabChunk * 4) + rowChunk * 16;
}

/**
 * The block shape for `rows` tokens and a `vocab` vocabulary: the requested sizes clamped to
 * the problem, and (given a binding limit) shrunk until the logits block fits one binding.
 * ModelGraph sizes its scratch with this, and the memory estimator mirrors it.
 */
export function crossEntropyChunks(
  rows: number,
  vocab: number,
  opts: { vocabChunk?: number; rowChunk?: number; maxBindingBytes?: number } = {},
): { rowChunk: number; vocabChunk: number } {
  const limit = opts.maxBindingBytes ?? Infinity;
  const vocabChunk = Math.max(
    1,
    Math.min(opts.vocabChunk ?? DEFAULT_VOCAB_CHUNK, vocab, Math.floor(limit / 4)),
  );
  const rowChunk = Math.max(
    1,
    Math.min(opts.rowChunk ?? DEFAULT_ROW_CHUNK, rows, Math.floor(limit / (vocabChunk * 4))),
  );
  return { rowChunk, vocabChunk };
}

/** One vocabulary block: columns [c0, c0+cols) = rows [wRow0, wRow0+cols) of table chunk `chunk`. */
interface VocabBlock {
  chunk: number;
  c0: number;
  wRow0: number;
  cols: number;
}

function vocabBlocks(table: RowChunkedTable, maxCols: number): VocabBlock[] {
  const out: VocabBlock[] = [];
  table.chunks.forEach((ch, i) => {
    for (let w = 0; w < ch.rows; w += maxCols) {
      out.push({ chunk: i, c0: ch.row0 + w, wRow0: w, cols: Math.min(maxCols, ch.rows - w) });
    }
  });
  return out;
}

interface PassFields {
  rows: number;
  r0: number;
  block: VocabBlock;
  first?: boolean;
  last?: boolean;
  accumulate?: boolean;
  statsGroupsX?: number;
  dlGroupsX?: number;
  outStride: number;
  outCol0: number;
  scaleIndex?: number;
  gradScale?: number;
}

/** shaders/cross_entropy_common.wgsl's Params, shared by the passes of one vocabulary block. */
const CE_PARAMS = uniformLayout("Params", {
  rows: "u32",
  hidden: "u32",
  vocab: "u32",
  c0: "u32",
  cols: "u32",
  first: "u32",
  last: "u32",
  accumulate: "u32",
  stats_groups_x: "u32",
  scale_index: "u32",
  grad_scale: "f32",
  r0: "u32",
  w_row0: "u32",
  out_stride: "u32",
  out_col0: "u32",
  dl_groups_x: "u32",
});

/** shaders/cross_entropy.wgsl's SumParams (encodeSumRows). */
const SUM_PARAMS = uniformLayout("SumParams", {
  n: "u32",
  accumulate: "u32",
  out_index: "u32",
  _pad: "u32",
});

/** The Params uniform of one block's passes. */
function passUniform(ctx: GpuContext, hidden: number, vocab: number, p: PassFields): GPUBuffer {
  return ctx.uniform(CE_PARAMS.pack({
    rows: p.rows,
    hidden,
    vocab,
    c0: p.block.c0,
    cols: p.block.cols,
    first: p.first ?? false,
    last: p.last ?? false,
    accumulate: p.accumulate ?? false,
    stats_groups_x: p.statsGroupsX ?? 0,
    scale_index: p.scaleIndex ?? 0,
    grad_scale: p.gradScale ?? 1,
    r0: p.r0,
    w_row0: p.block.wRow0,
    out_stride: p.outStride,
    out_col0: p.outCol0,
    dl_groups_x: p.dlGroupsX ?? 0,
  }));
}

async function resolveVariant(
  ctx: GpuContext,
  where: string,
  forced: CrossEntropyVariant | undefined,
): Promise<VariantPlan> {
  const variant = forced ?? (await kernelLadder.variant(ctx, "cross_entropy"));
  const plan = PLANS[variant as CrossEntropyVariant];
  if (!plan) throw invalidArgument(`${where}: unknown variant ${variant}`);
  if (!crossEntropyVariantAvailable(ctx, variant)) {
    throw invalidArgument(
      `${where}: variant ${variant} needs ${
        [plan.f16 && "shader-f16", plan.subgroups && "subgroups (at most 64 wide)"]
          .filter(Boolean).join(" and ")
      }, which this device lacks`,
    );
  }
  return plan;
}

function checkTable(where: string, table: RowChunkedTable, hidden: number): void {
  if (!(table instanceof RowChunkedTable)) {
    throw invalidArgument(`${where}: weight must be a 16-bit table in row chunks`);
  }
  if (table.cols !== hidden) {
    throw new UnexpectedShapeError(
      where,
      "weight",
      `${hidden} columns (hidden)`,
      `${table.cols} columns (${table.chunks[0]?.buffer.label ?? "table"})`,
    );
  }
}

export async function encodeLmHeadCrossEntropy(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: LmHeadCrossEntropyArgs,
): Promise<void> {
  const where = "lm_head cross-entropy";
  const { rows, hidden, weight } = args;
  for (const name of ["rows", "hidden", "chunk", "rowChunk"] as const) {
    const v = args[name];
    if (v === undefined && name === "rowChunk") continue;
    checkCount(where, name, v!);
  }
  checkTable(where, weight, hidden);
  const vocab = weight.rows;
  const cols = Math.min(args.chunk, vocab);
  const rowChunk = Math.min(args.rowChunk ?? DEFAULT_ROW_CHUNK, rows);
  checkBindingSize(where, "h", args.h, rows * hidden);
  checkBindingSize(where, "labels", args.labels, rows);
  checkBindingSize(where, "loss", args.loss, rows);
  checkBindingSize(where, "correct", args.correct, rows);
  if (args.dh) checkBindingSize(where, "dh", args.dh, rows * hidden);
  const scaleIndex = args.gradScaleIndex ?? 0;
  const scaleBuf = typeof args.gradScale === "object" ? args.gradScale : undefined;
  if (scaleBuf) checkBindingSize(where, "gradScale", scaleBuf, scaleIndex + 1);
  const scaleValue = typeof args.gradScale === "number" ? args.gradScale : 1;
  if (!Number.isFinite(scaleValue)) throw invalidArgument(`${where}: gradScale must be finite`);

  const logitsBytes = rowChunk * cols * 4;
  const limit = ctx.limits.maxStorageBufferBindingSize;
  if (logitsBytes > limit) {
    throw new UnexpectedShapeError(
      where,
      "chunk",
      `a logits block within the adapter's binding limit ${limit} bytes (use smaller chunks)`,
      `${rowChunk} rows x ${cols} columns (${logitsBytes} bytes)`,
    );
  }
  const scratchBytes = crossEntropyScratchBytes(rowChunk, cols);
  const scratch = args.scratch ?? sharedScratch(ctx, "cross-entropy scratch", scratchBytes);
  checkBindingSize(where, "scratch", scratch, scratchBytes / 4);
  const s = bindingParts(scratch);
  const logits: Binding = { buffer: s.buffer, offset: s.offset, size: logitsBytes };
  const stats: Binding = {
    buffer: s.buffer,
    offset: s.offset + align256(logitsBytes),
    size: rowChunk * 16,
  };

  const plan = await resolveVariant(ctx, where, args.variant);
  const tableParams = { TABLE_F16: weight.dtype === "f16" ? 1 : 0 };
  const [pLogits, pStats, pDl, pDh] = await Promise.all([
    ctx.pipeline(plan.logits.shader, tableParams, plan.logits.entry, CE_PARAMS),
    ctx.pipeline(plan.stats.shader, tableParams, plan.stats.entry, CE_PARAMS),
    ctx.pipeline(CE, tableParams, scaleBuf ? "dlogits_scaled" : "dlogits", CE_PARAMS),
    ctx.pipeline(CE, tableParams, plan.dh, CE_PARAMS),
  ]);
  const blocks = vocabBlocks(weight, cols);
  const edge = plan.edge;

  for (let r0 = 0; r0 < rows; r0 += rowChunk) {
    const n = Math.min(rowChunk, rows - r0);
    const [sx, sy] = grid(Math.ceil(n / plan.stats.rowsPerGroup));
    // One uniform per block of this row chunk, shared by its four kinds of pass.
    const uniforms = blocks.map((block, b) => {
      const [dx] = grid(Math.ceil((n * block.cols) / 256));
      return passUniform(ctx, hidden, vocab, {
        rows: n,
        r0,
        block,
        first: b === 0,
        last: b === blocks.length - 1,
        // The backward runs the blocks in reverse: the last block writes dh, the others add.
        accumulate: b !== blocks.length - 1,
        statsGroupsX: sx,
        dlGroupsX: dx,
        outStride: block.cols,
        outCol0: 0,
        scaleIndex,
        gradScale: scaleValue,
      });
    });
    const encodeLogits = (b: number) =>
      batch.dispatch(
        pLogits,
        [args.h, weight.chunks[blocks[b].chunk].buffer, logits, uniforms[b]],
        [
          Math.ceil(blocks[b].cols / edge),
          Math.ceil(n / edge),
        ],
      );
    for (let b = 0; b < blocks.length; b++) {
      encodeLogits(b);
      batch.dispatch(
        pStats,
        [logits, args.labels, stats, args.loss, args.correct, uniforms[b]],
        [sx, sy],
      );
    }
    if (!args.dh) continue;
    for (let b = blocks.length - 1; b >= 0; b--) {
      if (b !== blocks.length - 1) encodeLogits(b);
      const [dx, dy] = grid(Math.ceil((n * blocks[b].cols) / 256));
      const dlBindings: Array<Binding | GPUBuffer> = [logits, args.labels, stats, uniforms[b]];
      if (scaleBuf) dlBindings.push(scaleBuf);
      batch.dispatch(pDl, dlBindings, [dx, dy]);
      batch.dispatch(
        pDh,
        [logits, weight.chunks[blocks[b].chunk].buffer, args.dh, uniforms[b]],
        [Math.ceil(hidden / edge), Math.ceil(n / edge)],
      );
    }
  }
}

export interface LmHeadLogitsArgs {
  /** f32 [rows, hidden] */
  h: Binding;
  weight: RowChunkedTable;
  rows: number;
  hidden: number;
  /** f32 [rows, vocab]: the full logits (meant for a few rows, e.g. generation). */
  out: Binding;
  variant?: CrossEntropyVariant;
}

/** out = h lm_head^T in full, one dispatch per table chunk, with the cross-entropy's product. */
export async function encodeLmHeadLogits(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: LmHeadLogitsArgs,
): Promise<void> {
  const where = "lm_head logits";
  const { rows, hidden, weight } = args;
  for (const name of ["rows", "hidden"] as const) checkCount(where, name, args[name]);
  checkTable(where, weight, hidden);
  checkBindingSize(where, "h", args.h, rows * hidden);
  checkBindingSize(where, "out", args.out, rows * weight.rows);
  const plan = await resolveVariant(ctx, where, args.variant);
  const pipeline = await ctx.pipeline(
    plan.logits.shader,
    { TABLE_F16: weight.dtype === "f16" ? 1 : 0 },
    plan.logits.entry,
    CE_PARAMS,
  );
  for (const block of vocabBlocks(weight, Infinity)) {
    const u = passUniform(ctx, hidden, weight.rows, {
      rows,
      r0: 0,
      block,
      outStride: weight.rows,
      outCol0: block.c0,
    });
    batch.dispatch(pipeline, [args.h, weight.chunks[block.chunk].buffer, args.out, u], [
      Math.ceil(block.cols / plan.edge),
      Math.ceil(rows / plan.edge),
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
  checkCount(where, "n", n, 0);
  checkBindingSize(where, "input", args.input, n);
  checkBindingSize(where, "out", args.out, outIndex + 1);
  const pipeline = await ctx.pipeline(
    CE,
    { TABLE_F16: 0 },
    `sum_${args.type ?? "f32"}`,
    SUM_PARAMS,
  );
  const u = SUM_PARAMS.pack({ n, accumulate: args.accumulate ?? false, out_index: outIndex });
  batch.dispatch(pipeline, [args.input, args.out, ctx.uniform(u)], [1]);
}
