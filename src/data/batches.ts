/**
 * The order of training: examples grouped into rows (one example a row, or several packed into
 * one row with positions restarting at 0 and a segment id per example so they do not attend to
 * each other), rows shuffled per epoch by a permutation fixed by (seed, epoch), cut into
 * micro-batches and optimizer steps of gradientAccumulationSteps micro-batches. Steps never span
 * two epochs; an epoch's last step may hold fewer rows. A cursor {epoch, index} (index: rows of
 * that epoch already consumed) resumes the plan exactly.
 */
import type { MicroBatch } from "../model/graph.ts";
import { invalidArgument } from "../util/errors.ts";
import { Rng } from "../util/random.ts";
import type { Example } from "./dataset.ts";

export interface BatchPlanOptions {
  /** Rows per micro-batch. */
  microBatchSize: number;
  /** Micro-batches per optimizer step. */
  gradientAccumulationSteps: number;
  /** Passes over the data (default 1); ignored when maxSteps is set. */
  epochs?: number;
  /** Steps to run, going round the data as often as needed; wins over epochs. */
  maxSteps?: number;
  seed: number;
  /** Shuffle rows each epoch (default true; false for evaluation). */
  shuffle?: boolean;
  packing?: boolean;
  /** Row capacity when packing (default: the longest example). */
  maxSeqLen?: number;
}

export interface Cursor {
  epoch: number;
  /** Rows of this epoch's order already consumed; a multiple of the rows per step. */
  index: number;
}

export interface PlannedStep {
  /** 0-based optimizer step. */
  step: number;
  epoch: number;
  microBatches: MicroBatch[];
  /** Trained positions over all micro-batches: the loss and gradient divide by this. */
  labelTokens: number;
  /** Positions (without padding) over all micro-batches. */
  inputTokens: number;
  /** Where to resume after this step. */
  next: Cursor;
}

function positiveInt(v: number | undefined, name: string): number {
  if (v === undefined || !Number.isInteger(v) || v < 1) {
    throw invalidArgument(`${name}: must be a positive integer, got ${v}`);
  }
  return v;
}

