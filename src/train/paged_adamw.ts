/**
 * AdamW (bitsandbytes 32-bit semantics, REFERENCE §9) over the flat LoRA buffer. When the
 * moments fit in `gpuBudgetBytes` they stay resident on the GPU; otherwise they live in host
 * memory in fixed-size pages that stream through a small GPU pool (upload, update, download).
 * Both paths run the same kernel on the same values, so they give identical bits.
 *
 * Paging is pipelined: page k+1 is uploaded and updated while page k's moments come home, and
 * each page comes home in one mapAsync (m and v copied into one readback buffer). Readback
 * buffers are host-visible staging, like GpuContext.read's, so they are not part of the GPU
 * budget or the memory ledger; the pool (POOL_SLOTS pages of m and of v) is.
 */
import { GpuBuffer, type GpuContext } from "../gpu/context.ts";
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

/** Pages in flight at once: one being updated while the other is copied home. */
const POOL_SLOTS = 2;
const MAP_READ = 0x01;
const COPY_DST = 0x08;

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
  /**
   * Per pool slot: m then v of one page, mapped for reading. Wrapped as GpuBuffers (for
   * DispatchBatch.copy) but outside the ledger: destroy the raw buffers, never the wrappers.
   */
  #readback: GpuBuffer[] = [];

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
    if (this.#readback.length === 0) {
      for (let s = 0; s < POOL_SLOTS; s++) {
        const label = `adam_readback_${s}`;
        const raw = this.ctx.device.createBuffer({
          label,
          size: 2 * P * 4,
          usage: MAP_READ | COPY_DST,
        });
        this.#readback.push(new GpuBuffer(this.ctx, raw, 2 * P * 4, "optimizer", label));
      }
    }
    const inFlight: Array<Promise<void> | undefined> = new Array(POOL_SLOTS);
    let moved = 0;
    let error: unknown;
    try {
      for (let page = 0; page < pages; page++) {
        const s = page % POOL_SLOTS;
        // The slot's previous page must be home (and its readback buffer unmapped) first.
        await inFlight[s];
        const start = page * P;
        const len = Math.min(P, this.n - start);
        const bytes = len * 4;
        this.ctx.write(this.#poolM!, this.#hostM!.subarray(start, start + len), s * P * 4);
        this.ctx.write(this.#poolV!, this.#hostV!.subarray(start, start + len), s * P * 4);
        const batch = this.ctx.batch("adamw-paged");
        await encodeAdamW(this.ctx, batch, {
          ...common,
          param: { buffer: params, offset: start * 4, size: bytes },
          grad: { buffer: grads, offset: start * 4, size: bytes },
          m: { buffer: this.#poolM!, offset: s * P * 4, size: bytes },
          v: { buffer: this.#poolV!, offset: s * P * 4, size: bytes },
          n: len,
        });
        const readback = this.#readback[s];
        batch.copy(this.#poolM!, s * P * 4, readback, 0, bytes);
        batch.copy(this.#poolV!, s * P * 4, readback, P * 4, bytes);
        batch.submit();
        moved += 2 * bytes;
        const raw = readback.buffer;
        inFlight[s] = raw.mapAsync(MAP_READ, 0, P * 4 + bytes).then(() => {
          const got = raw.getMappedRange(0, P * 4 + bytes);
          this.#hostM!.set(new Float32Array(got, 0, len), start);
          this.#hostV!.set(new Float32Array(got, P * 4, len), start);
          raw.unmap();
        });
      }
    } catch (e) {
      error = e;
    }
    // Wait for every readback even after an error: none may stay mapped or unobserved.
    const settled = await Promise.allSettled(inFlight.filter(Boolean));
    if (error) throw error;
    const failed = settled.find((r) => r.status === "rejected");
    if (failed) {
      this.ctx.check();
      throw (failed as PromiseRejectedResult).reason;
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
    for (const b of this.#readback) b.buffer.destroy();
    this.#readback = [];
  }
}
