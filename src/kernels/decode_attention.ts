/**
 * Attention of new query tokens over a KV cache, for generation (shaders/decode_attention.wgsl):
 * prefill passes the prompt's queries, decode one query; the keys and values of every earlier
 * position are already in the cache, so a new token costs one row of attention, not the prefix.
 * The keys are split in runs of `splitKeys` (a pass of partial softmaxes, then a pass merging
 * them), so a single decode query keeps many invocations busy however long the context.
 * The training kernel (attention.ts) cannot do this: its queries and keys are the same rows.
 * The cache may hold f32 or halves (packed two per word, convert_f16.ts's layout): half the
 * bytes, read with unpack2x16float, so any adapter can run it.
 */
import { sharedScratch } from "./bindings.ts";
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
  /** Keys per split (default decodeSplitKeys: tests force short splits on small shapes). */
  splitKeys?: number;
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

/** Keys per split at least: enough work per invocation to amortize its partial's write. */
export const DECODE_SPLIT_KEYS = 64;
/**
 * Partials per dispatch at most: plenty of invocations for any GPU, and a scratch of at most
 * 16384 (headDim + 2) floats (8.4 MiB at headDim 128). A prefill chunk of many queries is
 * parallel already, so it gets fewer, longer splits.
 */
const MAX_PARTIALS = 16384;

/** The most bytes the partials scratch takes for `n` queries, whatever the context length. */
export function decodeAttentionScratchBound(n: number, heads: number, headDim: number): number {
  return Math.max(MAX_PARTIALS, n * heads) * (headDim + 2) * 4;
}

/** Keys per split for `n` queries over `keys` keys: DECODE_SPLIT_KEYS, longer past MAX_PARTIALS. */
export function decodeSplitKeys(n: number, heads: number, keys: number): number {
  const maxSplits = Math.max(1, Math.floor(MAX_PARTIALS / (n * heads)));
  return Math.max(DECODE_SPLIT_KEYS, Math.ceil(keys / maxSplits));
}

/** shaders/decode_attention.wgsl's Params. */
const DECODE_ATTENTION_PARAMS = uniformLayout("Params", {
  n: "u32",
  heads: "u32",
  kv_heads: "u32",
  group: "u32",
  pos0: "u32",
  groups_x: "u32",
  splits: "u32",
  split_keys: "u32",
  scale: "f32",
  _pad0: "u32",
  _pad1: "u32",
  _pad2: "u32",
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
  const splitKeys = args.splitKeys ?? decodeSplitKeys(n, heads, pos0 + n);
  checkCount(where, "splitKeys", splitKeys);
  const splits = Math.ceil((pos0 + n) / splitKeys);
  // (m, l, out) per (query, head, split).
  const scratchBytes = n * heads * splits * (headDim + 2) * 4;
  const scratch = sharedScratch(ctx, "decode attention partials", scratchBytes);
  const shaderParams = { HEAD_DIM: headDim, KV_F16: f16 ? "true" : "false" };
  const partial = await ctx.pipeline(
    "decode_attention.wgsl",
    shaderParams,
    "partial",
    DECODE_ATTENTION_PARAMS,
  );
  const combine = await ctx.pipeline(
    "decode_attention.wgsl",
    shaderParams,
    "combine",
    DECODE_ATTENTION_PARAMS,
  );
  const pack = (gx: number) =>
    ctx.uniform(DECODE_ATTENTION_PARAMS.pack({
      n,
      heads,
      kv_heads: kvHeads,
      group: heads / kvHeads,
      pos0,
      groups_x: gx,
      splits,
      split_keys: splitKeys,
      scale: 1 / Math.sqrt(headDim),
    }));
  const [px, py] = grid(Math.ceil((n * heads * splits) / 64));
  batch.dispatch(partial, [args.q, args.kCache, args.vCache, scratch, pack(px)], [px, py]);
  const [cx, cy] = grid(Math.ceil((n * heads) / 64));
  batch.dispatch(combine, [scratch, args.out, pack(cx)], [cx, cy]);
}