/** A stream per epoch: the seed and epoch mixed (murmur3 finalizer) into an Rng seed. */
function epochSeed(seed: number, epoch: number): number {
  let h = (seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Fisher–Yates permutation of 0..n-1. */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = new Rng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/**
 * Best-fit decreasing: examples by decreasing length (ties by index), each into the row whose
 * free space fits it most tightly, else a new row. Rows are in creation order; deterministic.
 * A segment tree over free capacities finds the tightest row in O(log capacity).
 */
export function packRows(lengths: ArrayLike<number>, capacity: number): number[][] {
  const order = Array.from({ length: lengths.length }, (_, i) => i)
    .sort((a, b) => lengths[b] - lengths[a] || a - b);
  let size = 1;
  while (size < capacity + 1) size *= 2;
  const count = new Int32Array(2 * size); // rows with each free capacity, summed over subtrees
  const byFree: number[][] = Array.from({ length: capacity + 1 }, () => []);
  const update = (free: number, delta: number) => {
    for (let i = free + size; i >= 1; i >>= 1) count[i] += delta;
  };
  /** Smallest free capacity >= need held by some row, or -1. */
  const tightest = (need: number): number => {
    const go = (node: number, lo: number, hi: number): number => {
      if (hi < need || count[node] === 0) return -1;
      if (lo === hi) return lo;
      const mid = (lo + hi) >> 1;
      const left = go(2 * node, lo, mid);
      return left >= 0 ? left : go(2 * node + 1, mid + 1, hi);
    };
    return go(1, 0, size - 1);
  };
  const rows: number[][] = [];
  const freeOf: number[] = [];
  for (const i of order) {
    const len = lengths[i];
    if (len > capacity) {
      throw invalidArgument(`packing: an example of ${len} tokens exceeds max_seq_len ${capacity}`);
    }
    const free = tightest(len);
    let r: number;
    if (free < 0) {
      r = rows.length;
      rows.push([]);
      freeOf.push(capacity);
    } else {
      r = byFree[free].pop()!;
      update(free, -1);
    }
    rows[r].push(i);
    freeOf[r] -= len;
    byFree[freeOf[r]].push(r);
    update(freeOf[r], 1);
  }
  return rows;
}

export class BatchPlan {
  /** Example indices of each row (one each without packing). */
  readonly rows: number[][];
  readonly rowsPerStep: number;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  readonly options: Readonly<Required<Omit<BatchPlanOptions, "maxSteps" | "maxSeqLen">>> & {
    maxSteps?: number;
    maxSeqLen: number;
  };
  readonly #examples: readonly Example[];
  #order?: { epoch: number; perm: Uint32Array };

  constructor(examples: readonly Example[], options: BatchPlanOptions) {
    if (examples.length === 0) throw invalidArgument("no examples to train on");
    const microBatchSize = positiveInt(options.microBatchSize, "micro_batch_size");
    const gradientAccumulationSteps = positiveInt(
      options.gradientAccumulationSteps,
      "gradient_accumulation_steps",
    );
    const epochs = positiveInt(options.epochs ?? 1, "epochs");
    const maxSteps = options.maxSteps === undefined
      ? undefined
      : positiveInt(options.maxSteps, "max_steps");
    if (!Number.isInteger(options.seed)) {
      throw invalidArgument(`seed: must be an integer, got ${options.seed}`);
    }
    const longest = examples.reduce((m, e) => Math.max(m, e.tokens.length), 0);
    const maxSeqLen = options.maxSeqLen === undefined
      ? longest
      : positiveInt(options.maxSeqLen, "max_seq_len");
    const packing = options.packing ?? false;
    this.options = {
      microBatchSize,
      gradientAccumulationSteps,
      epochs,
      maxSteps,
      seed: options.seed,
      shuffle: options.shuffle ?? true,
      packing,
      maxSeqLen,
    };
    this.#examples = examples;
    this.rows = packing
      ? packRows(examples.map((e) => e.tokens.length), maxSeqLen)
      : examples.map((_, i) => [i]);
    this.rowsPerStep = microBatchSize * gradientAccumulationSteps;
    this.stepsPerEpoch = Math.ceil(this.rows.length / this.rowsPerStep);
    this.totalSteps = maxSteps ?? epochs * this.stepsPerEpoch;
  }

  /** Epoch of a 0-based step. */
  epochOf(step: number): number {
    return Math.floor(step / this.stepsPerEpoch);
  }

  /** Cursor before a 0-based step. */
  cursorAt(step: number): Cursor {
    const epoch = this.epochOf(step);
    return { epoch, index: (step - epoch * this.stepsPerEpoch) * this.rowsPerStep };
  }

  /** Order of the rows in an epoch. */
  order(epoch: number): Uint32Array {
    if (this.#order?.epoch !== epoch) {
      const n = this.rows.length;
      const perm = this.options.shuffle
        ? permutation(n, epochSeed(this.options.seed, epoch))
        : Uint32Array.from({ length: n }, (_, i) => i);
      this.#order = { epoch, perm };
    }
    return this.#order.perm;
  }

  /** One row as a sequence: packed examples concatenated, positions and segments per example. */
  row(r: number): {
    tokens: Uint32Array;
    labels: Int32Array;
    positions?: Uint32Array;
    segments?: Uint32Array;
  } {
    const members = this.rows[r];
    if (!this.options.packing) {
      const e = this.#examples[members[0]];
      return { tokens: e.tokens, labels: e.labels };
    }
    const len = members.reduce((s, i) => s + this.#examples[i].tokens.length, 0);
    const tokens = new Uint32Array(len);
    const labels = new Int32Array(len);
    const positions = new Uint32Array(len);
    const segments = new Uint32Array(len);
    let at = 0;
    members.forEach((i, seg) => {
      const e = this.#examples[i];
      tokens.set(e.tokens, at);
      labels.set(e.labels, at);
      for (let t = 0; t < e.tokens.length; t++) positions[at + t] = t;
      segments.fill(seg, at, at + e.tokens.length);
      at += e.tokens.length;
    });
    return { tokens, labels, positions, segments };
  }

  /** Steps from a cursor (default: the start) to the end of the plan. */
  *stepsFrom(cursor: Cursor = { epoch: 0, index: 0 }): Generator<PlannedStep> {
    let { epoch, index } = cursor;
    const n = this.rows.length;
    if (
      !Number.isInteger(epoch) || epoch < 0 || !Number.isInteger(index) || index < 0 || index > n
    ) {
      throw invalidArgument(`cursor {epoch ${epoch}, index ${index}} is outside the plan`);
    }
    if (index % this.rowsPerStep !== 0 && index !== n) {
      throw invalidArgument(
        `cursor index ${index} is not at a step boundary (${this.rowsPerStep} rows a step)`,
      );
    }
    if (index === n) {
      epoch++;
      index = 0;
    }
    const { microBatchSize } = this.options;
    const first = epoch * this.stepsPerEpoch + index / this.rowsPerStep;
    for (let step = first; step < this.totalSteps; step++) {
      const order = this.order(epoch);
      const end = Math.min(n, index + this.rowsPerStep);
      const microBatches: MicroBatch[] = [];
      let labelTokens = 0;
      let inputTokens = 0;
      for (let m = index; m < end; m += microBatchSize) {
        const mb: Required<MicroBatch> = { tokens: [], labels: [], positions: [], segments: [] };
        for (let k = m; k < Math.min(end, m + microBatchSize); k++) {
          const row = this.row(order[k]);
          mb.tokens.push(row.tokens);
          mb.labels.push(row.labels);
          if (row.positions && row.segments) {
            mb.positions.push(row.positions);
            mb.segments.push(row.segments);
          }
          inputTokens += row.tokens.length;
          for (const l of this.rows[order[k]]) labelTokens += this.#examples[l].labelTokens;
        }
        microBatches.push(
          this.options.packing ? mb : { tokens: mb.tokens, labels: mb.labels },
        );
      }
      const next = end === n ? { epoch: epoch + 1, index: 0 } : { epoch, index: end };
      yield { step, epoch, microBatches, labelTokens, inputTokens, next };
      ({ epoch, index } = next);
    }
  }
}
