/**
 * Causal self-attention with grouped-query heads over packed batch rows, without the score
 * matrix (shaders/attention.wgsl, shaders/attention_tiled.wgsl): the forward is an online softmax
 * that saves only the output and one log-sum-exp per (token, head); the backward recomputes the
 * scores from q, k, v and that log-sum-exp. Memory is O(tokens · heads · head_dim): nothing
 * [seq, seq] exists, forward or backward.
 *
 * The backward is three dispatches, each output element owned by one invocation (WGSL has no
 * float atomics): a prep pass puts (lse, dout·out) per (token, head) into a small scratch, a query
 * pass gives dq, a key pass gives dk and dv summed over the query heads of each kv head.
 *
 * Variants, chosen per adapter by the kernel ladder (or forced with `variant`):
 * - `row`: one invocation per query (key) row reading K/V (Q/dout) straight from storage, no
 *   barriers (CPU adapters: llvmpipe, lavapipe);
 * - `tiled`: a workgroup per block of 64 rows sharing K/V (Q/dout) tiles in workgroup memory (GPUs);
 * - `tiled_f16`: `tiled` with q, k, v stored in f16 (tiles and registers), all arithmetic, the
 *   softmax statistics and dout in f32; only where the device has `shader-f16`.
 */
import { sharedScratch } from "./bindings.ts";
import { checkBindingSize, checkCount, UnexpectedShapeError } from "./shape_checks.ts";
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { kernelLadder, type LadderKernel, ProbeBuffers } from "./ladder.ts";

export type AttentionVariant = "row" | "tiled" | "tiled_f16";
export const ATTENTION_VARIANTS: readonly AttentionVariant[] = ["row", "tiled", "tiled_f16"];
/** Rows (queries or keys) per workgroup: WG in both shaders. */
const BLOCK_ROWS = 64;
/** At most this many rows per staged tile (the forward keeps one score per tile row). */
const MAX_KEY_TILE = 32;

