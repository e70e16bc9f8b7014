/**
 * The keys and values of every token generated so far, per layer, on the GPU: row t of a layer's
 * cache holds the token at position t (k after RoPE), so a new token attends to the cache instead
 * of recomputing the prefix. [capacity, kvHeads*headDim] per layer and per k/v, in f32 or in halves
 * (packed two per word: half the bytes; values rounded to nearest, relative error <= 2^-11).
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { LlamaConfig } from "../model/config.ts";
import { invalidArgument } from "../util/errors.ts";

export type KvPrecision = "f32" | "f16";

/**
 * The cache's precision: "auto" is f16 where the adapter has shader-f16 (the GPUs qlorad targets,
 * where the cache is what grows with the context), f32 elsewhere, so CPU adapters keep the exact
 * f32 path. Either works on any adapter (halves are read with unpack2x16float).
 */
export function resolveKvPrecision(
  requested: KvPrecision | "auto" | undefined,
  f16Capable: boolean,
): KvPrecision {
  const want = requested ?? "auto";
  if (want !== "auto" && want !== "f32" && want !== "f16") {
    throw invalidArgument(`KV cache precision must be auto, f32 or f16, got ${want}`);
  }
  return want === "auto" ? (f16Capable ? "f16" : "f32") : want;
}

export class KvCache {
  readonly k: GpuBuffer[] = [];
  readonly v: GpuBuffer[] = [];
  /** Values per cached token per layer (kvHeads * headDim). */
  readonly rowFloats: number;
  /** Bytes per cached token per layer. */
  readonly rowBytes: number;
  /** Positions filled: the next token goes to row `length`. */
  length = 0;

  constructor(
    ctx: GpuContext,
    cfg: LlamaConfig,
    readonly capacity: number,
    readonly precision: KvPrecision = "f32",
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw invalidArgument(`KV cache capacity must be a positive integer, got ${capacity}`);
    }
    this.rowFloats = cfg.kvHeads * cfg.headDim;
    // headDim is even (RoPE rotates pairs), so a row of halves is whole 32-bit words.
    this.rowBytes = this.rowFloats * (precision === "f16" ? 2 : 4);
    const size = capacity * this.rowBytes;
    try {
      for (let l = 0; l < cfg.layers; l++) {
        this.k.push(ctx.createBuffer({ label: `kv_cache_k_${l}`, category: "activations", size }));
        this.v.push(ctx.createBuffer({ label: `kv_cache_v_${l}`, category: "activations", size }));
      }
    } catch (err) {
      // The layers made before the one that failed go back: the caller gets no cache to destroy.
      this.destroy();
      throw err;
    }
  }

  /** Bytes a cache of `capacity` tokens takes (k and v of every layer). */
  static bytes(cfg: LlamaConfig, capacity: number, precision: KvPrecision = "f32"): number {
    return 2 * cfg.layers * capacity * cfg.kvHeads * cfg.headDim * (precision === "f16" ? 2 : 4);
  }

  destroy(): void {
    for (const b of [...this.k, ...this.v]) b.destroy();
  }
}
