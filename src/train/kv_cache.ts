/**
 * The keys and values of every token generated so far, per layer, on the GPU: row t of a layer's
 * cache holds the token at position t (k after RoPE), so a new token attends to the cache instead
 * of recomputing the prefix. f32 [capacity, kvHeads*headDim] per layer and per k/v.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { LlamaConfig } from "../model/config.ts";
import { invalidArgument } from "../util/errors.ts";

export class KvCache {
  readonly k: GpuBuffer[] = [];
  readonly v: GpuBuffer[] = [];
  /** Floats per cached token per layer (kvHeads * headDim). */
  readonly rowFloats: number;
  /** Positions filled: the next token goes to row `length`. */
  length = 0;

  constructor(ctx: GpuContext, cfg: LlamaConfig, readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw invalidArgument(`KV cache capacity must be a positive integer, got ${capacity}`);
    }
    this.rowFloats = cfg.kvHeads * cfg.headDim;
    const size = capacity * this.rowFloats * 4;
    for (let l = 0; l < cfg.layers; l++) {
      this.k.push(ctx.createBuffer({ label: `kv_cache_k_${l}`, category: "activations", size }));
      this.v.push(ctx.createBuffer({ label: `kv_cache_v_${l}`, category: "activations", size }));
    }
  }

  /** Bytes a cache of `capacity` tokens takes (k and v of every layer). */
  static bytes(cfg: LlamaConfig, capacity: number): number {
    return 2 * cfg.layers * capacity * cfg.kvHeads * cfg.headDim * 4;
  }

  destroy(): void {
    for (const b of [...this.k, ...this.v]) b.destroy();
  }
}
