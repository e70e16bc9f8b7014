/**
 * Encodes one Llama decoder layer, forward and backward, with LoRA on the targeted linears:
 *   n1 = rms(x); q,k,v = W n1 (+ b) + s·B A drop(n1); rope(q,k); attn; h = x + W_o attn (+LoRA)
 *   n2 = rms(h); a = silu(W_g n2) * (W_u n2); out = h + W_d a (+LoRA on each).
 * Backward keeps one running residual gradient (`gradX`) and walks the same graph in reverse.
 */
import type { Binding, DispatchBatch, GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { LinearModule } from "./config.ts";
import { linearShape } from "./config.ts";
import type { BaseModel } from "./base_model.ts";
import type { LoraLayout } from "./lora.ts";
import type { BackwardScratch, LayerActivations } from "./activations.ts";
import { encodeMatmul } from "../kernels/matmul.ts";
import { encodeMatmul4bit, encodeMatmul4bitT } from "../kernels/matmul_4bit.ts";
import { encodeRmsNorm, encodeRmsNormBackward } from "../kernels/rmsnorm.ts";
import { encodeRope } from "../kernels/rope.ts";
import { encodeSwiglu, encodeSwigluBackward } from "../kernels/swiglu.ts";
import { encodeAttention, encodeAttentionBackward } from "../kernels/attention.ts";
import { encodeAdd, encodeAddRows, encodeCopy } from "../kernels/elementwise.ts";
import { encodeDropout } from "../kernels/dropout.ts";

/** What every layer of one micro-batch shares. */
export interface MicroBatchPass {
  ctx: GpuContext;
  batch: DispatchBatch;
  model: BaseModel;
  lora: LoraLayout;
  params: GpuBuffer;
  grads: GpuBuffer;
  /** Rows = batchSize * seq (padded). */
  batchSize: number;
  seq: number;
  positions: GpuBuffer;
  segments: GpuBuffer;
  /** LoRA dropout probability: the adapter's when training, 0 when evaluating. */
  dropout: number;
  /** Dropout seed and a per-micro-batch stream base; the mask is recomputed in backward. */
  seed: number;
  streamBase: number;
}

const MODULE_INDEX: Record<LinearModule, number> = {
  q: 0,
  k: 1,
  v: 2,
  o: 3,
  gate: 4,
  up: 5,
  down: 6,
};

function rows(p: MicroBatchPass): number {
  return p.batchSize * p.seq;
}

function slice(buf: GpuBuffer, offsetFloats: number, floats: number): Binding {
  return { buffer: buf, offset: offsetFloats * 4, size: floats * 4 };
}

function loraSlots(p: MicroBatchPass, layer: number, m: LinearModule) {
  const a = p.lora.slot(layer, m, "A");
  const b = p.lora.slot(layer, m, "B");
  return a && b ? { a, b } : undefined;
}

function dropoutStream(p: MicroBatchPass, layer: number, m: LinearModule): number {
  return (p.streamBase + layer * 8 + MODULE_INDEX[m]) >>> 0;
}

/** dropout(x) into scratch when dropout is on; x itself otherwise. */
async function loraInput(
  p: MicroBatchPass,
  layer: number,
  m: LinearModule,
  x: GpuBuffer,
  scratch: GpuBuffer,
): Promise<GpuBuffer> {
  const prob = p.dropout;
  if (prob === 0) return x;
  const [, inp] = linearShape(p.model.cfg, m);
  await encodeDropout(p.ctx, p.batch, {
    x,
    out: scratch,
    n: rows(p) * inp,
    p: prob,
    seed: p.seed,
    stream: dropoutStream(p, layer, m),
  });
  return scratch;
}

/** y (=|+=) W x + s·B(A(drop(x))) */
async function linearForward(
  p: MicroBatchPass,
  acts: LayerActivations,
  scratch: BackwardScratch,
  layer: number,
  m: LinearModule,
  x: GpuBuffer,
  y: GpuBuffer,
  accumulate: boolean,
): Promise<void> {
  const w = p.model.layers[layer].linears[m];
  const r = rows(p);
  await encodeMatmul4bit(p.ctx, p.batch, { x, w, y, m: r, accumulate });
  const [out, inp] = linearShape(p.model.cfg, m);
  // A frozen bias (Qwen2 q/k/v) adds a constant per output: nothing changes in backward.
  const bias = p.model.layers[layer].biases?.[m];
  if (bias) await encodeAddRows(p.ctx, p.batch, { bias, y, rows: r, cols: out });
  const s = loraSlots(p, layer, m);
  if (!s) return;
  const rank = p.lora.spec.r;
  const xin = await loraInput(p, layer, m, x, scratch.drop);
  const t = acts.t.get(m)!;
  await encodeMatmul(p.ctx, p.batch, {
    a: xin,
    b: slice(p.params, s.a.offset, s.a.numel),
    c: t,
    m: r,
    n: rank,
    k: inp,
    transB: true,
  });
  await encodeMatmul(p.ctx, p.batch, {
    a: t,
    b: slice(p.params, s.b.offset, s.b.numel),
    c: y,
    m: r,
    n: out,
    k: rank,
    transB: true,
    alpha: p.lora.scaling,
    accumulate: true,
  });
}

/** dx (=|+=) dy·W + LoRA path; LoRA gradients accumulate into `p.grads`. */
async function linearBackward(
  p: MicroBatchPass,
  acts: LayerActivations,
  scratch: BackwardScratch,
  layer: number,
  m: LinearModule,
  x: GpuBuffer,
  dy: GpuBuffer,
  dx: GpuBuffer,
  accumulate: boolean,
): Promise<void> {
  const w = p.model.layers[layer].linears[m];
  const r = rows(p);
  await encodeMatmul4bitT(p.ctx, p.batch, { dy, w, dx, m: r, accumulate });
  const s = loraSlots(p, layer, m);
  if (!s) return;
  const [out, inp] = linearShape(p.model.cfg, m);
  const rank = p.lora.spec.r;
  const scaling = p.lora.scaling;
  const t = acts.t.get(m)!;
  // dB += s · dyᵀ t
  await encodeMatmul(p.ctx, p.batch, {
    a: dy,
    b: t,
    c: slice(p.grads, s.b.offset, s.b.numel),
    m: out,
    n: rank,
    k: r,
    transA: true,
    alpha: scaling,
    accumulate: true,
  });
  // dt = s · dy B
  await encodeMatmul(p.ctx, p.batch, {
    a: dy,
    b: slice(p.params, s.b.offset, s.b.numel),
    c: scratch.dt,
    m: r,
    n: rank,
    k: out,
    alpha: scaling,
  });
  // dA += dtᵀ drop(x)
  const xin = await loraInput(p, layer, m, x, scratch.drop);
  await encodeMatmul(p.ctx, p.batch, {
    a: scratch.dt,
    b: xin,
    c: slice(p.grads, s.a.offset, s.a.numel),
    m: rank,
    n: inp,
    k: r,
    transA: true,
    accumulate: true,
  });
  // dx += drop'(dt A)
  const aSlice = slice(p.params, s.a.offset, s.a.numel);
  if (p.dropout === 0) {
    await encodeMatmul(p.ctx, p.batch, {
      a: scratch.dt,
      b: aSlice,
      c: dx,
      m: r,
      n: inp,
      k: rank,
      accumulate: true,
    });
    return;
  }
  await encodeMatmul(p.ctx, p.batch, {
    a: scratch.dt,
    b: aSlice,
    c: scratch.dInput,
    m: r,
    n: inp,
    k: rank,
  });
  await encodeDropout(p.ctx, p.batch, {
    x: scratch.dInput,
    out: scratch.dInputMasked,
    n: r * inp,
    p: p.dropout,
    seed: p.seed,
    stream: dropoutStream(p, layer, m),
  });
  await encodeAdd(p.ctx, p.batch, { x: scratch.dInputMasked, y: dx, n: r * inp });
}

/** out = layer(x); fills `acts` with what backward needs. */
export async function encodeLayerForward(
  p: MicroBatchPass,
  layer: number,
  acts: LayerActivations,
  scratch: BackwardScratch,
  x: GpuBuffer,
  out: GpuBuffer,
): Promise<void> {
  const { ctx, batch, model } = p;
  const cfg = model.cfg;
  const base = model.layers[layer];
  const r = rows(p);
  await encodeRmsNorm(ctx, batch, {
    x,
    weight: base.inputNorm,
    y: acts.n1,
    rstd: acts.rstd1,
    rows: r,
    dim: cfg.hidden,
    eps: cfg.rmsEps,
  });
  await linearForward(p, acts, scratch, layer, "q", acts.n1, acts.q, false);
  await linearForward(p, acts, scratch, layer, "k", acts.n1, acts.k, false);
  await linearForward(p, acts, scratch, layer, "v", acts.n1, acts.v, false);
  const rope = { positions: p.positions, invFreq: model.invFreq, rows: r, headDim: cfg.headDim };
  await encodeRope(ctx, batch, { ...rope, x: acts.q, heads: cfg.heads });
  await encodeRope(ctx, batch, { ...rope, x: acts.k, heads: cfg.kvHeads });
  await encodeAttention(ctx, batch, {
    q: acts.q,
    k: acts.k,
    v: acts.v,
    segments: p.segments,
    out: acts.attn,
    lse: acts.lse,
    batchSize: p.batchSize,
    seq: p.seq,
    heads: cfg.heads,
    kvHeads: cfg.kvHeads,
    headDim: cfg.headDim,
  });
  await encodeCopy(ctx, batch, { src: x, dst: acts.h, n: r * cfg.hidden });
  await linearForward(p, acts, scratch, layer, "o", acts.attn, acts.h, true);
  await encodeRmsNorm(ctx, batch, {
    x: acts.h,
    weight: base.postNorm,
    y: acts.n2,
    rstd: acts.rstd2,
    rows: r,
    dim: cfg.hidden,
    eps: cfg.rmsEps,
  });
  await linearForward(p, acts, scratch, layer, "gate", acts.n2, acts.g, false);
  await linearForward(p, acts, scratch, layer, "up", acts.n2, acts.u, false);
  await encodeSwiglu(ctx, batch, {
    gate: acts.g,
    up: acts.u,
    out: acts.a,
    n: r * cfg.intermediate,
  });
  await encodeCopy(ctx, batch, { src: acts.h, dst: out, n: r * cfg.hidden });
  await linearForward(p, acts, scratch, layer, "down", acts.a, out, true);
}

/** On entry `scratch.gradX` holds d loss / d out; on exit d loss / d x. */
export async function encodeLayerBackward(
  p: MicroBatchPass,
  layer: number,
  acts: LayerActivations,
  scratch: BackwardScratch,
  x: GpuBuffer,
): Promise<void> {
  const { ctx, batch, model } = p;
  const cfg = model.cfg;
  const base = model.layers[layer];
  const r = rows(p);
  const g = scratch.gradX;
  // MLP branch: out = h + down(silu(gate(n2)) * up(n2))
  await linearBackward(p, acts, scratch, layer, "down", acts.a, g, scratch.da, false);
  await encodeSwigluBackward(ctx, batch, {
    gate: acts.g,
    up: acts.u,
    dout: scratch.da,
    dgate: scratch.dg,
    dup: scratch.du,
    n: r * cfg.intermediate,
  });
  await linearBackward(p, acts, scratch, layer, "gate", acts.n2, scratch.dg, scratch.dn, false);
  await linearBackward(p, acts, scratch, layer, "up", acts.n2, scratch.du, scratch.dn, true);
  await encodeRmsNormBackward(ctx, batch, {
    x: acts.h,
    weight: base.postNorm,
    rstd: acts.rstd2,
    dy: scratch.dn,
    dx: g,
    rows: r,
    dim: cfg.hidden,
    accumulate: true,
  });
  // Attention branch: h = x + o(attn(rope(q), rope(k), v))
  await linearBackward(p, acts, scratch, layer, "o", acts.attn, g, scratch.dattn, false);
  await encodeAttentionBackward(ctx, batch, {
    q: acts.q,
    k: acts.k,
    v: acts.v,
    segments: p.segments,
    out: acts.attn,
    lse: acts.lse,
    dout: scratch.dattn,
    dq: scratch.dq,
    dk: scratch.dk,
    dv: scratch.dv,
    batchSize: p.batchSize,
    seq: p.seq,
    heads: cfg.heads,
    kvHeads: cfg.kvHeads,
    headDim: cfg.headDim,
  });
  const rope = {
    positions: p.positions,
    invFreq: model.invFreq,
    rows: r,
    headDim: cfg.headDim,
    inverse: true,
  };
  await encodeRope(ctx, batch, { ...rope, x: scratch.dq, heads: cfg.heads });
  await encodeRope(ctx, batch, { ...rope, x: scratch.dk, heads: cfg.kvHeads });
  await linearBackward(p, acts, scratch, layer, "q", acts.n1, scratch.dq, scratch.dn, false);
  await linearBackward(p, acts, scratch, layer, "k", acts.n1, scratch.dk, scratch.dn, true);
  await linearBackward(p, acts, scratch, layer, "v", acts.n1, scratch.dv, scratch.dn, true);
  await encodeRmsNormBackward(ctx, batch, {
    x,
    weight: base.inputNorm,
    rstd: acts.rstd1,
    dy: scratch.dn,
    dx: g,
    rows: r,
    dim: cfg.hidden,
    accumulate: true,
  });
}
