/**
 * Embedding lookup: out[r,:] = table[tokens[r],:] for a 16-bit table [vocab, dim] held in row
 * chunks (src/kernels/row_chunks.ts), tokens u32 [rows], out f32. One dispatch per chunk, each
 * writing the rows whose token it holds. Token ids outside the table never read out of bounds:
 * their rows are 0, and when an `error` buffer (u32) is given its first element is set to 1; it
 * is never cleared here, so the caller zeroes it and reads it back when convenient (a step
 * later).
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { checkBindingSize, checkCount, UnexpectedShapeError } from "./shape_checks.ts";
import type { RowChunkedTable } from "./row_chunks.ts";

/** shaders/embedding.wgsl's Params: one per table chunk. */
const EMBEDDING_PARAMS = uniformLayout("Params", {
  total: "u32",
  dim: "u32",
  row0: "u32",
  rows: "u32",
  vocab: "u32",
  last: "u32",
  groups_x: "u32",
  _pad: "u32",
});

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
    throw new UnexpectedShapeError(
      "embedding",
      "table",
      `${dim} columns (dim)`,
      `${table.cols} columns (${table.chunks[0]?.buffer.label ?? "table"})`,
    );
  }
  checkBindingSize("embedding", "tokens", tokens, rows);
  checkBindingSize("embedding", "out", out, rows * dim);
  if (error) checkBindingSize("embedding", "error", error, 1);
  if (rows * dim >= 2 ** 32) {
    throw new UnexpectedShapeError("embedding", "rows*dim", "fewer than 2^32", `${rows * dim}`);
  }
  const total = rows * dim;
  const [gx, gy] = grid(Math.ceil(total / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const pipeline = await ctx.pipeline(
    "embedding.wgsl",
    { TABLE_F16: table.dtype === "f16" ? 1 : 0 },
    error ? "gather_flagged" : "gather",
    EMBEDDING_PARAMS,
  );
  const last = table.chunks.length - 1;
  for (const [i, chunk] of table.chunks.entries()) {
    const params = ctx.uniform(EMBEDDING_PARAMS.pack({
      total,
      dim,
      row0: chunk.row0,
      rows: chunk.rows,
      vocab: table.rows,
      last: i === last,
      groups_x: gx,
    }));
    const bindings = error
      ? [chunk.buffer, tokens, out, error, params]
      : [chunk.buffer, tokens, out, params];
    batch.dispatch(pipeline, bindings, [gx, gy]);
  }
}
