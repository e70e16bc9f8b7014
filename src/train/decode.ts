/**
 * The forward pass of generation with a KV cache: `step(tokens)` runs new tokens (the prompt at
 * prefill, then one token per decode step) through every layer at their absolute positions,
 * appends their keys and values to the cache, and returns the logits of the last one. Each token
 * costs one token's forward; the prefix is never recomputed.
 *
 * It is the same math as src/model/layer.ts's forward (4-bit linears plus LoRA, no dropout, RoPE,
 * causal attention, SwiGLU MLP), written over its own small buffers of at most `chunk` rows with
 * the same kernels, because training's activations are sized and kept for the backward pass;
 * the linears' frozen part and LoRA up-projection are layer.ts's own functions.
 * The residual stream is added into in place: nothing here is needed again.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { DispatchBatch } from "../gpu/context.ts";
import type { BaseModel } from "../model/base_model.ts";
import type { LoraLayout } from "../model/lora.ts";
import { type LinearModule, linearShape } from "../model/config.ts";
import { encodeFrozenLinear, encodeLoraUp } from "../model/layer.ts";
import { F32LoraParams } from "../model/lora_params.ts";
import { encodeEmbedding } from "../kernels/embedding.ts";
import { encodeMatmul } from "../kernels/matmul.ts";
import { encodeRmsNorm } from "../kernels/rmsnorm.ts";
import { encodeRope } from "../kernels/rope.ts";
import { encodeSwiglu } from "../kernels/swiglu.ts";
import { decodeAttentionScratchBound, encodeDecodeAttention } from "../kernels/decode_attention.ts";
import { encodeLmHeadLogits } from "../kernels/cross_entropy.ts";
import { encodeToF16 } from "../kernels/convert_f16.ts";
import { invalidArgument } from "../util/errors.ts";
import { KvCache, type KvPrecision, resolveKvPrecision } from "./kv_cache.ts";

export interface DecoderOptions {
  /** Tokens the cache holds: prompt plus generated tokens. */
  capacity: number;
  /** Rows per forward pass at prefill (default 64): a longer prompt runs in pieces. */
  chunk?: number;
  /** The cache's precision (default "auto": f16 where the adapter has shader-f16). */
  kvPrecision?: KvPrecision | "auto";
}

/** Bytes of GPU memory a decoder takes beyond the model (cache and its per-chunk buffers). */
export function decoderBytes(
  cfg: BaseModel["cfg"],
  capacity: number,
  chunk: number,
  rank: number,
  kvPrecision: KvPrecision = "f32",
): number {
  // Per row: tokens, positions, x, n, rstd, q, attn, k, v, their halves, g, u, a, LoRA's t.
  const rowFloats = 3 + 2 * cfg.hidden + 2 * cfg.heads * cfg.headDim +
    2.5 * cfg.kvHeads * cfg.headDim + 3 * cfg.intermediate + Math.max(1, rank);
  return KvCache.bytes(cfg, capacity, kvPrecision) +
    4 * (chunk * rowFloats + 2 * cfg.hidden + 1 + cfg.vocab) +
    decodeAttentionScratchBound(chunk, cfg.heads, cfg.headDim);
}

export class KvDecoder {
  readonly cache: KvCache;
  readonly chunk: number;
  #owned: GpuBuffer[] = [];
  #b: Record<string, GpuBuffer> = {};
  /** Generation reads the f32 adapter (evaluation engines keep f32 storage). */
  readonly #params: F32LoraParams;

  constructor(
    readonly ctx: GpuContext,
    readonly model: BaseModel,
    readonly lora: LoraLayout,
    readonly params: GpuBuffer,
    options: DecoderOptions,
  ) {
    const cfg = model.cfg;
    this.#params = new F32LoraParams(params);
    this.chunk = Math.max(1, Math.min(options.chunk ?? 64, options.capacity));
    this.cache = new KvCache(
      ctx,
      cfg,
      options.capacity,
      resolveKvPrecision(options.kvPrecision, ctx.capabilities.f16),
    );
    try {
      this.#allocate(cfg, lora);
    } catch (err) {
      // A failed allocation leaves nothing behind: the caller has no decoder to destroy.
      this.destroy();
      throw err;
    }
  }

