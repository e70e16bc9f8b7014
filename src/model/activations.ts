/**
 * GPU buffers for one layer's saved activations and the step's shared scratch, sized for the
 * largest micro-batch. Without gradient checkpointing every layer keeps its own set; with it,
 * one set is shared and each layer is recomputed from its saved input in backward.
 *
 * The MLP half of a layer is token-wise, so src/model/layer.ts runs it over chunks of at most
 * `chunkRows` rows: the [rows, intermediate] tensors exist only per chunk. What is cheap and
 * exact to recompute is not stored: n1 = rms(x) is recomputed in backward, n2 = rms(h) and
 * act = silu(gate)·up per chunk. The o projection and its residual (h = x + o(attn)) are
 * token-wise too and run with the MLP chunks, so with checkpointing h exists per chunk only
 * (recomputed in backward from the saved attn); without, each layer keeps its h (sharing the
 * buffer n1 had in forward). Both classes list their buffers once (`specs`), so the estimator
 * (src/train/estimate.ts) sums the same list.
 */
import type { Binding, GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { LinearModule, LlamaConfig } from "./config.ts";
import type { MemoryCategory } from "../gpu/memory.ts";
import { invalidArgument } from "../util/errors.ts";

export interface Shape {
  batch: number;
  seq: number;
}

/**
 * Default MLP chunk: 512 rows. At Llama-3-8B x 8192 tokens its [512, 14336] f32 tensors (28 MiB
 * each) fit inside the d q/k/v buffers they share (below), so a chunk costs only its h and n2
 * (16 MiB), where 1024 rows cost 104 MiB more (256 rows would save 8 MiB). A 512-row product
 * still has 512 x 14,336 outputs (thousands of tiles) to fill a GPU; the price is re-reading each
 * 4-bit MLP weight once per chunk (16 chunks: ~4 GB a layer-step, ~1.3 ms at 3 TB/s) and ~30
 * dispatches per chunk in backward.
 */
export const MLP_CHUNK_ROWS = 512;
/**
 * Chunks start on multiples of this many rows: a chunk's slice of any [rows, cols] f32 tensor
 * then starts on a multiple of 256 bytes, the largest minStorageBufferOffsetAlignment WebGPU
 * allows.
 */
export const MLP_CHUNK_ALIGN_ROWS = 64;

const ATTENTION_MODULES: readonly LinearModule[] = ["q", "k", "v", "o"];

/** Everything that sizes the buffers. */
export interface ActivationPlan {
  cfg: LlamaConfig;
  /** Rows of the largest micro-batch (batch * seq). */
  rows: number;
  r: number;
  targets: readonly LinearModule[];
  gradientCheckpointing: boolean;
  /** Rows per MLP chunk: the option (a multiple of MLP_CHUNK_ALIGN_ROWS), at most `rows`. */
  chunkRows: number;
  /** LoRA dropout > 0: a dropout buffer exists (evaluation passes dropout 0 and needs none). */
  dropout: boolean;
}

export function activationPlan(
  cfg: LlamaConfig,
  shape: Shape,
  lora: { r: number; targets: readonly LinearModule[]; dropout: number },
  opts: { gradientCheckpointing: boolean; mlpChunkRows?: number },
): ActivationPlan {
  const chunk = opts.mlpChunkRows ?? MLP_CHUNK_ROWS;
  if (!Number.isInteger(chunk) || chunk < 1 || chunk % MLP_CHUNK_ALIGN_ROWS !== 0) {
    throw invalidArgument(
      `mlpChunkRows must be a positive multiple of ${MLP_CHUNK_ALIGN_ROWS}, got ${chunk}`,
    );
  }
  const rows = shape.batch * shape.seq;
  return {
    cfg,
    rows,
    r: lora.r,
    targets: lora.targets,
    gradientCheckpointing: opts.gradientCheckpointing,
    chunkRows: Math.min(chunk, rows),
    dropout: lora.dropout > 0,
  };
}

/** The row chunks [first, first + rows) of a micro-batch of `rows` rows. */
export function mlpChunks(plan: ActivationPlan, rows: number): { first: number; rows: number }[] {
  const out = [];
  for (let first = 0; first < rows; first += plan.chunkRows) {
    out.push({ first, rows: Math.min(plan.chunkRows, rows - first) });
  }
  return out;
}

/**
 * Where attention's backward puts d q and the n1 it recomputes for q, k, v's LoRA gradients,
 * borrowing saved buffers that are dead by then where they fit: attn's is dead once attention's
 * backward has read it (n1 fits when the query width is at least hidden); a saved h (without
 * checkpointing) once the MLP half is done (d q fits when the query width equals hidden, n1 then
 * going to attn's). Otherwise d q has its own room in the scratch, and n1 h's buffer or, with
 * checkpointing, one of its own.
 */
export function attentionBorrowing(plan: ActivationPlan): { dqInH: boolean; n1InAttn: boolean } {
  const q = plan.cfg.heads * plan.cfg.headDim;
  const hidden = plan.cfg.hidden;
  return plan.gradientCheckpointing
    ? { dqInH: false, n1InAttn: q >= hidden }
    : { dqInH: q === hidden, n1InAttn: q === hidden };
}

/** One buffer: f32 elements, ledger category, and the estimator line it is counted under. */
export interface BufferSpec {
  label: string;
  floats: number;
  category: MemoryCategory;
  group: "saved" | "backward" | "shared" | "mlp_norm";
}

/** As GpuContext.createBuffer allocates (and the ledger counts): 16-byte multiples, >= 16. */
function paddedBytes(floats: number): number {
  return Math.max(16, Math.ceil((floats * 4) / 16) * 16);
}

/** Allocated bytes of specs (optionally one group), as the ledger counts them. */
export function specBytes(specs: BufferSpec[], group?: BufferSpec["group"]): number {
  return specs.filter((s) => group === undefined || s.group === group)
    .reduce((sum, s) => sum + paddedBytes(s.floats), 0);
}

/** Sub-tensors packed in one buffer, each starting on a 256-byte (64-float) boundary. */
function packed(sizes: number[]): { offsets: number[]; floats: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const n of sizes) {
    offsets.push(at);
    at += Math.ceil(n / 64) * 64;
  }
  return { offsets, floats: at };
}