export interface AttentionShape {
  batchSize: number;
  seq: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

export interface AttentionArgs extends AttentionShape {
  /** [batchSize*seq, heads*headDim] */
  q: Binding;
  /** [batchSize*seq, kvHeads*headDim] */
  k: Binding;
  v: Binding;
  /** u32 [batchSize*seq]: a query attends to earlier keys of its batch row with the same id. */
  segments: Binding;
  /** [batchSize*seq, heads*headDim] */
  out: Binding;
  /** [batchSize*seq, heads]: log-sum-exp of each query's scaled scores, for the backward. */
  lse: Binding;
  /** Forces a variant (tests, benchmarks); default the kernel ladder's choice. */
  variant?: AttentionVariant;
}

export interface AttentionBackwardArgs extends AttentionShape {
  q: Binding;
  k: Binding;
  v: Binding;
  segments: Binding;
  /** The forward's output and log-sum-exp. */
  out: Binding;
  lse: Binding;
  dout: Binding;
  /** Overwritten, [batchSize*seq, heads*headDim]. */
  dq: Binding;
  /** Overwritten, summed over the query heads sharing each kv head. */
  dk: Binding;
  dv: Binding;
  /**
   * attentionScratchBytes(shape) bytes for (lse, dout·out) per (token, head). Omitted: a scratch
   * buffer kept per context and grown as needed (counted in the "scratch" memory category).
   */
  scratch?: Binding;
  variant?: AttentionVariant;
}

/** Bytes of the saved log-sum-exp, [batch*seq, heads] f32. */
export function attentionLseBytes(s: Pick<AttentionShape, "batchSize" | "seq" | "heads">) {
  return s.batchSize * s.seq * s.heads * 4;
}

/** Scratch bytes the backward pass needs: (lse, delta) per (token, head). The forward needs none. */
export function attentionScratchBytes(s: Pick<AttentionShape, "batchSize" | "seq" | "heads">) {
  return 2 * attentionLseBytes(s);
}

/** Whether `variant` can run on this device: tiled_f16 needs `shader-f16`. */
export function attentionVariantAvailable(ctx: GpuContext, variant: string): boolean {
  return variant === "tiled_f16" ? ctx.capabilities.f16 : ATTENTION_VARIANTS.includes(
    variant as AttentionVariant,
  );
}

export async function encodeAttention(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: AttentionArgs,
): Promise<void> {
  const where = "attention";
  checkShape(where, args);
  const { batchSize, seq, heads, kvHeads, headDim } = args;
  const tokens = batchSize * seq;
  checkBindingSize(where, "q", args.q, tokens * heads * headDim);
  checkBindingSize(where, "k", args.k, tokens * kvHeads * headDim);
  checkBindingSize(where, "v", args.v, tokens * kvHeads * headDim);
  checkBindingSize(where, "segments", args.segments, tokens);
  checkBindingSize(where, "out", args.out, tokens * heads * headDim);
  checkBindingSize(where, "lse", args.lse, tokens * heads);
  const variant = await chooseVariant(ctx, where, args.variant);
  const [shader, sp] = shaderOf(ctx, variant, headDim);
  const pipeline = await ctx.pipeline(shader, sp, "forward", ATTENTION_PARAMS);
  const [gx, gy] = workgroups(variant, batchSize * heads, seq);
  batch.dispatch(pipeline, [
    args.q,
    args.k,
    args.v,
    args.segments,
    args.out,
    args.lse,
    ctx.uniform(params(args, gx)),
  ], [gx, gy]);
}

export async function encodeAttentionBackward(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: AttentionBackwardArgs,
): Promise<void> {
  const where = "attention backward";
  checkShape(where, args);
  const { batchSize, seq, heads, kvHeads, headDim } = args;
  const tokens = batchSize * seq;
  checkBindingSize(where, "q", args.q, tokens * heads * headDim);
  checkBindingSize(where, "k", args.k, tokens * kvHeads * headDim);
  checkBindingSize(where, "v", args.v, tokens * kvHeads * headDim);
  checkBindingSize(where, "segments", args.segments, tokens);
  checkBindingSize(where, "out", args.out, tokens * heads * headDim);
  checkBindingSize(where, "lse", args.lse, tokens * heads);
  checkBindingSize(where, "dout", args.dout, tokens * heads * headDim);
  checkBindingSize(where, "dq", args.dq, tokens * heads * headDim);
  checkBindingSize(where, "dk", args.dk, tokens * kvHeads * headDim);
  checkBindingSize(where, "dv", args.dv, tokens * kvHeads * headDim);
  const scratchBytes = attentionScratchBytes(args);
  const stats = args.scratch ??
    sharedScratch(ctx, "attention scratch (lse, delta)", scratchBytes);
  checkBindingSize(where, "scratch", stats, scratchBytes / 4);
  const variant = await chooseVariant(ctx, where, args.variant);
  const [shader, sp] = shaderOf(ctx, variant, headDim);
  const prep = await ctx.pipeline(
    "attention.wgsl",
    { HEAD_DIM: headDim },
    "backward_prep",
    ATTENTION_PARAMS,
  );
  const query = await ctx.pipeline(shader, sp, "backward_query", ATTENTION_PARAMS);
  const key = await ctx.pipeline(shader, sp, "backward_key", ATTENTION_PARAMS);

  const [px, py] = grid(Math.ceil((tokens * heads) / BLOCK_ROWS));
  batch.dispatch(prep, [
    args.out,
    args.dout,
    args.lse,
    stats,
    ctx.uniform(params(args, px)),
  ], [px, py]);
  const [qx, qy] = workgroups(variant, batchSize * heads, seq);
  batch.dispatch(query, [
    args.q,
    args.k,
    args.v,
    args.segments,
    stats,
    args.dout,
    args.dq,
    ctx.uniform(params(args, qx)),
  ], [qx, qy]);
  const [kx, ky] = workgroups(variant, batchSize * kvHeads, seq);
  batch.dispatch(key, [
    args.q,
    args.k,
    args.v,
    args.segments,
    stats,
    args.dout,
    args.dk,
    args.dv,
    ctx.uniform(params(args, kx)),
  ], [kx, ky]);
}

async function chooseVariant(
  ctx: GpuContext,
  where: string,
  forced: AttentionVariant | undefined,
): Promise<AttentionVariant> {
  const v = forced ?? (await kernelLadder.variant(ctx, "attention") as AttentionVariant);
  if (!ATTENTION_VARIANTS.includes(v)) throw invalidArgument(`${where}: unknown variant ${v}`);
  if (!attentionVariantAvailable(ctx, v)) {
    throw invalidArgument(`${where}: variant ${v} needs shader-f16, which this device lacks`);
  }
  return v;
}

/** The variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts). */
export function chooseAttentionVariant(ctx: GpuContext): AttentionVariant {
  return kernelLadder.choice(ctx, "attention") as AttentionVariant;
}

/**
 * The shader file and template parameters of a variant. Tiled: KEY_TILE staged rows must fit the
 * adapter's workgroup storage in every entry point: in the forward, a K and a V row in T, a
 * segment id and a score for each of the 64 queries; in the key pass, a scale·Q row in T, a dout
 * row in f32, and segment, lse and delta.
 */
function shaderOf(
  ctx: GpuContext,
  variant: AttentionVariant,
  headDim: number,
): [string, Record<string, string | number>] {
  if (variant === "row") return ["attention.wgsl", { HEAD_DIM: headDim }];
  const f16 = variant === "tiled_f16";
  const vec4Bytes = f16 ? 8 : 16;
  const vec4s = Math.ceil(headDim / 4);
  const bytesPerRow = Math.max(
    2 * vec4s * vec4Bytes + 4 + 4 * BLOCK_ROWS,
    vec4s * (vec4Bytes + 16) + 12,
  );
  const fit = Math.floor(ctx.limits.maxComputeWorkgroupStorageSize / bytesPerRow);
  const keyTile = Math.max(1, Math.min(MAX_KEY_TILE, fit >= 4 ? fit - (fit % 4) : fit));
  return ["attention_tiled.wgsl", {
    HEAD_DIM: headDim,
    KEY_TILE: keyTile,
    TILE_T: f16 ? "f16" : "f32",
    ENABLE: f16 ? "enable f16;" : "",
  }];
}

/** Row: one invocation per (row, head, position); tiled: a workgroup per 64 of them. */
function workgroups(
  variant: AttentionVariant,
  rowsTimesHeads: number,
  seq: number,
): [number, number] {
  return variant === "row"
    ? grid(Math.ceil((rowsTimesHeads * seq) / BLOCK_ROWS))
    : grid(rowsTimesHeads * Math.ceil(seq / BLOCK_ROWS));
}

/** This kernel's entry in the kernel ladder (listed in src/kernels/registry.ts). */
export const ATTENTION_LADDER: LadderKernel = {
  name: "attention",
  variants: ATTENTION_VARIANTS,
  prior: (ctx) => ctx.isSoftware ? "row" : "tiled",
  variantAvailable: attentionVariantAvailable,
  shaders: ["attention.wgsl", "attention_tiled.wgsl", "attention_params.wgsl"],
  // Forward and backward of one 64-token row, 8 heads over 4 kv heads of 64.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const shape = { batchSize: 1, seq: 64, heads: 8, kvHeads: 4, headDim: 64 };
    const tokens = shape.seq;
    const qn = tokens * shape.heads * shape.headDim;
    const kn = tokens * shape.kvHeads * shape.headDim;
    const io = {
      ...shape,
      q: bufs.random("ladder.attn.q", qn, 8),
      k: bufs.random("ladder.attn.k", kn, 9),
      v: bufs.random("ladder.attn.v", kn, 10),
      segments: bufs.upload("ladder.attn.segments", new Uint32Array(tokens)),
      out: bufs.empty("ladder.attn.out", qn * 4),
      lse: bufs.empty("ladder.attn.lse", attentionLseBytes(shape)),
    };
    const grads = {
      dout: bufs.random("ladder.attn.dout", qn, 11),
      dq: bufs.empty("ladder.attn.dq", qn * 4),
      dk: bufs.empty("ladder.attn.dk", kn * 4),
      dv: bufs.empty("ladder.attn.dv", kn * 4),
      scratch: bufs.empty("ladder.attn.scratch", attentionScratchBytes(shape)),
    };
    return Promise.resolve({
      run: async (batch: DispatchBatch, v: string) => {
        const variant = v as AttentionVariant;
        await encodeAttention(ctx, batch, { ...io, variant });
        await encodeAttentionBackward(ctx, batch, { ...io, ...grads, variant });
      },
      destroy: () => bufs.destroy(),
    });
  },
};

