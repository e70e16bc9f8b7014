/**
 * Causal self-attention with grouped-query heads over packed batch rows (shaders/attention.wgsl).
 * The softmax is materialized in `probs` [batch, heads, seq, seq] for the backward pass. When
 * probs for the whole batch exceed the adapter's storage binding limit the work is split by
 * batch rows (each slice then starts at a 256-byte multiple, which seq*seq*heads*4 usually is).
 * Two variants, chosen per adapter by the kernel ladder (or forced with `variant`): `row`, one
 * invocation per query (key) row reading K/V straight from storage, no barriers (llvmpipe); and
 * `tiled`, a workgroup per block of 64 rows sharing K/V (Q/dout) tiles in workgroup memory (GPUs).
 * Both visit keys in the same order, so they give the same bits.
 */
import { bindingParts, checkBindingSize, sharedScratch } from "./bindings.ts";
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { kernelLadder, ProbeBuffers, registerLadderKernel } from "./ladder.ts";

export type AttentionVariant = "row" | "tiled";
export const ATTENTION_VARIANTS: readonly AttentionVariant[] = ["row", "tiled"];
/** Rows (queries or keys) per workgroup of the tiled variant; WG in shaders/attention.wgsl. */
const TILED_ROWS = 64;

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
  /** [batchSize, heads, seq, seq], written with zeros where masked. */
  probs: Binding;
  /** Split by batch rows as if the storage binding limit were this (tests); default the adapter's. */
  maxBindingBytes?: number;
  /** Forces a variant (tests, benchmarks); default the kernel ladder's choice. */
  variant?: AttentionVariant;
}

export interface AttentionBackwardArgs extends AttentionShape {
  q: Binding;
  k: Binding;
  v: Binding;
  /** Not read: the zeros of `probs` carry the mask. Accepted so both passes take the same inputs. */
  segments?: Binding;
  /** As written by encodeAttention. */
  probs: Binding;
  dout: Binding;
  /** Overwritten, [batchSize*seq, heads*headDim]. */
  dq: Binding;
  /** Overwritten, summed over the query heads sharing each kv head. */
  dk: Binding;
  dv: Binding;
  /**
   * attentionScratchBytes(shape) bytes for dS (same size as probs). Omitted: a scratch buffer
   * kept per context and grown as needed (counted in the "scratch" memory category).
   */
  scratch?: Binding;
  maxBindingBytes?: number;
  variant?: AttentionVariant;
}

/** Bytes of the saved softmax, [batch, heads, seq, seq] f32. */
export function attentionProbsBytes(s: Pick<AttentionShape, "batchSize" | "seq" | "heads">) {
  return s.batchSize * s.heads * s.seq * s.seq * 4;
}

/** Scratch bytes the backward pass needs (dS, the size of probs). The forward needs none. */
export function attentionScratchBytes(s: Pick<AttentionShape, "batchSize" | "seq" | "heads">) {
  return attentionProbsBytes(s);
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
  checkBindingSize(where, "probs", args.probs, batchSize * heads * seq * seq);
  const variant = await chooseVariant(ctx, args.variant);
  const tiled = variant === "tiled";
  const pipeline = await ctx.pipeline(
    "attention.wgsl",
    shaderParams(ctx, headDim),
    tiled ? "forward_tiled" : "forward",
  );
  for (const part of rowParts(ctx, where, args, [args.probs])) {
    const [gx, gy] = workgroups(part.rows * heads, seq, tiled);
    batch.dispatch(pipeline, [
      args.q,
      args.k,
      args.v,
      args.segments,
      args.out,
      part.slices[0],
      ctx.uniform(params(args, part.row0, part.rows, gx)),
    ], [gx, gy]);
  }
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
  if (args.segments) checkBindingSize(where, "segments", args.segments, tokens);
  checkBindingSize(where, "probs", args.probs, batchSize * heads * seq * seq);
  checkBindingSize(where, "dout", args.dout, tokens * heads * headDim);
  checkBindingSize(where, "dq", args.dq, tokens * heads * headDim);
  checkBindingSize(where, "dk", args.dk, tokens * kvHeads * headDim);
  checkBindingSize(where, "dv", args.dv, tokens * kvHeads * headDim);
  const scratchBytes = attentionScratchBytes(args);
  const scratch = args.scratch ?? sharedScratch(ctx, "attention scratch (dS)", scratchBytes);
  checkBindingSize(where, "scratch", scratch, scratchBytes / 4);
  const variant = await chooseVariant(ctx, args.variant);
  const tiled = variant === "tiled";
  const suffix = tiled ? "_tiled" : "";
  const sp = shaderParams(ctx, headDim);
  const query = await ctx.pipeline("attention.wgsl", sp, `backward_query${suffix}`);
  const key = await ctx.pipeline("attention.wgsl", sp, `backward_key${suffix}`);
  for (const part of rowParts(ctx, where, args, [args.probs, scratch])) {
    const [probs, ds] = part.slices;
    const [qx, qy] = workgroups(part.rows * heads, seq, tiled);
    batch.dispatch(query, [
      args.k,
      args.v,
      probs,
      args.dout,
      ds,
      args.dq,
      ctx.uniform(params(args, part.row0, part.rows, qx)),
    ], [qx, qy]);
    const [kx, ky] = workgroups(part.rows * kvHeads, seq, tiled);
    batch.dispatch(key, [
      args.q,
      probs,
      ds,
      args.dout,
      args.dk,
      args.dv,
      ctx.uniform(params(args, part.row0, part.rows, kx)),
    ], [kx, ky]);
  }
}