function view(buffer: GpuBuffer, offsetFloats: number, floats: number): Binding {
  return { buffer, offset: offsetFloats * 4, size: floats * 4 };
}

function qkvWidths(cfg: LlamaConfig) {
  return { q: cfg.heads * cfg.headDim, kv: cfg.kvHeads * cfg.headDim };
}

export class LayerActivations {
  /**
   * Without checkpointing: n1 = rms(x) until q, k, v are projected, then h = x + o(attn), dead
   * once backward's MLP half is done. With checkpointing there is none: n1 goes to the scratch's
   * d n (free during the forward) and h exists per chunk (BackwardScratch.h).
   */
  readonly h: GpuBuffer | undefined;
  readonly rstd1: GpuBuffer;
  readonly q: GpuBuffer;
  readonly k: GpuBuffer;
  readonly v: GpuBuffer;
  /** Log-sum-exp of each query's attention scores [rows, heads]: all the backward needs. */
  readonly lse: GpuBuffer;
  readonly attn: GpuBuffer;
  /** Where backward recomputes n1 for q, k, v's LoRA gradients (attentionBorrowing). */
  readonly n1Backward: GpuBuffer;
  /**
   * Gate and up projections [rows, intermediate], per layer, without checkpointing; with it
   * absent: each chunk's are recomputed into BackwardScratch.gate/up.
   */
  readonly g: GpuBuffer | undefined;
  readonly u: GpuBuffer | undefined;
  /** LoRA intermediate t = dropout(x)·Aᵀ per targeted module: [rows, r], or for gate, up and
   * down with checkpointing [chunkRows, r] (the current chunk's). */
  readonly t = new Map<LinearModule, GpuBuffer>();
  readonly all: GpuBuffer[] = [];

  constructor(ctx: GpuContext, readonly plan: ActivationPlan) {
    const made = new Map<string, GpuBuffer>();
    for (const s of LayerActivations.specs(plan)) {
      const b = ctx.createBuffer({ label: s.label, category: s.category, size: s.floats * 4 });
      made.set(s.label, b);
      this.all.push(b);
    }
    this.h = made.get("n1_then_h");
    this.rstd1 = made.get("rstd1")!;
    this.q = made.get("q")!;
    this.k = made.get("k")!;
    this.v = made.get("v")!;
    this.lse = made.get("attn_lse")!;
    this.attn = made.get("attn")!;
    this.n1Backward = attentionBorrowing(plan).n1InAttn
      ? this.attn
      : (this.h ?? made.get("n1_backward")!);
    this.g = made.get("gate");
    this.u = made.get("up");
    for (const m of plan.targets) this.t.set(m, made.get(`lora_t_${m}`)!);
  }

