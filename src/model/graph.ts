/**
 * Forward and backward of the whole model for one micro-batch: embedding, the decoder layers
 * (optionally recomputed in backward: gradient checkpointing), the final norm, and the frozen
 * lm_head with cross-entropy chunked over tokens and vocabulary. LoRA gradients accumulate into a
 * flat buffer.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { BaseModel } from "./base_model.ts";
import type { LoraLayout } from "./lora.ts";
import { activationPlan, BackwardScratch, LayerActivations, type Shape } from "./activations.ts";
import {
  encodeLayerBackward,
  encodeLayerForward,
  encodeLayerRecompute,
  type MicroBatchPass,
} from "./layer.ts";
import { encodeEmbedding } from "../kernels/embedding.ts";
import { encodeRmsNorm, encodeRmsNormBackward } from "../kernels/rmsnorm.ts";
import {
  crossEntropyChunks,
  crossEntropyScratchBytes,
  encodeLmHeadCrossEntropy,
} from "../kernels/cross_entropy.ts";
import { encodeAdd } from "../kernels/elementwise.ts";
import { invalidArgument } from "../util/errors.ts";

export const IGNORE_INDEX = -100;

/** One micro-batch: sequences of token ids with their (already shifted) labels. */
export interface MicroBatch {
  tokens: ArrayLike<number>[];
  /** labels[s][t] is the target of position t; -100 masks it. */
  labels: ArrayLike<number>[];
  /** Position ids (default 0..T-1); packing resets them per sample. */
  positions?: ArrayLike<number>[];
  /** Attention segments (default all 0); packed samples do not attend across segments. */
  segments?: ArrayLike<number>[];
}

export interface GraphOptions {
  /** Largest micro-batch: sequences per micro-batch and tokens per sequence. */
  maxShape: Shape;
  gradientCheckpointing: boolean;
  /** Vocabulary columns per cross-entropy pass (default 2048). */
  vocabChunk?: number;
  /** Token rows per cross-entropy pass (default 1024). */
  rowChunk?: number;
  /** Token rows per MLP chunk, a multiple of 64 (default MLP_CHUNK_ROWS, activations.ts). */
  mlpChunkRows?: number;
}

const PAD_SEGMENT = 0xffffffff;

export class ModelGraph {
  readonly inputs: GpuBuffer[] = [];
  readonly acts: LayerActivations[] = [];
  readonly scratch: BackwardScratch;
  readonly tokens: GpuBuffer;
  readonly positions: GpuBuffer;
  readonly segments: GpuBuffer;
  readonly labels: GpuBuffer;
  readonly finalNormed: GpuBuffer;
  readonly finalRstd: GpuBuffer;
  /** Per-row loss (nats) and argmax correctness (u32) of the last micro-batch. */
  readonly rowLoss: GpuBuffer;
  readonly rowCorrect: GpuBuffer;
  /** Row losses summed over the micro-batches of a step (read back once per step). */
  readonly lossAcc: GpuBuffer;
  readonly ceScratch: GpuBuffer;
  readonly vocabChunk: number;
  readonly rowChunk: number;
  #owned: GpuBuffer[] = [];

  constructor(
    readonly ctx: GpuContext,
    readonly model: BaseModel,
    readonly lora: LoraLayout,
    readonly options: GraphOptions,
  ) {
    const cfg = model.cfg;
    const { batch, seq } = options.maxShape;
    const rows = batch * seq;
    const f = (label: string, floats: number, category: "activations" | "scratch") => {
      const b = ctx.createBuffer({ label, category, size: floats * 4 });
      this.#owned.push(b);
      return b;
    };
    for (let l = 0; l <= cfg.layers; l++) {
      this.inputs.push(f(`layer_in_${l}`, rows * cfg.hidden, "activations"));
    }
    const sets = options.gradientCheckpointing ? 1 : cfg.layers;
    const plan = activationPlan(cfg, options.maxShape, lora.spec, options);
    for (let i = 0; i < sets; i++) this.acts.push(new LayerActivations(ctx, plan));
    this.scratch = new BackwardScratch(ctx, plan);
    this.tokens = f("tokens", rows, "activations");
    this.positions = f("positions", rows, "activations");
    this.segments = f("segments", rows, "activations");
    this.labels = f("labels", rows, "activations");
    this.finalNormed = f("final_norm", rows * cfg.hidden, "activations");
    this.finalRstd = f("final_rstd", rows, "activations");
    this.rowLoss = f("row_loss", rows, "scratch");
    this.rowCorrect = f("row_correct", rows, "scratch");
    this.lossAcc = f("loss_acc", rows, "scratch");
    // The logits block [rowChunk, vocabChunk] is the cross-entropy's only per-token scratch; it
    // stays the same size however long the sequences (src/train/estimate.ts mirrors this).
    const ce = crossEntropyChunks(rows, cfg.vocab, {
      vocabChunk: options.vocabChunk,
      rowChunk: options.rowChunk,
      maxBindingBytes: ctx.maxBindingBytes,
    });
    this.vocabChunk = ce.vocabChunk;
    this.rowChunk = ce.rowChunk;
    this.ceScratch = f(
      "ce_scratch",
      Math.ceil(crossEntropyScratchBytes(ce.rowChunk, ce.vocabChunk) / 4),
      "scratch",
    );
  }

