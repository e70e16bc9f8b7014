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
 *
 * With bf16 LoRA storage (src/model/lora_params.ts) the f32 master parameters live here too, in
 * host memory beside the moments: the pool then holds master, m and v pages, the kernel updates
 * the master page, the updated page is packed to bf16 (round to nearest even) into the GPU's
 * compute copy, and master, m and v come home. Standard mixed precision: the GPU computes with
 * bf16 parameters, the update accumulates in f32.
 */
import { type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
import { encodeAdamW } from "../kernels/adamw.ts";
import { encodePackBf16 } from "../kernels/bf16.ts";
import { SLOT_ALIGN_FLOATS } from "../model/lora.ts";
import { invalidArgument } from "../util/errors.ts";
import { HYPERPARAMETER_FIELDS, SettingError, type SettingNames } from "./settings.ts";

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

/** Pages in the GPU pool per paged array (OPTIMIZER_POOL_SLOTS); a group is this many pages. */
const POOL_SLOTS = 2;
/** Readback buffers: groups on their way home while the next one is updated. */
const READBACK_RING = 2;
const MAP_READ = 0x01;
const COPY_DST = 0x08;

/** Float arrays a bf16-storage optimizer pages per element: master, m and v. */
const BF16_PAGED_ARRAYS = 3;

export class AdamWOptimizer {
  readonly paged: boolean;
  readonly pageFloats: number;
  /** bf16 LoRA storage: the f32 master is paged here and packed into the bf16 copy. */
  readonly bf16Master: boolean;
  step = 0;
  #m?: GpuBuffer;
  #v?: GpuBuffer;
  #hostM?: Float32Array;
  #hostV?: Float32Array;
  #poolM?: GpuBuffer;
  #poolV?: GpuBuffer;
  #hostP?: Float32Array;
  #poolP?: GpuBuffer;
  /**
   * Per READBACK_RING entry: m, v (and with bf16 storage the master) of one group, G floats
   * apart, mapped for reading. Wrapped as GpuBuffers (for DispatchBatch.copy) but outside the
   * ledger: destroy the raw buffers, never the wrappers.
   */
  #readback: GpuBuffer[] = [];

  /**
   * `master`: bf16 LoRA storage, the f32 parameters to keep as the master (paged; the budget
   * must be > 0 and under the master and moments' bytes, or the master would have no reason to
   * leave the GPU).
   */
  constructor(
    readonly ctx: GpuContext,
    readonly n: number,
    readonly hyper: AdamWHyper,
    gpuBudgetBytes = 0,
    master?: Float32Array,
  ) {
    if (gpuBudgetBytes < 0) throw invalidArgument("optimizer_gpu_budget_bytes must be >= 0");
    this.bf16Master = master !== undefined;
    const arrays = pagedArrays(this.bf16Master);
    const stateBytes = arrays * n * 4;
    this.paged = gpuBudgetBytes > 0 && gpuBudgetBytes < stateBytes;
    if (this.bf16Master) checkBf16MasterBudget(n, gpuBudgetBytes);
    if (!this.paged) {
      this.pageFloats = n;
      this.#m = ctx.createBuffer({ label: "adam_m", category: "optimizer", size: n * 4 });
      this.#v = ctx.createBuffer({ label: "adam_v", category: "optimizer", size: n * 4 });
      this.#zeroResident();
      return;
    }
    this.pageFloats = optimizerPageFloats(gpuBudgetBytes, arrays);
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
    if (master) {
      if (master.length !== n) {
        throw invalidArgument(`adapter has ${master.length} values, expected ${n}`);
      }
      this.#hostP = master.slice();
      this.#poolP = ctx.createBuffer({
        label: "lora_master_pool",
        category: "optimizer",
        size: poolBytes,
      });
    }
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
    // Per group: m, v (and the master) come home in one readback, each G floats apart.
    const arrays = pagedArrays(this.bf16Master);
    if (this.#readback.length === 0) {
      for (let r = 0; r < READBACK_RING; r++) {
        const label = `adam_readback_${r}`;
        const raw = this.ctx.device.createBuffer({
          label,
          size: arrays * G * 4,
          usage: MAP_READ | COPY_DST,
        });
        this.#readback.push(new GpuBuffer(this.ctx, raw, arrays * G * 4, "optimizer", label));
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
        const master = this.#poolP && { buffer: this.#poolP, offset: 0, size: bytes };
        if (master) this.ctx.write(this.#poolP!, this.#hostP!.subarray(start, start + len));
        const batch = this.ctx.batch("adamw-paged");
        await encodeAdamW(this.ctx, batch, {
          ...common,
          param: master ?? { buffer: params, offset: start * 4, size: bytes },
          grad: { buffer: grads, offset: start * 4, size: bytes },
          m: { buffer: this.#poolM!, offset: 0, size: bytes },
          v: { buffer: this.#poolV!, offset: 0, size: bytes },
          n: len,
        });
        if (master) {
          // The updated master page, rounded, into the GPU's bf16 compute copy.
          await encodePackBf16(this.ctx, batch, { src: master, dst: params, n: len, first: start });
        }
        const readback = this.#readback[r];
        batch.copy(this.#poolM!, 0, readback, 0, bytes);
        batch.copy(this.#poolV!, 0, readback, G * 4, bytes);
        if (master) batch.copy(this.#poolP!, 0, readback, 2 * G * 4, bytes);
        batch.submit();
        moved += arrays * bytes;
        const raw = readback.buffer;
        const mapped = (arrays - 1) * G * 4 + bytes;
        inFlight[r] = this.ctx.wait(raw.mapAsync(MAP_READ, 0, mapped), "optimizer page")
          .then(() => {
            const got = raw.getMappedRange(0, mapped);
            this.#hostM!.set(new Float32Array(got, 0, len), start);
            this.#hostV!.set(new Float32Array(got, G * 4, len), start);
            if (master) this.#hostP!.set(new Float32Array(got, 2 * G * 4, len), start);
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

  /** bf16 storage: a copy of the f32 master parameters (checkpoints, adapters, export). */
  master(): Float32Array {
    if (!this.#hostP) throw new Error("the f32 master lives with the optimizer only in bf16 mode");
    return this.#hostP.slice();
  }

  /** bf16 storage: replaces the f32 master (the caller re-packs the GPU's bf16 copy). */
  setMaster(flat: Float32Array): void {
    if (!this.#hostP) throw new Error("the f32 master lives with the optimizer only in bf16 mode");
    if (flat.length !== this.n) {
      throw invalidArgument(`adapter has ${flat.length} values, expected ${this.n}`);
    }
    this.#hostP.set(flat);
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
    const arrays = pagedArrays(this.bf16Master);
    return this.paged ? arrays * POOL_SLOTS * this.pageFloats * 4 : 2 * this.n * 4;
  }

  destroy(): void {
    for (const b of [this.#m, this.#v, this.#poolM, this.#poolV, this.#poolP]) b?.destroy();
    for (const b of this.#readback) b.buffer.destroy();
    this.#readback = [];
  }
}

/**
 * Floats per pool page for a GPU budget shared by `arrays` paged arrays (m and v; bf16 storage
 * adds the master), POOL_SLOTS pages each, 64-float aligned, at least 64 (src/train/estimate.ts
 * sizes the pool with it).
 */
export function optimizerPageFloats(gpuBudgetBytes: number, arrays: number): number {
  const perPage = Math.floor(gpuBudgetBytes / (arrays * POOL_SLOTS * 4));
  return Math.max(SLOT_ALIGN_FLOATS, Math.floor(perPage / SLOT_ALIGN_FLOATS) * SLOT_ALIGN_FLOATS);
}

/** Pages in the GPU pool per paged array. */
export const OPTIMIZER_POOL_SLOTS = POOL_SLOTS;

/**
 * bf16 LoRA storage keeps the f32 master with the paged optimizer: a SettingError on the budget
 * unless it is > 0 and under the master and moments' bytes, i.e. the state pages. `name` gives
 * the user's names for the two settings (flags, request fields); the snake_case keys by default.
 */
export function checkBf16MasterBudget(
  n: number,
  gpuBudgetBytes: number,
  name: SettingNames<"loraDtype" | "optimizerGpuBudgetBytes"> = (k) => HYPERPARAMETER_FIELDS[k],
): void {
  const stateBytes = BF16_PAGED_ARRAYS * n * 4;
  if (gpuBudgetBytes > 0 && gpuBudgetBytes < stateBytes) return;
  const budget = name("optimizerGpuBudgetBytes");
  throw new SettingError(
    budget,
    `${budget}: ${name("loraDtype")} bf16 keeps the f32 master parameters with the paged ` +
      `optimizer: ${budget} must be > 0 and under the master and AdamW moments' ` +
      `${stateBytes} bytes (got ${gpuBudgetBytes})`,
  );
}

/** Arrays the paged optimizer streams: m and v, plus the f32 master with bf16 LoRA storage. */
export function pagedArrays(bf16Master: boolean): number {
  return bf16Master ? BF16_PAGED_ARRAYS : 2;
}
