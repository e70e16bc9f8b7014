/**
 * Embedding lookup: out[r,:] = table[tokens[r],:] for table [vocab, dim] f32 and tokens u32
 * [rows]. Token ids outside the table never read out of bounds: their rows are 0, and when an
 * `error` buffer (u32) is given its first element is set to 1; it is never cleared here, so
 * the caller zeroes it and reads it back when convenient (a step later).
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { checkBinding, checkCount } from "./matmul.ts";

export interface EmbeddingArgs {
  /** [vocab, dim] */
  table: Binding;
  /** u32 [rows] */
  tokens: Binding;
  /** [rows, dim] */
  out: Binding;
  rows: number;
  dim: number;
  /** Rows of the table; default: all whole rows the table binding holds. */
  vocab?: number;
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
  const vocab = args.vocab ?? Math.floor(table.size / 4 / dim);
  checkCount("embedding", "vocab", vocab);
  checkBinding("embedding", "table", table, vocab * dim);
  checkBinding("embedding", "tokens", tokens, rows);
  checkBinding("embedding", "out", out, rows * dim);
  if (error) checkBinding("embedding", "error", error, 1);
  if (rows * dim >= 2 ** 32) {
    throw invalidArgument(`embedding: rows*dim ${rows * dim} exceeds 2^32 elements`);
  }
  const total = rows * dim;
  const [gx, gy] = grid(Math.ceil(total / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const params = ctx.uniform(new Uint32Array([total, dim, vocab, gx]));
  const pipeline = await ctx.pipeline("embedding.wgsl", {}, error ? "gather_flagged" : "gather");
  const bindings = error ? [table, tokens, out, error, params] : [table, tokens, out, params];
  batch.dispatch(pipeline, bindings, [gx, gy]);
}