  #allocate(cfg: BaseModel["cfg"], lora: LoraLayout): void {
    const ctx = this.ctx;
    const rows = this.chunk;
    const f = (label: string, floats: number) => {
      const b = ctx.createBuffer({
        label: `decode_${label}`,
        category: "activations",
        size: floats * 4,
      });
      this.#owned.push(b);
      this.#b[label] = b;
    };
    const qDim = cfg.heads * cfg.headDim;
    const kvDim = cfg.kvHeads * cfg.headDim;
    f("tokens", rows);
    f("positions", rows);
    f("x", rows * cfg.hidden);
    f("n", rows * cfg.hidden);
    f("rstd", rows);
    f("q", rows * qDim);
    f("k", rows * kvDim);
    f("v", rows * kvDim);
    f("attn", rows * qDim);
    f("g", rows * cfg.intermediate);
    f("u", rows * cfg.intermediate);
    f("a", rows * cfg.intermediate);
    f("t", rows * Math.max(1, lora.spec.r));
    // This chunk's k and v as halves, before they are copied into an f16 cache.
    f("kv16", Math.ceil((rows * kvDim) / 2));
    f("last", cfg.hidden);
    f("last_normed", cfg.hidden);
    f("last_rstd", 1);
    f("logits", cfg.vocab);
  }

  /** Tokens cached so far (the position of the next token). */
  get length(): number {
    return this.cache.length;
  }

  /** Forgets the cached tokens (a new prompt). */
  reset(): void {
    this.cache.length = 0;
  }

  /**
   * Runs `tokens` at positions length, length+1, ...; appends their keys and values to the cache
   * and returns the logits [vocab] after the last of them.
   */
  async step(tokens: ArrayLike<number>): Promise<Float32Array> {
    const n = tokens.length;
    if (n === 0) throw invalidArgument("decode: no tokens to run");
    if (this.cache.length + n > this.cache.capacity) {
      throw invalidArgument(
        `decode: ${this.cache.length + n} tokens exceed the KV cache's ${this.cache.capacity}`,
      );
    }
    const vocab = this.model.cfg.vocab;
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!(Number.isInteger(t) && t >= 0 && t < vocab)) {
        throw invalidArgument(`decode: token id ${t} outside the vocabulary of ${vocab}`);
      }
    }
    for (let start = 0; start < n; start += this.chunk) {
      const rows = Math.min(this.chunk, n - start);
      const ids = Uint32Array.from({ length: rows }, (_, i) => tokens[start + i]);
      const last = start + rows === n;
      await this.#forward(ids, last);
    }
    return await this.ctx.readF32(this.#b.logits, 0, vocab);
  }

  /** One pass over `ids` (at most `chunk`); the logits of its last row when `withLogits`. */
  async #forward(ids: Uint32Array, withLogits: boolean): Promise<void> {
    const { ctx, model } = this;
    const cfg = model.cfg;
    const b = this.#b;
    const rows = ids.length;
    const pos0 = this.cache.length;
    ctx.write(b.tokens, ids);
    ctx.write(b.positions, Uint32Array.from({ length: rows }, (_, i) => pos0 + i));
    const batch = ctx.batch("decode");
    await encodeEmbedding(ctx, batch, {
      table: model.embed,
      tokens: b.tokens,
      out: b.x,
      rows,
      dim: cfg.hidden,
    });
    const kvBytes = this.cache.rowBytes;
    const f16 = this.cache.precision === "f16";
    const kvN = rows * this.cache.rowFloats;
    for (let l = 0; l < cfg.layers; l++) {
      const base = model.layers[l];
      const norm = { rstd: b.rstd, rows, dim: cfg.hidden, eps: cfg.rmsEps };
      await encodeRmsNorm(ctx, batch, { ...norm, x: b.x, weight: base.inputNorm, y: b.n });
      await this.#linear(batch, l, "q", b.n, b.q, rows, false);
      await this.#linear(batch, l, "k", b.n, b.k, rows, false);
      await this.#linear(batch, l, "v", b.n, b.v, rows, false);
      const rope = { positions: b.positions, invFreq: model.invFreq, rows, headDim: cfg.headDim };
      await encodeRope(ctx, batch, { ...rope, x: b.q, heads: cfg.heads });
      await encodeRope(ctx, batch, { ...rope, x: b.k, heads: cfg.kvHeads });
      for (const [src, dst] of [[b.k, this.cache.k[l]], [b.v, this.cache.v[l]]]) {
        // A binding's offset must be 256-aligned, a row's is not: convert, then copy the rows.
        if (f16) await encodeToF16(ctx, batch, { src, dst: b.kv16, n: kvN });
        batch.copy(f16 ? b.kv16 : src, 0, dst, pos0 * kvBytes, rows * kvBytes);
      }
      await encodeDecodeAttention(ctx, batch, {
        q: b.q,
        kCache: this.cache.k[l],
        vCache: this.cache.v[l],
        out: b.attn,
        n: rows,
        pos0,
        capacity: this.cache.capacity,
        kvPrecision: this.cache.precision,
        heads: cfg.heads,
        kvHeads: cfg.kvHeads,
        headDim: cfg.headDim,
      });
      // x += W_o attn: the residual stream is added into in place.
      await this.#linear(batch, l, "o", b.attn, b.x, rows, true);
      await encodeRmsNorm(ctx, batch, { ...norm, x: b.x, weight: base.postNorm, y: b.n });
      await this.#linear(batch, l, "gate", b.n, b.g, rows, false);
      await this.#linear(batch, l, "up", b.n, b.u, rows, false);
      await encodeSwiglu(ctx, batch, { gate: b.g, up: b.u, out: b.a, n: rows * cfg.intermediate });
      await this.#linear(batch, l, "down", b.a, b.x, rows, true);
    }
    if (withLogits) {
      // Only the last row's logits are sampled from: norm and lm_head for that row alone.
      batch.copy(b.x, (rows - 1) * cfg.hidden * 4, b.last, 0, cfg.hidden * 4);
      await encodeRmsNorm(ctx, batch, {
        x: b.last,
        weight: model.finalNorm,
        y: b.last_normed,
        rstd: b.last_rstd,
        rows: 1,
        dim: cfg.hidden,
        eps: cfg.rmsEps,
      });
      await encodeLmHeadLogits(ctx, batch, {
        h: b.last_normed,
        weight: model.lmHead,
        out: b.logits,
        rows: 1,
        hidden: cfg.hidden,
      });
    }
    batch.submit();
    this.cache.length = pos0 + rows;
  }

  /** y (=|+=) W x (+ bias) + s·B(A x): layer.ts's linear without dropout, over decode's rows. */
  async #linear(
    batch: DispatchBatch,
    layer: number,
    m: LinearModule,
    x: GpuBuffer,
    y: GpuBuffer,
    rows: number,
    accumulate: boolean,
  ): Promise<void> {
    const { ctx, model, lora } = this;
    const at = { layer, m, rows };
    await encodeFrozenLinear(ctx, batch, model, at, x, y, accumulate);
    const a = lora.slot(layer, m, "A");
    if (!a || !lora.slot(layer, m, "B")) return;
    const t = this.#b.t;
    await encodeMatmul(ctx, batch, {
      a: x,
      b: this.#params.binding(a),
      c: t,
      m: rows,
      n: lora.spec.r,
      k: linearShape(model.cfg, m)[1],
      transB: true,
    });
    await encodeLoraUp(ctx, batch, lora, this.#params, at, t, y);
  }

  destroy(): void {
    for (const b of this.#owned) b.destroy();
    this.cache.destroy();
  }
}