async function chooseVariant(
  ctx: GpuContext,
  forced: AttentionVariant | undefined,
): Promise<AttentionVariant> {
  const v = forced ?? (await kernelLadder.variant(ctx, "attention") as AttentionVariant);
  if (!ATTENTION_VARIANTS.includes(v)) throw invalidArgument(`attention: unknown variant ${v}`);
  return v;
}

/** The variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts). */
export function chooseAttentionVariant(ctx: GpuContext): AttentionVariant {
  return kernelLadder.choice(ctx, "attention") as AttentionVariant;
}

/**
 * HEAD_DIM, and the tiled variant's staged rows: two tiles of KEY_TILE x head_dim floats (and
 * KEY_TILE segment ids) must fit the adapter's workgroup storage.
 */
function shaderParams(ctx: GpuContext, headDim: number) {
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  const keyTile = Math.max(1, Math.min(32, Math.floor(limit / (8 * headDim + 4))));
  return { HEAD_DIM: headDim, KEY_TILE: keyTile, TILE_FLOATS: keyTile * headDim };
}

/** Row variant: one invocation per (row, head, position); tiled: a workgroup per 64 of them. */
function workgroups(rowsTimesHeads: number, seq: number, tiled: boolean): [number, number] {
  return tiled
    ? grid(rowsTimesHeads * Math.ceil(seq / TILED_ROWS))
    : grid(Math.ceil((rowsTimesHeads * seq) / 64));
}

registerLadderKernel({
  name: "attention",
  variants: ATTENTION_VARIANTS,
  prior: (ctx) => ctx.isSoftware ? "row" : "tiled",
  shaders: ["attention.wgsl"],
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
      probs: bufs.empty("ladder.attn.probs", attentionProbsBytes(shape)),
    };
    const out = bufs.empty("ladder.attn.out", qn * 4);
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
        await encodeAttention(ctx, batch, { ...io, out, variant });
        await encodeAttentionBackward(ctx, batch, { ...io, ...grads, variant });
      },
      destroy: () => bufs.destroy(),
    });
  },
});

function params(s: AttentionShape, row0: number, rows: number, gx: number): Uint32Array {
  const u = new Uint32Array(12);
  u.set([s.seq, s.heads, s.kvHeads, s.headDim, rows, row0, s.heads / s.kvHeads, gx]);
  new Float32Array(u.buffer)[8] = 1 / Math.sqrt(s.headDim);
  u[9] = Math.ceil(s.seq / TILED_ROWS);
  return u;
}

interface RowPart {
  row0: number;
  rows: number;
  /** The [rows, heads, seq, seq] slice of each per-row tensor (probs, dS). */
  slices: Binding[];
}

/** Batch rows per dispatch so that a [rows, heads, seq, seq] slice fits one storage binding. */
function rowParts(
  ctx: GpuContext,
  where: string,
  s: AttentionShape & { maxBindingBytes?: number },
  perRow: Binding[],
): RowPart[] {
  const rowBytes = s.heads * s.seq * s.seq * 4;
  const limit = Math.min(s.maxBindingBytes ?? Infinity, ctx.limits.maxStorageBufferBindingSize);
  if (rowBytes * s.batchSize <= limit) {
    return [{
      row0: 0,
      rows: s.batchSize,
      slices: perRow.map((b) => exact(b, rowBytes * s.batchSize)),
    }];
  }
  // Slices must start at multiples of 256 bytes.
  const align = 256 / gcd(rowBytes, 256);
  const rowsPer = Math.floor(Math.floor(limit / rowBytes) / align) * align;
  if (rowsPer === 0) {
    throw invalidArgument(
      `${where}: probs for one batch row (${rowBytes} bytes for seq ${s.seq}, heads ${s.heads}) ` +
        `exceed the storage binding limit ${limit} or cannot be split at 256-byte boundaries`,
    );
  }
  const parts: RowPart[] = [];
  for (let row0 = 0; row0 < s.batchSize; row0 += rowsPer) {
    const rows = Math.min(rowsPer, s.batchSize - row0);
    parts.push({
      row0,
      rows,
      slices: perRow.map((b) => {
        const { buffer, offset } = bindingParts(b);
        return { buffer, offset: offset + row0 * rowBytes, size: rows * rowBytes };
      }),
    });
  }
  return parts;
}

function exact(b: Binding, size: number): Binding {
  const { buffer, offset } = bindingParts(b);
  return { buffer, offset, size };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function checkShape(where: string, s: AttentionShape): void {
  for (const name of ["batchSize", "seq", "heads", "kvHeads", "headDim"] as const) {
    const v = s[name];
    if (!Number.isInteger(v) || v < 1) {
      throw invalidArgument(`${where}: ${name} must be >= 1, got ${v}`);
    }
  }
  if (s.heads % s.kvHeads !== 0) {
    throw invalidArgument(`${where}: heads ${s.heads} is not a multiple of kvHeads ${s.kvHeads}`);
  }
}
