/**
 * GPU time per kernel family (a DispatchBatch's label: "micro-batch", "adamw", "clip", ...).
 *
 * With the "timestamp-query" feature on the device, each compute pass of a timed batch writes
 * begin/end timestamps; they are resolved into a buffer in the same command buffer and read
 * back after the submit, and the batch's time is the sum over its passes. Without it (llvmpipe,
 * Deno's wgpu) a batch's time is submit-to-done wall time from `queue.onSubmittedWorkDone()`,
 * counted from when the queue got to it: max(its submit, the previous timed batch's done).
 *
 * Nothing here runs unless a timer is attached to the GPU context (a job does that only while
 * tracing or metrics are on), so untimed batches cost one property read.
 *
 * The hook, as GpuContext / DispatchBatch call it:
 *   const t = ctx.timing?.begin(label);                 // new DispatchBatch
 *   encoder.beginComputePass({ timestampWrites: t?.passWrites() });   // each pass
 *   t?.beforeFinish(encoder); queue.submit([encoder.finish()]); t?.submitted();  // submit()
 */

/** What a GPU context calls for each batch when a timer is attached. */
export interface GpuTimingHook {
  /** A timing for one batch, or undefined to leave it untimed. */
  begin(label: string): BatchTiming | undefined;
}

/** One batch's timing, called by the batch in this order. */
export interface BatchTiming {
  /** For each compute pass: timestamp writes (timestamp-query), else undefined. */
  passWrites(): GPUComputePassTimestampWrites | undefined;
  /** After the last pass, before `encoder.finish()`: resolves the pass timestamps. */
  beforeFinish(encoder: GPUCommandEncoder): void;
  /** Right after `queue.submit`. */
  submitted(): void;
}

export type TimingMethod = "timestamp" | "wall";

/** GPU time of one kernel family since the last `take()`. */
export interface KernelTime {
  family: string;
  seconds: number;
  batches: number;
  method: TimingMethod;
}

export interface GpuTimerOptions {
  /** Each measured batch, as it resolves (metrics). */
  onSample?: (family: string, seconds: number, method: TimingMethod) => void;
  /** Default: whether the device has "timestamp-query". */
  timestamps?: boolean;
}

/** Compute passes timed per batch; DispatchBatch starts a new pass after each copy. */
export const MAX_TIMED_PASSES = 64;

const QUERY_RESOLVE = 0x200; // GPUBufferUsage
const COPY_SRC = 0x04;
const COPY_DST = 0x08;
const MAP_READ = 0x01;

interface QuerySlot {
  querySet: GPUQuerySet;
  resolve: GPUBuffer;
  readback: GPUBuffer;
}

export class GpuTimer implements GpuTimingHook {
  readonly method: TimingMethod;
  #device: GPUDevice;
  #onSample?: GpuTimerOptions["onSample"];
  #totals = new Map<string, KernelTime>();
  #pending = new Set<Promise<void>>();
  #lastDone = 0;
  #free: QuerySlot[] = [];
  #all: QuerySlot[] = [];
  #destroyed = false;

  constructor(device: GPUDevice, opts: GpuTimerOptions = {}) {
    this.#device = device;
    this.#onSample = opts.onSample;
    const has = device.features?.has("timestamp-query");
    this.method = (opts.timestamps ?? Boolean(has)) ? "timestamp" : "wall";
  }

