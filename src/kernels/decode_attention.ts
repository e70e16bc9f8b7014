/**
 * Attention of new query tokens over a KV cache, for generation (shaders/decode_attention.wgsl):
 * prefill passes the prompt's queries, decode one query; the keys and values of every earlier
 * position are already in the cache, so a new token costs one row of attention, not the prefix.
 * The training kernel (attention.ts) cannot do this: its queries and keys are the same rows.
 * The cache may hold f32 or halves (packed two per word, convert_f16.ts's layout): half the
 * bytes, read with unpack2x16float, so any adapter can run it.
 */
import { checkBindingSize, checkCount, UnexpectedShapeError } from "./shape_checks.ts";
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";

export interface DecodeAttentionArgs {
  /** [n, heads*headDim], RoPE applied at positions pos0..pos0+n-1. */
  q: Binding;
  /** Cache [capacity, kvHeads*headDim]: rows 0..pos0+n-1 filled (k after RoPE). */
  kCache: Binding;
  vCache: Binding;
  /** What the cache holds: f32 (default), or halves packed two per 32-bit word. */
  kvPrecision?: "f32" | "f16";
  /** [n, heads*headDim], overwritten. */
  out: Binding;
  n: number;
  /** Absolute position of the first query; query i sees cache rows 0..pos0+i. */
  pos0: number;
  /** Rows the cache holds (pos0 + n must not exceed it). */
  capacity: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** shaders/decode_attention.wgsl's Params. */
const DECODE_ATTENTION_PARAMS = uniformLayout("Params", {
  n: "u32",
  heads: "u32",
  kv_heads: "u32",
  group: "u32",
  pos0: "u32",
  groups_x: "u32",
  scale: "f32",
  _pad0: "u32",
});

export async function encodeDecodeAttention(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: DecodeAttentionArgs,
): Promise<void> {
  const where = "decode attention";
  for (const name of ["n", "capacity", "heads", "kvHeads", "headDim"] as const) {
    checkCount(where, name, args[name]);
  }
  checkCount(where, "pos0", args.pos0, 0);
  const { n, pos0, capacity, heads, kvHeads, headDim } = args;
  if (heads % kvHeads !== 0) {
    throw new UnexpectedShapeError(where, "heads", `a multiple of kvHeads ${kvHeads}`, `${heads}`);
  }
  if (pos0 + n > capacity) {
    throw new UnexpectedShapeError(
      where,
      "pos0 + n",
      `at most the cache capacity ${capacity}`,
      `${pos0 + n}`,
    );
  }
  checkBindingSize(where, "q", args.q, n * heads * headDim);
  const f16 = args.kvPrecision === "f16";
  if (f16 && headDim % 2 !== 0) {
    throw new UnexpectedShapeError(where, "headDim", "even for an f16 cache", `${headDim}`);
  }
  const cacheBytes = f16 ? 2 : 4;
  checkBindingSize(where, "kCache", args.kCache, capacity * kvHeads * headDim, cacheBytes);
  checkBindingSize(where, "vCache", args.vCache, capacity * kvHeads * headDim, cacheBytes);
  checkBindingSize(where, "out", args.out, n * heads * headDim);
  const pipeline = await ctx.pipeline(
    "decode_attention.wgsl",
    { HEAD_DIM: headDim, KV_F16: f16 ? "true" : "false" },
    "main",
    DECODE_ATTENTION_PARAMS,
  );
  const [gx, gy] = grid(Math.ceil((n * heads) / 64));
  const params = DECODE_ATTENTION_PARAMS.pack({
    n,
    heads,
    kv_heads: kvHeads,
    group: heads / kvHeads,
    pos0,
    groups_x: gx,
    scale: 1 / Math.sqrt(headDim),
  });
  batch.dispatch(
    pipeline,
    [args.q, args.kCache, args.vCache, args.out, ctx.uniform(params)],
    [gx, gy],
  );
}