/** shaders/attention_params.wgsl's Params, which every attention entry point takes. */
const ATTENTION_PARAMS = uniformLayout("Params", {
  seq: "u32",
  heads: "u32",
  kv_heads: "u32",
  // Query heads per kv head (GQA).
  group: "u32",
  // Batch rows (sequences of `seq` tokens).
  rows: "u32",
  groups_x: "u32",
  // Tiled variants: blocks of BLOCK_ROWS queries (keys) per sequence.
  blocks: "u32",
  _pad0: "u32",
  // 1 / sqrt(head_dim).
  scale: "f32",
  _pad1: "u32",
  _pad2: "u32",
  _pad3: "u32",
});

function params(s: AttentionShape, gx: number): Uint32Array {
  return ATTENTION_PARAMS.pack({
    seq: s.seq,
    heads: s.heads,
    kv_heads: s.kvHeads,
    group: s.heads / s.kvHeads,
    rows: s.batchSize,
    groups_x: gx,
    blocks: Math.ceil(s.seq / BLOCK_ROWS),
    scale: 1 / Math.sqrt(s.headDim),
  });
}

function checkShape(where: string, s: AttentionShape): void {
  for (const name of ["batchSize", "seq", "heads", "kvHeads", "headDim"] as const) {
    checkCount(where, name, s[name]);
  }
  if (s.heads % s.kvHeads !== 0) {
    throw new UnexpectedShapeError(
      where,
      "heads",
      `a multiple of kvHeads ${s.kvHeads}`,
      String(s.heads),
    );
  }
}
