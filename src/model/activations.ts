/**
 * GPU buffers for one layer's saved activations and the step's scratch, sized for the
 * largest micro-batch. Without gradient checkpointing every layer keeps its own set; with
 * it, one set is shared and each layer is recomputed from its saved input in backward.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { LinearModule, LlamaConfig } from "./config.ts";
import type { MemoryCategory } from "../gpu/memory.ts";

export interface Shape {
  batch: number;
  seq: number;
}

export class LayerActivations {
  readonly n1: GpuBuffer;
  readonly rstd1: GpuBuffer;
  readonly q: GpuBuffer;
  readonly k: GpuBuffer;
  readonly v: GpuBuffer;
  /** Log-sum-exp of each query's attention scores [rows, heads]: all the backward needs. */
  readonly lse: GpuBuffer;
  readonly attn: GpuBuffer;
  readonly h: GpuBuffer;
  readonly n2: GpuBuffer;
  readonly rstd2: GpuBuffer;
  readonly g: GpuBuffer;
  readonly u: GpuBuffer;
  readonly a: GpuBuffer;
  /** LoRA intermediate t = dropout(x)·Aᵀ [rows, r] per targeted module. */
  readonly t = new Map<LinearModule, GpuBuffer>();
  readonly all: GpuBuffer[] = [];

  constructor(ctx: GpuContext, cfg: LlamaConfig, shape: Shape, targets: LinearModule[], r: number) {
    const rows = shape.batch * shape.seq;
    const q = cfg.heads * cfg.headDim;
    const kv = cfg.kvHeads * cfg.headDim;
    const f = (label: string, floats: number) => {
      const b = ctx.createBuffer({ label, category: "activations", size: floats * 4 });
      this.all.push(b);
      return b;
    };
    this.n1 = f("n1", rows * cfg.hidden);
    this.rstd1 = f("rstd1", rows);
    this.q = f("q", rows * q);
    this.k = f("k", rows * kv);
    this.v = f("v", rows * kv);
    this.lse = f("attn_lse", rows * cfg.heads);
    this.attn = f("attn", rows * q);
    this.h = f("h", rows * cfg.hidden);
    this.n2 = f("n2", rows * cfg.hidden);
    this.rstd2 = f("rstd2", rows);
    this.g = f("gate", rows * cfg.intermediate);
    this.u = f("up", rows * cfg.intermediate);
    this.a = f("act", rows * cfg.intermediate);
    for (const m of targets) this.t.set(m, f(`lora_t_${m}`, rows * r));
  }

  /** Bytes one set takes, for the estimator (same formula as the constructor). */
  static bytes(cfg: LlamaConfig, shape: Shape, targets: number, r: number): number {
    const rows = shape.batch * shape.seq;
    const q = cfg.heads * cfg.headDim;
    const kv = cfg.kvHeads * cfg.headDim;
    const floats = rows * (3 * cfg.hidden + 2 + 2 * q + 2 * kv + 3 * cfg.intermediate) +
      rows * cfg.heads + targets * rows * r;
    return floats * 4;
  }

  destroy(): void {
    for (const b of this.all) b.destroy();
  }
}

/** Backward-pass scratch shared by all layers. */
export class BackwardScratch {
  readonly gradX: GpuBuffer;
  readonly dn: GpuBuffer;
  readonly dq: GpuBuffer;
  readonly dk: GpuBuffer;
  readonly dv: GpuBuffer;
  readonly dattn: GpuBuffer;
  readonly dg: GpuBuffer;
  readonly du: GpuBuffer;
  readonly da: GpuBuffer;
  readonly dt: GpuBuffer;
  /** dropout(x) recomputed, and dropout'd input gradients: [rows, max(in)]. */
  readonly drop: GpuBuffer;
  readonly dInput: GpuBuffer;
  readonly dInputMasked: GpuBuffer;
  readonly all: GpuBuffer[] = [];

  constructor(ctx: GpuContext, cfg: LlamaConfig, shape: Shape, r: number) {
    const rows = shape.batch * shape.seq;
    const q = cfg.heads * cfg.headDim;
    const kv = cfg.kvHeads * cfg.headDim;
    const widest = Math.max(cfg.hidden, cfg.intermediate, q);
    const f = (label: string, floats: number, category: MemoryCategory = "scratch") => {
      const b = ctx.createBuffer({ label, category, size: floats * 4 });
      this.all.push(b);
      return b;
    };
    this.gradX = f("grad_x", rows * cfg.hidden);
    this.dn = f("grad_norm_out", rows * cfg.hidden);
    this.dq = f("grad_q", rows * q);
    this.dk = f("grad_k", rows * kv);
    this.dv = f("grad_v", rows * kv);
    this.dattn = f("grad_attn", rows * q);
    this.dg = f("grad_gate", rows * cfg.intermediate);
    this.du = f("grad_up", rows * cfg.intermediate);
    this.da = f("grad_act", rows * cfg.intermediate);
    this.dt = f("grad_lora_t", rows * r);
    this.drop = f("dropout_input", rows * widest);
    this.dInput = f("grad_lora_input", rows * widest);
    this.dInputMasked = f("grad_lora_input_masked", rows * widest);
  }

  static bytes(cfg: LlamaConfig, shape: Shape, r: number): number {
    const rows = shape.batch * shape.seq;
    const q = cfg.heads * cfg.headDim;
    const kv = cfg.kvHeads * cfg.headDim;
    const widest = Math.max(cfg.hidden, cfg.intermediate, q);
    return 4 * rows * (2 * cfg.hidden + 2 * q + 2 * kv + 3 * cfg.intermediate + r + 3 * widest);
  }

  destroy(): void {
    for (const b of this.all) b.destroy();
  }
}
