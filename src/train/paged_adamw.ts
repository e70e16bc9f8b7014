/**
 * AdamW (bitsandbytes 32-bit semantics, REFERENCE §9) over the flat LoRA buffer. When the
 * moments fit in `gpuBudgetBytes` they stay resident on the GPU; otherwise they live in host
 * memory in fixed-size pages that stream through a small GPU pool (upload, update, download).
 * Both paths run the same kernel on the same values, so they give identical bits.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import { encodeAdamW } from "../kernels/adamw.ts";
import { SLOT_ALIGN_FLOATS } from "../model/lora.ts";
import { invalidArgument } from "../util/errors.ts";

export interface AdamWHyper {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

export interface OptimizerStepStats {
  pagedInBytes: number;
  pagedOutBytes: number;
}

/** Pages in flight at once: one being updated while the other is copied. */
const POOL_SLOTS = 2;

export class AdamWOptimizer {
  readonly paged: boolean;
  readonly pageFloats: number;
  step = 0;
  #m?: GpuBuffer;
  #v?: GpuBuffer;
  #hostM?: Float32Array;
  #hostV?: Float32Array;
  #poolM?: GpuBuffer;
  #poolV?: GpuBuffer;

  constructor(
    readonly ctx: GpuContext,
    readonly n: number,
    readonly hyper: AdamWHyper,
    gpuBudgetBytes = 0,
  ) {
    if (gpuBudgetBytes < 0) throw invalidArgument("optimizer_gpu_budget_bytes must be >= 0");
    const stateBytes = 2 * n * 4;
    this.paged = gpuBudgetBytes > 0 && gpuBudgetBytes < stateBytes;
    if (!this.paged) {
      this.pageFloats = n;
      this.#m = ctx.createBuffer({ label: "adam_m", category: "optimizer", size: n * 4 });
      this.#v = ctx.createBuffer({ label: "adam_v", category: "optimizer", size: n * 4 });
      this.#zeroResident();
      return;
    }
    const perPage = Math.floor(gpuBudgetBytes / (2 * POOL_SLOTS * 4));
    this.pageFloats = Math.max(
      SLOT_ALIGN_FLOATS,
      Math.floor(perPage / SLOT_ALIGN_FLOATS) * SLOT_ALIGN_FLOATS,
    );
    this.#hostM = new Float32Array(n);
    this.#hostV = new Float32Array(n);
    const poolBytes = POOL_SLOTS * this.pageFloats * 4;
    this.#poolM = ctx.createBuffer({
      label: "adam_m_pool",
      category: "optimizer",
      size: poolBytes,
    });
    this.#poolV = ctx.createBuffer({
      label: "adam_v_pool",
      category: "optimizer",
      size: poolBytes,
    });
  }

  #zeroResident(): void {
    const zeros = new Float32Array(this.n);
    this.ctx.write(this.#m!, zeros);
    this.ctx.write(this.#v!, zeros);
  }

  /** One update; `clipScale` holds the gradient multiplier at element 0. */
  async apply(
    params: GpuBuffer,
    grads: GpuBuffer,
    clipScale: GpuBuffer,
    lr: number,
  ): Promise<OptimizerStepStats> {
    this.step++;
    const common = { lr, ...this.hyper, step: this.step, gradScale: clipScale };
    if (!this.paged) {
      const batch = this.ctx.batch("adamw");
      await encodeAdamW(this.ctx, batch, {
        ...common,
        param: params,
        grad: grads,
        m: this.#m!,
        v: this.#v!,
        n: this.n,
      });
      batch.submit();
      return { pagedInBytes: 0, pagedOutBytes: 0 };
    }
    const P = this.pageFloats;
    const pages = Math.ceil(this.n / P);
    let moved = 0;
    for (let first = 0; first < pages; first += POOL_SLOTS) {
      const group = Math.min(POOL_SLOTS, pages - first);
      const batch = this.ctx.batch("adamw-paged");
      for (let s = 0; s < group; s++) {
        const start = (first + s) * P;
        const len = Math.min(P, this.n - start);
        this.ctx.write(this.#poolM!, this.#hostM!.subarray(start, start + len), s * P * 4);
        this.ctx.write(this.#poolV!, this.#hostV!.subarray(start, start + len), s * P * 4);
        const bytes = len * 4;
        await encodeAdamW(this.ctx, batch, {
          ...common,
          param: { buffer: params, offset: start * 4, size: bytes },
          grad: { buffer: grads, offset: start * 4, size: bytes },
          m: { buffer: this.#poolM!, offset: s * P * 4, size: bytes },
          v: { buffer: this.#poolV!, offset: s * P * 4, size: bytes },
          n: len,
        });
        moved += 2 * bytes;
      }
      batch.submit();
      const groupFloats = Math.min(group * P, this.n - first * P);
      const m = await this.ctx.readF32(this.#poolM!, 0, groupFloats);
      const v = await this.ctx.readF32(this.#poolV!, 0, groupFloats);
      this.#hostM!.set(m, first * P);
      this.#hostV!.set(v, first * P);
    }
    return { pagedInBytes: moved, pagedOutBytes: moved };
  }

  /** Host copies of the moments (for checkpoints). */
  async state(): Promise<{ m: Float32Array; v: Float32Array; step: number }> {
    if (this.paged) return { m: this.#hostM!.slice(), v: this.#hostV!.slice(), step: this.step };
    return {
      m: await this.ctx.readF32(this.#m!, 0, this.n),
      v: await this.ctx.readF32(this.#v!, 0, this.n),
      step: this.step,
    };
  }

  setState(s: { m: Float32Array; v: Float32Array; step: number }): void {
    if (s.m.length !== this.n || s.v.length !== this.n) {
      throw invalidArgument(`optimizer state has ${s.m.length} values, expected ${this.n}`);
    }
    this.step = s.step;
    if (this.paged) {
      this.#hostM!.set(s.m);
      this.#hostV!.set(s.v);
    } else {
      this.ctx.write(this.#m!, s.m);
      this.ctx.write(this.#v!, s.v);
    }
  }

  /** Bytes of optimizer state resident on the GPU. */
  get gpuBytes(): number {
    return this.paged ? 2 * POOL_SLOTS * this.pageFloats * 4 : 2 * this.n * 4;
  }

  destroy(): void {
    for (const b of [this.#m, this.#v, this.#poolM, this.#poolV]) b?.destroy();
  }
}