  /** The buffers of one set. */
  static specs(plan: ActivationPlan): BufferSpec[] {
    const { cfg, rows, r } = plan;
    const { q, kv } = qkvWidths(cfg);
    const list: [string, number][] = [];
    if (!plan.gradientCheckpointing) list.push(["n1_then_h", rows * cfg.hidden]);
    else if (!attentionBorrowing(plan).n1InAttn) list.push(["n1_backward", rows * cfg.hidden]);
    list.push(
      ["rstd1", rows],
      ["q", rows * q],
      ["k", rows * kv],
      ["v", rows * kv],
      ["attn_lse", rows * cfg.heads],
      ["attn", rows * q],
    );
    if (!plan.gradientCheckpointing) {
      list.push(["gate", rows * cfg.intermediate], ["up", rows * cfg.intermediate]);
    }
    const mlpRows = plan.gradientCheckpointing ? plan.chunkRows : rows;
    for (const m of plan.targets) {
      list.push([`lora_t_${m}`, (ATTENTION_MODULES.includes(m) ? rows : mlpRows) * r]);
    }
    return list.map(([label, floats]) => ({
      label,
      floats,
      category: "activations",
      group: "saved",
    }));
  }

  /** Bytes one set takes, as allocated (the estimator's saved-activations line). */
  static bytes(plan: ActivationPlan): number {
    return specBytes(LayerActivations.specs(plan));
  }

  destroy(): void {
    for (const b of this.all) b.destroy();
  }
}

/**
 * Scratch shared by all layers: the backward pass's gradients, the MLP chunk's work tensors
 * (forward and backward), and the dropout buffer.
 *
 * d q, d k, d v live only between attention's backward and q, k, v's; the MLP chunk's
 * [chunk, intermediate] tensors only within the MLP half: they share two buffers. A dispatch may
 * not bind one buffer both read-only and writable (Dawn's usage-scope rule), so the tensors the
 * SwiGLU kernels read and those they write sit in different buffers: one holds d q (unless it
 * borrows h's buffer), or (gate, up with checkpointing) and d act; the other d k, d v, or act
 * (then d gate) and d up.
 */
export class BackwardScratch {
  readonly gradX: GpuBuffer;
  /**
   * d loss / d (rms-norm output): the MLP chunks' slices, then q, k, v's sum. With checkpointing
   * the forward also keeps n1 here (free until the layer's backward starts).
   */
  readonly dn: GpuBuffer;
  /** d loss / d attn: the same buffer as `dn` (live only between o's and q's backward). */
  readonly dattn: GpuBuffer;
  /** Absent when attention's backward writes d q into h's buffer (attentionBorrowing). */
  readonly dq: Binding | undefined;
  readonly dk: Binding;
  readonly dv: Binding;
  readonly dt: GpuBuffer;
  /** With checkpointing: the chunk's h = x + o(attn) [chunkRows, hidden]. */
  readonly h: GpuBuffer | undefined;
  /** The chunk's n2 = rms(h) [chunkRows, hidden] and its rstd [chunkRows]. */
  readonly n2: GpuBuffer;
  readonly rstd2: GpuBuffer;
  /** With checkpointing: the chunk's gate and up projections [chunkRows, intermediate]. */
  readonly gate: Binding | undefined;
  readonly up: Binding | undefined;
  /** The chunk's act = silu(gate)·up; in backward, once down's backward is done, d gate. */
  readonly act: Binding;
  readonly dg: Binding;
  readonly da: Binding;
  readonly du: Binding;
  /**
   * dropout(x) of a LoRA input, then that LoRA path's input gradient before its mask; absent
   * when the adapter's dropout is 0 (the input gradient then adds straight into dx).
   */
  readonly drop: GpuBuffer | undefined;
  readonly all: GpuBuffer[] = [];

