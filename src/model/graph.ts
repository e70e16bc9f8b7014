/**
 * Forward and backward of the whole model for one micro-batch: embedding, the decoder layers
 * (optionally recomputed in backward: gradient checkpointing), the final norm, and the frozen
 * lm_head with cross-entropy chunked over tokens and vocabulary. LoRA gradients accumulate into a
 * flat buffer.
 *
 * With checkpointing, each layer's input is what backward recomputes the layer from. Kept in f16
 * (`activationPrecision`), the residual stream itself still runs in f32 through two working
 * buffers, so the forward (and the loss) is bit for bit the f32 one; only the recomputed layer
 * starts from its input rounded to f16 (relative error <= 2^-11), converted back to f32.
 */
import { type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
import type { BaseModel } from "./base_model.ts";
import type { LoraLayout } from "./lora.ts";
import { F32LoraParams, type LoraParams } from "./lora_params.ts";
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
import { encodeFromF16, encodeToF16, halfBufferBytes } from "../kernels/convert_f16.ts";
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

/** Precision of the layer inputs kept for backward: "auto" is f16 where the adapter has shader-f16. */
export type ActivationPrecision = "auto" | "f32" | "f16";

/**
 * The precision the layer-input checkpoints get. "auto": f16 when the adapter has shader-f16
 * (every GPU qlorad targets), f32 otherwise, so the f16-less CI adapter keeps the exact f32 path.
 * An explicit "f16" is honoured on any adapter (the conversion kernel is integer arithmetic).
 * Without checkpointing the inputs always stay f32: every layer then keeps its whole f32
 * activation set from the forward, and the input is read only by the input RMSNorm's backward
 * beside the 1/rms of the unrounded input, so rounding it would make that gradient inconsistent
 * to save ~3% of that mode's activation bytes.
 */
export function resolveActivationPrecision(
  requested: ActivationPrecision | undefined,
  f16Capable: boolean,
  gradientCheckpointing: boolean,
): "f32" | "f16" {
  const want = requested ?? "auto";
  if (want !== "auto" && want !== "f32" && want !== "f16") {
    throw invalidArgument(`activation precision must be auto, f32 or f16, got ${want}`);
  }
  if (!gradientCheckpointing) return "f32";
  return want === "auto" ? (f16Capable ? "f16" : "f32") : want;
}

export interface GraphOptions {
  /** Largest micro-batch: sequences per micro-batch and tokens per sequence. */
  maxShape: Shape;
  gradientCheckpointing: boolean;
  /** The layer-input checkpoints' precision (default "auto"; see resolveActivationPrecision). */
  activationPrecision?: ActivationPrecision;
  /** Vocabulary columns per cross-entropy pass (default 2048). */
  vocabChunk?: number;
  /** Token rows per cross-entropy pass (default 1024). */
  rowChunk?: number;
  /** Token rows per MLP chunk, a multiple of 64 (default MLP_CHUNK_ROWS, activations.ts). */
  mlpChunkRows?: number;
}

const PAD_SEGMENT = 0xffffffff;

export class ModelGraph {
  /** "f16": the layer inputs are kept as halves for the backward recompute. */
  readonly checkpointPrecision: "f32" | "f16";
  /** f32 checkpoints: each layer's input, and the last layer's output [rows, hidden]. */
  readonly inputs: GpuBuffer[] = [];
  /**
   * f16 checkpoints: each layer's input as packed halves, and one f32 working buffer of the
   * residual stream, which alternates with `finalNormed` (unused until the final norm) through
   * the forward, holds the last layer's output, and in backward the layer being recomputed.
   */
  readonly checkpoints: GpuBuffer[] = [];
  readonly residual: GpuBuffer | undefined;
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
    this.checkpointPrecision = resolveActivationPrecision(
      options.activationPrecision,
      ctx.capabilities.f16,
      options.gradientCheckpointing,
    );
    if (this.checkpointPrecision === "f16") {
      this.residual = f("residual_stream", rows * cfg.hidden, "activations");
      for (let l = 0; l < cfg.layers; l++) {
        this.checkpoints.push(
          f(`layer_in_${l}_f16`, halfBufferBytes(rows * cfg.hidden) / 4, "activations"),
        );
      }
    } else {
      for (let l = 0; l <= cfg.layers; l++) {
        this.inputs.push(f(`layer_in_${l}`, rows * cfg.hidden, "activations"));
      }
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
   * The f32 buffer holding layer `l`'s input in forward (l = layers: the last output). f16
   * checkpoints: the residual buffer and finalNormed in turn, so the last output lands in the
   * residual buffer and finalNormed is free for the final norm.
   */
  #streamBuffer(l: number): GpuBuffer {
    if (this.checkpointPrecision === "f32") return this.inputs[l];
    return (this.model.cfg.layers - l) % 2 === 0 ? this.residual! : this.finalNormed;
  }

  /**
   * Encodes forward (+ backward when `train`) for the uploaded micro-batch. Row losses are added
   * into `lossAcc`; gradients of loss·gradScale accumulate into `grads`. With `batch` the
   * dispatches go into it and the caller submits (a training step is one submit); without, into
   * a batch of its own, submitted here.
   */
  async encode(opts: {
    shape: Shape;
    /** The flat f32 adapter, or the engine's LoRA storage (src/model/lora_params.ts). */
    params: GpuBuffer | LoraParams;
    grads: GpuBuffer;
    train: boolean;
    gradScale: number;
    seed: number;
    streamBase: number;
    batch?: DispatchBatch;
  }): Promise<void> {
    const { ctx, model } = this;
    const cfg = model.cfg;
    const batch = opts.batch ?? ctx.batch("micro-batch");
    const rows = opts.shape.batch * opts.shape.seq;
    const params = opts.params instanceof GpuBuffer ? new F32LoraParams(opts.params) : opts.params;
    const pass: MicroBatchPass = {
      ctx,
      batch,
      model,
      lora: this.lora,
      params,
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
    const n = rows * cfg.hidden;
    // Halves are only needed when backward recomputes from them.
    const keepHalves = opts.train && this.checkpointPrecision === "f16";
    await encodeEmbedding(ctx, batch, {
      table: model.embed,
      tokens: this.tokens,
      out: this.#streamBuffer(0),
      rows,
      dim: cfg.hidden,
    });
    for (let l = 0; l < cfg.layers; l++) {
      const x = this.#streamBuffer(l);
      if (keepHalves) await encodeToF16(ctx, batch, { src: x, dst: this.checkpoints[l], n });
      await params.encodeLayer(batch, l); // bf16 storage: this layer's LoRA into the window
      await encodeLayerForward(
        pass,
        l,
        this.#actsFor(l),
        this.scratch,
        x,
        this.#streamBuffer(l + 1),
      );
    }
    await encodeRmsNorm(ctx, batch, {
      x: this.#streamBuffer(cfg.layers),
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
        x: this.#streamBuffer(cfg.layers),
        weight: model.finalNorm,
        rstd: this.finalRstd,
        dy: this.scratch.dn,
        dx: g,
        rows,
        dim: cfg.hidden,
      });
      for (let l = cfg.layers - 1; l >= 0; l--) {
        const acts = this.#actsFor(l);
        const x = this.checkpointPrecision === "f32" ? this.inputs[l] : this.residual!;
        if (this.checkpointPrecision === "f16") {
          // The last output in the residual buffer was read by the final norm's backward above;
          // from here on it holds the input of the layer being recomputed.
          await encodeFromF16(ctx, batch, { src: this.checkpoints[l], dst: x, n });
        }
        // bf16 storage: the window holds the layer run last; expand this one for its recompute
        // and backward (both read it, nothing in between touches the window).
        await params.encodeLayer(batch, l);
        if (this.options.gradientCheckpointing) {
          // Recompute this layer's activations from its saved input.
          await encodeLayerRecompute(pass, l, acts, this.scratch, x);
        }
        await encodeLayerBackward(pass, l, acts, this.scratch, x);
      }
    }
    if (!opts.batch) batch.submit();
  }

  destroy(): void {
    for (const b of this.#owned) b.destroy();
    for (const a of this.acts) a.destroy();
    this.scratch.destroy();
  }
}