  /** Writes a micro-batch's inputs (padded to its longest sequence); returns its shape. */
  upload(mb: MicroBatch): { shape: Shape; labelTokens: number } {
    const b = mb.tokens.length;
    if (b === 0) throw invalidArgument("empty micro-batch");
    if (b > this.options.maxShape.batch) {
      throw invalidArgument(`micro-batch of ${b} sequences exceeds ${this.options.maxShape.batch}`);
    }
    const seq = Math.max(...mb.tokens.map((t) => t.length));
    if (seq > this.options.maxShape.seq || seq === 0) {
      throw invalidArgument(`sequence length ${seq} is outside 1..${this.options.maxShape.seq}`);
    }
    const rows = b * seq;
    const tokens = new Uint32Array(rows);
    const positions = new Uint32Array(rows);
    const segments = new Uint32Array(rows).fill(PAD_SEGMENT);
    const labels = new Int32Array(rows).fill(IGNORE_INDEX);
    let labelTokens = 0;
    const vocab = this.model.cfg.vocab;
    for (let s = 0; s < b; s++) {
      const t = mb.tokens[s];
      const l = mb.labels[s];
      if (l.length !== t.length) {
        throw invalidArgument(`sequence ${s}: ${t.length} tokens but ${l.length} labels`);
      }
      for (let i = 0; i < t.length; i++) {
        const row = s * seq + i;
        if (!(t[i] >= 0 && t[i] < vocab)) {
          throw invalidArgument(`sequence ${s} position ${i}: token id ${t[i]} outside vocabulary`);
        }
        tokens[row] = t[i];
        positions[row] = mb.positions?.[s][i] ?? i;
        segments[row] = mb.segments?.[s][i] ?? 0;
        const label = l[i];
        if (label !== IGNORE_INDEX && !(label >= 0 && label < vocab)) {
          throw invalidArgument(`sequence ${s} position ${i}: label ${label} outside vocabulary`);
        }
        labels[row] = label;
        if (label !== IGNORE_INDEX) labelTokens++;
      }
      for (let i = t.length; i < seq; i++) positions[s * seq + i] = i;
    }
    this.ctx.write(this.tokens, tokens);
    this.ctx.write(this.positions, positions);
    this.ctx.write(this.segments, segments);
    this.ctx.write(this.labels, labels);
    return { shape: { batch: b, seq }, labelTokens };
  }

  #actsFor(layer: number): LayerActivations {
    return this.options.gradientCheckpointing ? this.acts[0] : this.acts[layer];
  }

  /**
   * Encodes and submits forward (+ backward when `train`) for the uploaded micro-batch. Row
   * losses are added into `lossAcc`; gradients of loss·gradScale accumulate into `grads`.
   */
  async encode(opts: {
    shape: Shape;
    params: GpuBuffer;
    grads: GpuBuffer;
    train: boolean;
    gradScale: number;
    seed: number;
    streamBase: number;
  }): Promise<void> {
    const { ctx, model } = this;
    const cfg = model.cfg;
    const batch = ctx.batch("micro-batch");
    const rows = opts.shape.batch * opts.shape.seq;
    const pass: MicroBatchPass = {
      ctx,
      batch,
      model,
      lora: this.lora,
      params: opts.params,
      grads: opts.grads,
      batchSize: opts.shape.batch,
      seq: opts.shape.seq,
      positions: this.positions,
      segments: this.segments,
      // Dropout is a training-time regularizer: evaluation and generation run without it.
      dropout: opts.train ? this.lora.spec.dropout : 0,
      seed: opts.seed,
      streamBase: opts.streamBase,
    };
    await encodeEmbedding(ctx, batch, {
      table: model.embed,
      tokens: this.tokens,
      out: this.inputs[0],
      rows,
      dim: cfg.hidden,
    });
    for (let l = 0; l < cfg.layers; l++) {
      await encodeLayerForward(
        pass,
        l,
        this.#actsFor(l),
        this.scratch,
        this.inputs[l],
        this.inputs[l + 1],
      );
    }
    await encodeRmsNorm(ctx, batch, {
      x: this.inputs[cfg.layers],
      weight: model.finalNorm,
      y: this.finalNormed,
      rstd: this.finalRstd,
      rows,
      dim: cfg.hidden,
      eps: cfg.rmsEps,
    });
    await encodeLmHeadCrossEntropy(ctx, batch, {
      h: this.finalNormed,
      weight: model.lmHead,
      labels: this.labels,
      rows,
      hidden: cfg.hidden,
      chunk: this.vocabChunk,
      rowChunk: this.rowChunk,
      loss: this.rowLoss,
      correct: this.rowCorrect,
      dh: opts.train ? this.scratch.dn : undefined,
      gradScale: opts.gradScale,
      scratch: this.ceScratch,
    });
    await encodeAdd(ctx, batch, { x: this.rowLoss, y: this.lossAcc, n: rows });
    if (opts.train) {
      const g = this.scratch.gradX;
      await encodeRmsNormBackward(ctx, batch, {
        x: this.inputs[cfg.layers],
        weight: model.finalNorm,
        rstd: this.finalRstd,
        dy: this.scratch.dn,
        dx: g,
        rows,
        dim: cfg.hidden,
      });
      for (let l = cfg.layers - 1; l >= 0; l--) {
        const acts = this.#actsFor(l);
        if (this.options.gradientCheckpointing) {
          // Recompute this layer's activations from its saved input.
          await encodeLayerRecompute(pass, l, acts, this.scratch, this.inputs[l]);
        }
        await encodeLayerBackward(pass, l, acts, this.scratch, this.inputs[l]);
      }
    }
    batch.submit();
  }

  destroy(): void {
    for (const b of this.#owned) b.destroy();
    for (const a of this.acts) a.destroy();
    this.scratch.destroy();
  }
}