  begin(label: string): BatchTiming | undefined {
    if (this.#destroyed) return undefined;
    return this.method === "timestamp" ? this.#timestampBatch(label) : this.#wallBatch(label);
  }

  /** Per-family totals since the last call (then reset). */
  take(): KernelTime[] {
    const out = [...this.#totals.values()];
    this.#totals.clear();
    return out;
  }

  /** Waits until every submitted batch's time is in. */
  async settle(): Promise<void> {
    while (this.#pending.size) await Promise.all([...this.#pending]);
  }

  /** Stops timing; frees the query sets once pending reads are in. */
  async destroy(): Promise<void> {
    this.#destroyed = true;
    await this.settle();
    for (const s of this.#all) {
      s.querySet.destroy();
      s.resolve.destroy();
      s.readback.destroy();
    }
    this.#all = [];
    this.#free = [];
  }

  #add(family: string, seconds: number): void {
    const t = this.#totals.get(family) ??
      { family, seconds: 0, batches: 0, method: this.method };
    t.seconds += seconds;
    t.batches++;
    this.#totals.set(family, t);
    this.#onSample?.(family, seconds, this.method);
  }

  #track(p: Promise<void>): void {
    const tracked = p.catch(() => {}).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  #wallBatch(label: string): BatchTiming {
    return {
      passWrites: () => undefined,
      beforeFinish: () => {},
      submitted: () => {
        const submitted = performance.now();
        this.#track(
          this.#device.queue.onSubmittedWorkDone().then(() => {
            const done = performance.now();
            // The queue is in order: this batch started when it was submitted or when the
            // batch before it finished, whichever is later.
            const began = Math.max(submitted, this.#lastDone);
            this.#lastDone = done;
            this.#add(label, (done - began) / 1000);
          }),
        );
      },
    };
  }

  #slot(): QuerySlot {
    const free = this.#free.pop();
    if (free) return free;
    const bytes = MAX_TIMED_PASSES * 2 * 8;
    const slot = {
      querySet: this.#device.createQuerySet({ type: "timestamp", count: MAX_TIMED_PASSES * 2 }),
      resolve: this.#device.createBuffer({
        label: "gpu-timing-resolve",
        size: bytes,
        usage: QUERY_RESOLVE | COPY_SRC,
      }),
      readback: this.#device.createBuffer({
        label: "gpu-timing-readback",
        size: bytes,
        usage: MAP_READ | COPY_DST,
      }),
    };
    this.#all.push(slot);
    return slot;
  }

  #timestampBatch(label: string): BatchTiming {
    const slot = this.#slot();
    let passes = 0;
    return {
      passWrites: () => {
        if (passes >= MAX_TIMED_PASSES) return undefined;
        const i = passes++;
        return {
          querySet: slot.querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        };
      },
      beforeFinish: (encoder) => {
        if (passes === 0) return;
        encoder.resolveQuerySet(slot.querySet, 0, 2 * passes, slot.resolve, 0);
        encoder.copyBufferToBuffer(slot.resolve, 0, slot.readback, 0, 16 * passes);
      },
      submitted: () => {
        if (passes === 0) {
          this.#free.push(slot);
          return;
        }
        const n = passes;
        this.#track(
          slot.readback.mapAsync(MAP_READ, 0, 16 * n).then(() => {
            const t = new BigUint64Array(slot.readback.getMappedRange(0, 16 * n));
            let ns = 0n;
            // A pass whose end reads before its begin (a reset counter) counts as zero.
            for (let i = 0; i < n; i++) if (t[2 * i + 1] > t[2 * i]) ns += t[2 * i + 1] - t[2 * i];
            slot.readback.unmap();
            this.#add(label, Number(ns) / 1e9);
          }).finally(() => {
            if (!this.#destroyed) this.#free.push(slot);
          }),
        );
      },
    };
  }
}

/** A GPU context as the timer sees it: its device, and the optional `timing` hook field. */
export interface TimedContext {
  readonly device: GPUDevice;
}

/**
 * Attaches a timer to a GPU context for the length of a job; `detach` removes it and waits for
 * the last measurements. A context without the `timing` hook simply never calls it.
 */
export function attachGpuTimer(
  ctx: TimedContext,
  opts: GpuTimerOptions = {},
): { timer: GpuTimer; detach(): Promise<void> } {
  const hooked = ctx as TimedContext & { timing?: GpuTimingHook };
  const timer = new GpuTimer(ctx.device, opts);
  hooked.timing = timer;
  return {
    timer,
    async detach() {
      if (hooked.timing === timer) hooked.timing = undefined;
      await timer.destroy();
    },
  };
}
