/**
 * AdamW (bitsandbytes 32-bit semantics, REFERENCE §9) over the flat LoRA buffer. When the
 * moments fit in `gpuBudgetBytes` they stay resident on the GPU; otherwise they live in host
 * memory in fixed-size pages that stream through a small GPU pool (upload, update, download).
 * Both paths run the same kernel on the same values, so they give identical bits.
 *
 * Paging works on groups of POOL_SLOTS consecutive pages, which sit contiguously in the pool
 * and in the parameters, so a group takes one update dispatch (per-dispatch cost is what
 * dominates small pages on CPU adapters). It is pipelined: group g+1 is uploaded and updated
 * while group g's moments come home, each group in one mapAsync (m and v copied into one
 * readback buffer). The pool is reused without waiting: the queue runs a group's update and
 * copy-out, submitted earlier, before the next group's uploads. Readback buffers are
 * host-visible staging, like GpuContext.read's, so they are not part of the GPU budget or the
 * memory ledger; the pool (POOL_SLOTS pages of m and of v) is.
 */
import { type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
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

/** Pages in the GPU pool (src/train/estimate.ts mirrors it); a group is this many pages. */
const POOL_SLOTS = 2;
/** Readback buffers: groups on their way home while the next one is updated. */
const READBACK_RING = 2;
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

  /**
   * One resident update recorded into `batch`, which the caller submits (so a training step is
   * one submit: src/train/engine.ts). Paged state cannot be: its pages round-trip (`apply`).
   */
  async encode(
    batch: DispatchBatch,
    params: GpuBuffer,
    grads: GpuBuffer,
    clipScale: GpuBuffer,
    lr: number,
  ): Promise<void> {
    if (this.paged) throw new Error("paged AdamW state moves in pages: use apply()");
    this.step++;
    await encodeAdamW(this.ctx, batch, {
      lr,
      ...this.hyper,
      step: this.step,
      gradScale: clipScale,
      param: params,
      grad: grads,
      m: this.#m!,
      v: this.#v!,
      n: this.n,
    });
  }

  /**
   * One update, submitted here; `clipScale` holds the gradient multiplier at element 0. Paged:
   * one submit per group of POOL_SLOTS pages.
   */
  async apply(
    params: GpuBuffer,
    grads: GpuBuffer,
    clipScale: GpuBuffer,
    lr: number,
  ): Promise<OptimizerStepStats> {
    if (!this.paged) {
      const batch = this.ctx.batch("adamw");
      await this.encode(batch, params, grads, clipScale, lr);
      batch.submit();
      return { pagedInBytes: 0, pagedOutBytes: 0 };
    }
    this.step++;
    const common = { lr, ...this.hyper, step: this.step, gradScale: clipScale };
    // A group: POOL_SLOTS consecutive pages, the whole pool.
    const G = POOL_SLOTS * this.pageFloats;
    const groups = Math.ceil(this.n / G);
    if (this.#readback.length === 0) {
      for (let r = 0; r < READBACK_RING; r++) {
        const label = `adam_readback_${r}`;
        const raw = this.ctx.device.createBuffer({
          label,
          size: 2 * G * 4,
          usage: MAP_READ | COPY_DST,
        });
        this.#readback.push(new GpuBuffer(this.ctx, raw, 2 * G * 4, "optimizer", label));
      }
    }
    const inFlight: Array<Promise<void> | undefined> = new Array(READBACK_RING);
    let moved = 0;
    let error: unknown;
    try {
      for (let g = 0; g < groups; g++) {
        const r = g % READBACK_RING;
        // The readback buffer's previous group must be home (and the buffer unmapped) first.
        await inFlight[r];
        const start = g * G;
        const len = Math.min(G, this.n - start);
        const bytes = len * 4;
        this.ctx.write(this.#poolM!, this.#hostM!.subarray(start, start + len));
        this.ctx.write(this.#poolV!, this.#hostV!.subarray(start, start + len));
        const batch = this.ctx.batch("adamw-paged");
        await encodeAdamW(this.ctx, batch, {
          ...common,
          param: { buffer: params, offset: start * 4, size: bytes },
          grad: { buffer: grads, offset: start * 4, size: bytes },
          m: { buffer: this.#poolM!, offset: 0, size: bytes },
          v: { buffer: this.#poolV!, offset: 0, size: bytes },
          n: len,
        });
        const readback = this.#readback[r];
        batch.copy(this.#poolM!, 0, readback, 0, bytes);
        batch.copy(this.#poolV!, 0, readback, G * 4, bytes);
        batch.submit();
        moved += 2 * bytes;
        const raw = readback.buffer;
        inFlight[r] = this.ctx.wait(raw.mapAsync(MAP_READ, 0, G * 4 + bytes), "optimizer page")
          .then(() => {
            const got = raw.getMappedRange(0, G * 4 + bytes);
            this.#hostM!.set(new Float32Array(got, 0, len), start);
            this.#hostV!.set(new Float32Array(got, G * 4, len), start);
            raw.unmap();
          });
      }
    } catch (e) {
      error = e;
    }
    // Wait for every readback even after an error: none may stay mapped or unobserved.
    const settled = await Promise.allSettled(inFlight.filter(Boolean));
    if (error) throw error;
    const failed = settled.find((x) => x.status === "rejected");
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
