/**
 * Encodes one Llama decoder layer, forward and backward, with LoRA on the targeted linears:
 *   n1 = rms(x); q,k,v = W n1 (+ b) + s·B A drop(n1); rope(q,k); attn; h = x + W_o attn (+LoRA)
 *   n2 = rms(h); a = silu(W_g n2) * (W_u n2); out = h + W_d a (+LoRA on each).
 * Attention runs over all rows; the MLP half is token-wise and runs over row chunks (forward and
 * backward), so its [rows, intermediate] tensors exist only per chunk (src/model/activations.ts).
 * The o projection and its residual are token-wise too and run with each MLP chunk. With
 * checkpointing the layer's recompute covers the attention core only (n1, q, k, v, attention)
 * and backward recomputes each chunk's h and MLP just before its gradients. LoRA gradients accumulate across chunks;
 * dropout masks are indexed by the whole tensor's element, so chunking does not change them.
 * Backward keeps one running residual gradient (`gradX`) and walks the same graph in reverse.
 */
import { type Binding, type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
import type { LinearModule } from "./config.ts";
import { linearShape } from "./config.ts";
import type { BaseModel } from "./base_model.ts";
import type { LoraLayout } from "./lora.ts";
import type { LoraParams } from "./lora_params.ts";
import { type BackwardScratch, type LayerActivations, mlpChunks } from "./activations.ts";
import { encodeMatmul } from "../kernels/matmul.ts";
import { encodeMatmul4bit, encodeMatmul4bitT } from "../kernels/matmul_4bit.ts";
import { encodeRmsNorm, encodeRmsNormBackward } from "../kernels/rmsnorm.ts";
import { encodeRope } from "../kernels/rope.ts";
import { encodeSwiglu, encodeSwigluBackward } from "../kernels/swiglu.ts";
import { encodeAttention, encodeAttentionBackward } from "../kernels/attention.ts";
import { encodeAdd, encodeAddRows, encodeCopy } from "../kernels/elementwise.ts";
import { encodeDropout } from "../kernels/dropout.ts";
import { invalidArgument } from "../util/errors.ts";

/** What every layer of one micro-batch shares. */
export interface MicroBatchPass {
  ctx: GpuContext;
  batch: DispatchBatch;
  model: BaseModel;
  lora: LoraLayout;
  /** The LoRA tensors' bindings (src/model/lora_params.ts); the caller expands each layer. */
  params: LoraParams;
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

/** Rows [first, first + n) of a row-major [*, cols] tensor (a buffer or a view into one). */
function rowsOf(t: Binding, cols: number, first: number, n: number): Binding {
  const base = t instanceof GpuBuffer ? { buffer: t, offset: 0 } : t;
  return { buffer: base.buffer, offset: base.offset + first * cols * 4, size: n * cols * 4 };
}

function loraSlots(p: MicroBatchPass, layer: number, m: LinearModule) {
  const a = p.lora.slot(layer, m, "A");
  const b = p.lora.slot(layer, m, "B");
  return a && b ? { a, b } : undefined;
}

function dropoutStream(p: MicroBatchPass, layer: number, m: LinearModule): number {
  return (p.streamBase + layer * 8 + MODULE_INDEX[m]) >>> 0;
}

/** One linear applied to a block of rows of the micro-batch. */
interface LinearRows {
  layer: number;
  m: LinearModule;
  /** Rows of this call, and the micro-batch row of its first (dropout masks index by it). */
  rows: number;
  first: number;
  /** The LoRA intermediate t for these rows; undefined when the module has no LoRA. */
  t: Binding | undefined;
}

/** A linear over all rows of the micro-batch. */
function allRows(p: MicroBatchPass, acts: LayerActivations, layer: number, m: LinearModule) {
  return { layer, m, rows: rows(p), first: 0, t: acts.t.get(m) };
}

/** dropout(x) into the dropout buffer when dropout is on; x itself otherwise. */
async function loraInput(
  p: MicroBatchPass,
  scratch: BackwardScratch,
  c: LinearRows,
  x: Binding,
): Promise<Binding> {
  const prob = p.dropout;
  if (prob === 0) return x;
  if (!scratch.drop) {
    throw invalidArgument(
      `LoRA dropout ${prob} in a graph built for an adapter without dropout (lora.dropout 0)`,
    );
  }
  const [, inp] = linearShape(p.model.cfg, c.m);
  const n = c.rows * inp;
  const out = slice(scratch.drop, 0, n);
  await encodeDropout(p.ctx, p.batch, {
    x,
    out,
    n,
    p: prob,
    seed: p.seed,
    stream: dropoutStream(p, c.layer, c.m),
    first: c.first * inp,
  });
  return out;
}

/**
 * The products that read drop(x) run over pieces of at most chunkRows rows when dropout is on,
 * so the dropout buffer holds one chunk, not all rows (q, k, v and o's LoRA). `at` is a piece's
 * first row within `c`.
 */
function dropoutPieces(
  p: MicroBatchPass,
  scratch: BackwardScratch,
  c: LinearRows,
): { at: number; rows: LinearRows }[] {
  const step = scratch.plan.chunkRows;
  if (p.dropout === 0 || c.rows <= step) return [{ at: 0, rows: c }];
  const rank = p.lora.spec.r;
  const pieces = [];
  for (let at = 0; at < c.rows; at += step) {
    const n = Math.min(step, c.rows - at);
    const t = c.t && rowsOf(c.t, rank, at, n);
    pieces.push({ at, rows: { ...c, rows: n, first: c.first + at, t } });
  }
  return pieces;
}

/** t = drop(x)·Aᵀ, the LoRA intermediate (no-op without LoRA on the module). */
async function loraT(
  p: MicroBatchPass,
  scratch: BackwardScratch,
  c: LinearRows,
  x: Binding,
): Promise<void> {
  const s = loraSlots(p, c.layer, c.m);
  if (!s || !c.t) return;
  const [, inp] = linearShape(p.model.cfg, c.m);
  for (const { at, rows: piece } of dropoutPieces(p, scratch, c)) {
    const xin = await loraInput(p, scratch, piece, rowsOf(x, inp, at, piece.rows));
    await encodeMatmul(p.ctx, p.batch, {
      a: xin,
      b: p.params.binding(s.a),
      c: piece.t!,
      m: piece.rows,
      n: p.lora.spec.r,
      k: inp,
      transB: true,
    });
  }
}

/**
 * y (=|+=) W x (+ bias): a linear's frozen part, `rows` rows. Shared with the KV decoder
 * (src/train/decode.ts), which runs the same linears over its own buffers.
 */
export async function encodeFrozenLinear(
  ctx: GpuContext,
  batch: DispatchBatch,
  model: BaseModel,
  at: { layer: number; m: LinearModule; rows: number },
  x: Binding,
  y: Binding,
  accumulate: boolean,
): Promise<void> {
  const w = model.layers[at.layer].linears[at.m];
  await encodeMatmul4bit(ctx, batch, { x, w, y, m: at.rows, accumulate });
  // A frozen bias (Qwen2 q/k/v) adds a constant per output: nothing changes in backward.
  const bias = model.layers[at.layer].biases?.[at.m];
  const [out] = linearShape(model.cfg, at.m);
  if (bias) await encodeAddRows(ctx, batch, { bias, y, rows: at.rows, cols: out });
}

/** y += s·t·Bᵀ: LoRA's up-projection of t = x'·Aᵀ, for a module that has LoRA. */
export async function encodeLoraUp(
  ctx: GpuContext,
  batch: DispatchBatch,
  lora: LoraLayout,
  params: LoraParams,
  at: { layer: number; m: LinearModule; rows: number },
  t: Binding,
  y: Binding,
): Promise<void> {
  const b = lora.slot(at.layer, at.m, "B");
  if (!b) throw invalidArgument(`encodeLoraUp: layer ${at.layer} ${at.m} has no LoRA`);
  await encodeMatmul(ctx, batch, {
    a: t,
    b: params.binding(b),
    c: y,
    m: at.rows,
    n: linearShape(lora.cfg, at.m)[0],
    k: lora.spec.r,
    transB: true,
    alpha: lora.scaling,
    accumulate: true,
  });
}

/** y (=|+=) W x + s·B(A(drop(x))) */
async function linearForward(
  p: MicroBatchPass,
  scratch: BackwardScratch,
  c: LinearRows,
  x: Binding,
  y: Binding,
  accumulate: boolean,
): Promise<void> {
  await encodeFrozenLinear(p.ctx, p.batch, p.model, c, x, y, accumulate);
  if (!loraSlots(p, c.layer, c.m) || !c.t) return;
  await loraT(p, scratch, c, x);
  await encodeLoraUp(p.ctx, p.batch, p.lora, p.params, c, c.t, y);
}

/** dx (=|+=) dy·W + LoRA path; LoRA gradients accumulate into `p.grads`. */
async function linearBackward(
  p: MicroBatchPass,
  scratch: BackwardScratch,
  c: LinearRows,
  x: Binding,
  dy: Binding,
  dx: Binding,
  accumulate: boolean,
): Promise<void> {
  const w = p.model.layers[c.layer].linears[c.m];
  const r = c.rows;
  await encodeMatmul4bitT(p.ctx, p.batch, { dy, w, dx, m: r, accumulate });
  const s = loraSlots(p, c.layer, c.m);
  if (!s || !c.t) return;
  const [out, inp] = linearShape(p.model.cfg, c.m);
  const rank = p.lora.spec.r;
  const scaling = p.lora.scaling;
  const dt = slice(scratch.dt, 0, r * rank);
  // dB += s · dyᵀ t
  await encodeMatmul(p.ctx, p.batch, {
    a: dy,
    b: c.t,
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
    b: p.params.binding(s.b),
    c: dt,
    m: r,
    n: rank,
    k: out,
    alpha: scaling,
  });
  // dA += dtᵀ drop(x)
  const pieces = dropoutPieces(p, scratch, c);
  for (const { at, rows: piece } of pieces) {
    const xin = await loraInput(p, scratch, piece, rowsOf(x, inp, at, piece.rows));
    await encodeMatmul(p.ctx, p.batch, {
      a: rowsOf(dt, rank, at, piece.rows),
      b: xin,
      c: slice(p.grads, s.a.offset, s.a.numel),
      m: rank,
      n: inp,
      k: piece.rows,
      transA: true,
      accumulate: true,
    });
  }
  // dx += drop'(dt A): straight into dx without dropout; else through the dropout buffer, free
  // again now that dA has read drop(x), masked in place.
  const aSlice = p.params.binding(s.a);
  if (p.dropout === 0) {
    await encodeMatmul(p.ctx, p.batch, {
      a: dt,
      b: aSlice,
      c: dx,
      m: r,
      n: inp,
      k: rank,
      accumulate: true,
    });
    return;
  }
  for (const { at, rows: piece } of pieces) {
    const n = piece.rows;
    const dInput = slice(scratch.drop!, 0, n * inp);
    const dtPiece = rowsOf(dt, rank, at, n);
    await encodeMatmul(p.ctx, p.batch, { a: dtPiece, b: aSlice, c: dInput, m: n, n: inp, k: rank });
    await encodeDropout(p.ctx, p.batch, {
      x: dInput,
      out: dInput,
      n: n * inp,
      p: p.dropout,
      seed: p.seed,
      stream: dropoutStream(p, c.layer, c.m),
      first: piece.first * inp,
    });
    await encodeAdd(p.ctx, p.batch, { x: dInput, y: rowsOf(dx, inp, at, n), n: n * inp });
  }
}

type Chunk = { first: number; rows: number };

/**
 * A chunk's rows of an MLP tensor: its own rows of the per-layer [rows, cols] tensor without
 * checkpointing, the start of the chunk-sized one with it.
 */
function mlpRowsOf(acts: LayerActivations, buf: Binding, cols: number, chunk: Chunk): Binding {
  return rowsOf(buf, cols, acts.plan.gradientCheckpointing ? 0 : chunk.first, chunk.rows);
}

/** The chunk's gate and up projections: saved per layer, or the scratch's chunk-sized ones. */
function gateUp(acts: LayerActivations, scratch: BackwardScratch, chunk: Chunk) {
  const inter = acts.plan.cfg.intermediate;
  const ckpt = acts.plan.gradientCheckpointing;
  return {
    g: mlpRowsOf(acts, ckpt ? scratch.gate! : acts.g!, inter, chunk),
    u: mlpRowsOf(acts, ckpt ? scratch.up! : acts.u!, inter, chunk),
  };
}

/** An MLP linear on one chunk. */
function mlpLinear(
  p: MicroBatchPass,
  acts: LayerActivations,
  layer: number,
  m: LinearModule,
  chunk: Chunk,
): LinearRows {
  const t = acts.t.get(m);
  return {
    layer,
    m,
    rows: chunk.rows,
    first: chunk.first,
    t: t && mlpRowsOf(acts, t, p.lora.spec.r, chunk),
  };
}

/** The chunk's h: its rows of the layer's saved h, or the scratch's chunk-sized one. */
function hOf(acts: LayerActivations, scratch: BackwardScratch, chunk: Chunk): Binding {
  const hidden = acts.plan.cfg.hidden;
  return acts.h
    ? rowsOf(acts.h, hidden, chunk.first, chunk.rows)
    : rowsOf(scratch.h!, hidden, 0, chunk.rows);
}

/** The chunk's h = x + o(attn) (+LoRA on o), into hOf(chunk). */
async function residualChunk(
  p: MicroBatchPass,
  layer: number,
  acts: LayerActivations,
  scratch: BackwardScratch,
  x: GpuBuffer,
  chunk: Chunk,
): Promise<Binding> {
  const cfg = p.model.cfg;
  const q = cfg.heads * cfg.headDim;
  const h = hOf(acts, scratch, chunk);
  const t = acts.t.get("o");
  const o = {
    layer,
    m: "o" as const,
    rows: chunk.rows,
    first: chunk.first,
    t: t && rowsOf(t, p.lora.spec.r, chunk.first, chunk.rows),
  };
  await encodeCopy(p.ctx, p.batch, {
    src: rowsOf(x, cfg.hidden, chunk.first, chunk.rows),
    dst: h,
    n: chunk.rows * cfg.hidden,
  });
  await linearForward(p, scratch, o, rowsOf(acts.attn, q, chunk.first, chunk.rows), h, true);
  return h;
}

/** The chunk's n2 = rms(h) and its rstd, into the chunk scratch. */
async function mlpNorm(
  p: MicroBatchPass,
  layer: number,
  scratch: BackwardScratch,
  chunk: Chunk,
  h: Binding,
): Promise<void> {
  const cfg = p.model.cfg;
  await encodeRmsNorm(p.ctx, p.batch, {
    x: h,
    weight: p.model.layers[layer].postNorm,
    y: rowsOf(scratch.n2, cfg.hidden, 0, chunk.rows),
    rstd: slice(scratch.rstd2, 0, chunk.rows),
    rows: chunk.rows,
    dim: cfg.hidden,
    eps: cfg.rmsEps,
  });
}

/** n2, gate and up (with their LoRA t) and act = silu(gate)·up of one chunk. */
async function mlpChunkForward(
  p: MicroBatchPass,
  layer: number,
  acts: LayerActivations,
  scratch: BackwardScratch,
  chunk: Chunk,
  h: Binding,
): Promise<void> {
  const cfg = p.model.cfg;
  await mlpNorm(p, layer, scratch, chunk, h);
  const n2 = rowsOf(scratch.n2, cfg.hidden, 0, chunk.rows);
  const inter = cfg.intermediate;
  const { g, u } = gateUp(acts, scratch, chunk);
  await linearForward(p, scratch, mlpLinear(p, acts, layer, "gate", chunk), n2, g, false);
  await linearForward(p, scratch, mlpLinear(p, acts, layer, "up", chunk), n2, u, false);
  await encodeSwiglu(p.ctx, p.batch, {
    gate: g,
    up: u,
    out: rowsOf(scratch.act, inter, 0, chunk.rows),
    n: chunk.rows * inter,
  });
}

/**
 * The attention half over all rows: n1, q, k, v (+LoRA t), attention. (The o projection and its
 * residual run per chunk with the MLP: residualChunk.)
 */
async function attentionForward(
  p: MicroBatchPass,
  layer: number,
  acts: LayerActivations,
  scratch: BackwardScratch,
  x: GpuBuffer,
): Promise<void> {
  const { ctx, batch, model } = p;
  const cfg = model.cfg;
  const r = rows(p);
  // n1 is dead once q, k, v are projected: it takes the saved h's buffer (written per chunk
  // afterwards) or, with checkpointing, the scratch's d n (free until the layer's backward).
  const n1 = acts.h ?? scratch.dn;
  await encodeRmsNorm(ctx, batch, {
    x,
    weight: model.layers[layer].inputNorm,
    y: n1,
    rstd: acts.rstd1,
    rows: r,
    dim: cfg.hidden,
    eps: cfg.rmsEps,
  });
  for (const [m, y] of [["q", acts.q], ["k", acts.k], ["v", acts.v]] as const) {
    await linearForward(p, scratch, allRows(p, acts, layer, m), n1, y, false);
  }
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
  const cfg = p.model.cfg;
  const r = rows(p);
  await attentionForward(p, layer, acts, scratch, x);
  for (const chunk of mlpChunks(acts.plan, r)) {
    const h = await residualChunk(p, layer, acts, scratch, x, chunk);
    await encodeCopy(p.ctx, p.batch, {
      src: h,
      dst: rowsOf(out, cfg.hidden, chunk.first, chunk.rows),
      n: chunk.rows * cfg.hidden,
    });
    await mlpChunkForward(p, layer, acts, scratch, chunk, h);
    await linearForward(
      p,
      scratch,
      mlpLinear(p, acts, layer, "down", chunk),
      rowsOf(scratch.act, cfg.intermediate, 0, chunk.rows),
      rowsOf(out, cfg.hidden, chunk.first, chunk.rows),
      true,
    );
  }
}

/**
 * Gradient checkpointing's recompute before encodeLayerBackward: the attention core only (the
 * layer's output is not needed); backward recomputes each chunk's h and MLP itself.
 */
export async function encodeLayerRecompute(
  p: MicroBatchPass,
  layer: number,
  acts: LayerActivations,
  scratch: BackwardScratch,
  x: GpuBuffer,
): Promise<void> {
  if (!acts.plan.gradientCheckpointing) {
    throw invalidArgument("encodeLayerRecompute: activations were not planned for checkpointing");
  }
  await attentionForward(p, layer, acts, scratch, x);
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
  const hidden = cfg.hidden;
  // d q: its scratch room, or h's buffer (dead after the MLP half; see activations.ts).
  const dq = scratch.dq ?? acts.h!;
  const n1 = acts.n1Backward;
  const inter = cfg.intermediate;
  // MLP branch, chunk by chunk: out = h + down(silu(gate(n2)) * up(n2))
  for (const chunk of mlpChunks(acts.plan, r)) {
    const n = chunk.rows;
    const act = rowsOf(scratch.act, inter, 0, n);
    const down = mlpLinear(p, acts, layer, "down", chunk);
    let h: Binding;
    if (acts.plan.gradientCheckpointing) {
      h = await residualChunk(p, layer, acts, scratch, x, chunk);
      await mlpChunkForward(p, layer, acts, scratch, chunk, h);
      await loraT(p, scratch, down, act);
    } else {
      h = hOf(acts, scratch, chunk);
      await mlpNorm(p, layer, scratch, chunk, h);
      const { g: gate, u: up } = gateUp(acts, scratch, chunk);
      await encodeSwiglu(ctx, batch, {
        gate,
        up,
        out: act,
        n: n * inter,
      });
    }
    const gChunk = rowsOf(g, hidden, chunk.first, n);
    const da = rowsOf(scratch.da, inter, 0, n);
    await linearBackward(p, scratch, down, act, gChunk, da, false);
    // act is dead from here: its buffer takes d gate.
    const dg = rowsOf(scratch.dg, inter, 0, n);
    const du = rowsOf(scratch.du, inter, 0, n);
    const { g: gate, u: up } = gateUp(acts, scratch, chunk);
    await encodeSwigluBackward(ctx, batch, {
      gate,
      up,
      dout: da,
      dgate: dg,
      dup: du,
      n: n * inter,
    });
    const n2 = rowsOf(scratch.n2, hidden, 0, n);
    const dn = rowsOf(scratch.dn, hidden, chunk.first, n);
    await linearBackward(p, scratch, mlpLinear(p, acts, layer, "gate", chunk), n2, dg, dn, false);
    await linearBackward(p, scratch, mlpLinear(p, acts, layer, "up", chunk), n2, du, dn, true);
    await encodeRmsNormBackward(ctx, batch, {
      x: h,
      weight: base.postNorm,
      rstd: slice(scratch.rstd2, 0, n),
      dy: dn,
      dx: gChunk,
      rows: n,
      dim: hidden,
      accumulate: true,
    });
  }
  // Attention branch: h = x + o(attn(rope(q), rope(k), v))
  await linearBackward(
    p,
    scratch,
    allRows(p, acts, layer, "o"),
    acts.attn,
    g,
    scratch.dattn,
    false,
  );
  await encodeAttentionBackward(ctx, batch, {
    q: acts.q,
    k: acts.k,
    v: acts.v,
    segments: p.segments,
    out: acts.attn,
    lse: acts.lse,
    dout: scratch.dattn,
    dq,
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
  await encodeRope(ctx, batch, { ...rope, x: dq, heads: cfg.heads });
  await encodeRope(ctx, batch, { ...rope, x: scratch.dk, heads: cfg.kvHeads });
  // Recompute n1 = rms(x) for q, k, v's LoRA gradients into attn's buffer (read for the last
  // time by attention's backward) or h's (dead after the MLP half). The same kernel on the same
  // x: the same values the forward used.
  await encodeRmsNorm(ctx, batch, {
    x,
    weight: base.inputNorm,
    y: n1,
    rstd: acts.rstd1,
    rows: r,
    dim: hidden,
    eps: cfg.rmsEps,
  });
  const grads = [["q", dq], ["k", scratch.dk], ["v", scratch.dv]] as const;
  for (const [i, [m, dy]] of grads.entries()) {
    await linearBackward(p, scratch, allRows(p, acts, layer, m), n1, dy, scratch.dn, i > 0);
  }
  await encodeRmsNormBackward(ctx, batch, {
    x,
    weight: base.inputNorm,
    rstd: acts.rstd1,
    dy: scratch.dn,
    dx: g,
    rows: r,
    dim: hidden,
    accumulate: true,
  });
}
