/**
 * Embedding lookup: out[r,:] = table[tokens[r],:] for a 16-bit table [vocab, dim] held in row
 * chunks (src/kernels/row_chunks.ts), tokens u32 [rows], out f32. One dispatch per chunk, each
 * writing the rows whose token it holds. Token ids outside the table never read out of bounds:
 * their rows are 0, and when an `error` buffer (u32) is given its first element is set to 1; it
 * is never cleared here, so the caller zeroes it and reads it back when convenient (a step
 * later).
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkBinding, checkCount } from "./matmul.ts";
import type { RowChunkedTable } from "./row_chunks.ts";

export interface EmbeddingArgs {
  /** [vocab, dim] in 16-bit row chunks; vocab is its row count. */
  table: RowChunkedTable;
  /** u32 [rows] */
  tokens: Binding;
  /** f32 [rows, dim] */
  out: Binding;
  rows: number;
  dim: number;
  /** u32 [1]: set to 1 when some token id is >= vocab. */
  error?: Binding;
}

export async function encodeEmbedding(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: EmbeddingArgs,
): Promise<void> {
  const { table, tokens, out, rows, dim, error } = args;
  checkCount("embedding", "rows", rows);
  checkCount("embedding", "dim", dim);
  if (table.cols !== dim) {
    throw invalidArgument(`embedding: table has ${table.cols} columns, dim is ${dim}`);
  }
  checkBinding("embedding", "tokens", tokens, rows);
  checkBinding("embedding", "out", out, rows * dim);
  if (error) checkBinding("embedding", "error", error, 1);
  if (rows * dim >= 2 ** 32) {
    throw invalidArgument(`embedding: rows*dim ${rows * dim} exceeds 2^32 elements`);
  }
  const total = rows * dim;
  const [gx, gy] = grid(Math.ceil(total / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await ctx.pipeline(
    "embedding.wgsl",
    { TABLE_F16: table.dtype === "f16" ? 1 : 0 },
    error ? "gather_flagged" : "gather",
  );
  const last = table.chunks.length - 1;
  for (const [i, chunk] of table.chunks.entries()) {
    const params = ctx.uniform(
      new Uint32Array([total, dim, chunk.row0, chunk.rows, table.rows, i === last ? 1 : 0, gx, 0]),
    );
    const bindings = error
      ? [chunk.buffer, tokens, out, error, params]
      : [chunk.buffer, tokens, out, params];
    batch.dispatch(pipeline, bindings, [gx, gy]);
  }
}
