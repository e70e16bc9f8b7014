/**
 * Causal self-attention with grouped-query heads over packed batch rows (shaders/attention.wgsl).
 * The softmax is materialized in `probs` [batch, heads, seq, seq] for the backward pass. When
 * probs for the whole batch exceed the adapter's storage binding limit the work is split by
 * batch rows (each slice then starts at a 256-byte multiple, which seq*seq*heads*4 usually is).
 */
import {
  type Binding,
  type DispatchBatch,
  GpuBuffer,
  type GpuContext,
  grid,
} from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";

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
  checkSize(where, "q", args.q, tokens * heads * headDim);
  checkSize(where, "k", args.k, tokens * kvHeads * headDim);
  checkSize(where, "v", args.v, tokens * kvHeads * headDim);
  checkSize(where, "segments", args.segments, tokens);
  checkSize(where, "out", args.out, tokens * heads * headDim);
  checkSize(where, "probs", args.probs, batchSize * heads * seq * seq);
  const pipeline = await ctx.pipeline("attention.wgsl", { HEAD_DIM: headDim }, "forward");
  for (const part of rowParts(ctx, where, args, [args.probs])) {
    const [gx, gy] = grid(Math.ceil((part.rows * heads * seq) / 64));
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
  checkSize(where, "q", args.q, tokens * heads * headDim);
  checkSize(where, "k", args.k, tokens * kvHeads * headDim);
  checkSize(where, "v", args.v, tokens * kvHeads * headDim);
  if (args.segments) checkSize(where, "segments", args.segments, tokens);
  checkSize(where, "probs", args.probs, batchSize * heads * seq * seq);
  checkSize(where, "dout", args.dout, tokens * heads * headDim);
  checkSize(where, "dq", args.dq, tokens * heads * headDim);
  checkSize(where, "dk", args.dk, tokens * kvHeads * headDim);
  checkSize(where, "dv", args.dv, tokens * kvHeads * headDim);
  const scratchBytes = attentionScratchBytes(args);
  const scratch = args.scratch ?? sharedScratch(ctx, scratchBytes);
  checkSize(where, "scratch", scratch, scratchBytes / 4);
  const query = await ctx.pipeline("attention.wgsl", { HEAD_DIM: headDim }, "backward_query");
  const key = await ctx.pipeline("attention.wgsl", { HEAD_DIM: headDim }, "backward_key");
  for (const part of rowParts(ctx, where, args, [args.probs, scratch])) {
    const [probs, ds] = part.slices;
    const [qx, qy] = grid(Math.ceil((part.rows * heads * seq) / 64));
    batch.dispatch(query, [
      args.k,
      args.v,
      probs,
      args.dout,
      ds,
      args.dq,
      ctx.uniform(params(args, part.row0, part.rows, qx)),
    ], [qx, qy]);
    const [kx, ky] = grid(Math.ceil((part.rows * kvHeads * seq) / 64));
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

function params(s: AttentionShape, row0: number, rows: number, gx: number): Uint32Array {
  const u = new Uint32Array(12);
  u.set([s.seq, s.heads, s.kvHeads, s.headDim, rows, row0, s.heads / s.kvHeads, gx]);
  new Float32Array(u.buffer)[8] = 1 / Math.sqrt(s.headDim);
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
        const { buffer, offset } = parts_(b);
        return { buffer, offset: offset + row0 * rowBytes, size: rows * rowBytes };
      }),
    });
  }
  return parts;
}

function exact(b: Binding, size: number): Binding {
  const { buffer, offset } = parts_(b);
  return { buffer, offset, size };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function parts_(b: Binding): { buffer: GpuBuffer; offset: number; size: number } {
  return b instanceof GpuBuffer ? { buffer: b, offset: 0, size: b.size } : b;
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

function checkSize(where: string, name: string, b: Binding, elems: number): void {
  const { buffer, size } = parts_(b);
  if (size < elems * 4) {
    throw invalidArgument(
      `${where}: ${name} (${buffer.label}) holds ${size} bytes, needs ${elems * 4}`,
    );
  }
}

const scratchByContext = new WeakMap<GpuContext, GpuBuffer>();

/**
 * A per-context scratch buffer of at least `bytes`. A smaller one is replaced, not destroyed:
 * dispatches already recorded may still use it, and Dawn frees it once they are done.
 */
function sharedScratch(ctx: GpuContext, bytes: number): GpuBuffer {
  let buf = scratchByContext.get(ctx);
  if (!buf || buf.size < bytes) {
    if (buf) ctx.memory.remove(buf.category, buf.buffer.size);
    buf = ctx.createBuffer({ label: "attention scratch (dS)", category: "scratch", size: bytes });
    scratchByContext.set(ctx, buf);
  }
  return buf;
}