  constructor(ctx: GpuContext, readonly plan: ActivationPlan) {
    const made = new Map<string, GpuBuffer>();
    for (const s of BackwardScratch.specs(plan)) {
      const b = ctx.createBuffer({ label: s.label, category: s.category, size: s.floats * 4 });
      made.set(s.label, b);
      this.all.push(b);
    }
    this.gradX = made.get("grad_x")!;
    this.dn = this.dattn = made.get("grad_norm_out_or_attn")!;
    this.dt = made.get("grad_lora_t")!;
    this.h = made.get("mlp_h");
    this.n2 = made.get("mlp_n2")!;
    this.rstd2 = made.get("mlp_rstd2")!;
    this.drop = made.get("lora_dropout");
    const l = BackwardScratch.#layout(plan);
    const inBuf = made.get("grad_q_or_mlp_in")!;
    const outBuf = made.get("grad_kv_or_mlp_out")!;
    this.dq = l.attnIn.offsets.length > 0 ? view(inBuf, 0, l.sizes.q) : undefined;
    this.dk = view(outBuf, l.attnOut.offsets[0], l.sizes.kv);
    this.dv = view(outBuf, l.attnOut.offsets[1], l.sizes.kv);
    const c = l.sizes.chunk;
    const [gOff, uOff, daOff] = l.mlpIn.offsets;
    this.gate = plan.gradientCheckpointing ? view(inBuf, gOff, c) : undefined;
    this.up = plan.gradientCheckpointing ? view(inBuf, uOff, c) : undefined;
    this.da = view(inBuf, plan.gradientCheckpointing ? daOff : 0, c);
    this.act = this.dg = view(outBuf, l.mlpOut.offsets[0], c);
    this.du = view(outBuf, l.mlpOut.offsets[1], c);
  }

  static #layout(plan: ActivationPlan) {
    const { cfg, rows, chunkRows } = plan;
    const { q, kv } = qkvWidths(cfg);
    const sizes = { q: rows * q, kv: rows * kv, chunk: chunkRows * cfg.intermediate };
    const c = sizes.chunk;
    return {
      sizes,
      attnIn: packed(attentionBorrowing(plan).dqInH ? [] : [sizes.q]),
      attnOut: packed([sizes.kv, sizes.kv]),
      mlpIn: packed(plan.gradientCheckpointing ? [c, c, c] : [c]),
      mlpOut: packed([c, c]),
    };
  }

  static specs(plan: ActivationPlan): BufferSpec[] {
    const { cfg, rows, r, chunkRows: chunk } = plan;
    const { q } = qkvWidths(cfg);
    const backward: [string, number][] = [
      ["grad_x", rows * cfg.hidden],
      ["grad_norm_out_or_attn", rows * Math.max(cfg.hidden, q)],
      ["grad_lora_t", rows * r],
    ];
    if (plan.dropout && plan.targets.length > 0) {
      // One chunk of the widest LoRA input (n1, attn, n2 or act): layer.ts runs every product
      // that reads the dropout buffer over row pieces of at most a chunk.
      backward.push(["lora_dropout", chunk * Math.max(cfg.hidden, q, cfg.intermediate)]);
    }
    const l = BackwardScratch.#layout(plan);
    const shared: [string, number][] = [
      ["grad_q_or_mlp_in", Math.max(l.attnIn.floats, l.mlpIn.floats)],
      ["grad_kv_or_mlp_out", Math.max(l.attnOut.floats, l.mlpOut.floats)],
    ];
    const norm: [string, number][] = [["mlp_n2", chunk * cfg.hidden], ["mlp_rstd2", chunk]];
    if (plan.gradientCheckpointing) norm.unshift(["mlp_h", chunk * cfg.hidden]);
    const spec = (group: BufferSpec["group"]) => ([label, floats]: [string, number]) => ({
      label,
      floats,
      category: "scratch" as const,
      group,
    });
    return [
      ...backward.map(spec("backward")),
      ...shared.map(spec("shared")),
      ...norm.map(spec("mlp_norm")),
    ];
  }

  /**
   * Allocated bytes: the backward gradients (+ dropout buffer); the two buffers d q/k/v share
   * with the MLP chunk's tensors; the chunk's h (with checkpointing), n2 and rstd.
   */
  static bytes(plan: ActivationPlan): { backward: number; shared: number; mlpNorm: number } {
    const specs = BackwardScratch.specs(plan);
    return {
      backward: specBytes(specs, "backward"),
      shared: specBytes(specs, "shared"),
      mlpNorm: specBytes(specs, "mlp_norm"),
    };
  }

  destroy(): void {
    for (const b of this.all) b.destroy();
  }
}
