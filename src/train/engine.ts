/**
 * The training engine the service drives: LoRA parameters, gradients and AdamW state on top
 * of a frozen 4-bit base model. A step runs every micro-batch of a gradient-accumulation
 * step (loss normalized by the label tokens of the whole step), clips by global norm on the
 * GPU, and updates; one small readback per step brings the loss and gradient norm home.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { BaseModel } from "../model/base_model.ts";
import { LoraLayout, type LoraSpec } from "../model/lora.ts";
import { type ActivationPrecision, type MicroBatch, ModelGraph } from "../model/graph.ts";
import type { Shape } from "../model/activations.ts";
import { ADAMW_DEFAULTS, type AdamWHyper, AdamWOptimizer } from "./paged_adamw.ts";
import { encodeFill } from "../kernels/fill.ts";
import { encodeGlobalNorm, globalNormScratchBytes } from "../kernels/grad_norm.ts";
import type { MemoryBytes } from "../gpu/memory.ts";
import { invalidArgument } from "../util/errors.ts";

export interface EngineOptions {
  lora: LoraSpec;
  maxShape: Shape;
  gradientCheckpointing: boolean;
  /**
   * The layer-input checkpoints' precision under gradient checkpointing: default "auto", f16
   * where the adapter has shader-f16 (src/model/graph.ts's resolveActivationPrecision).
   */
  activationPrecision?: ActivationPrecision;
  seed: number;
  adamw?: Partial<AdamWHyper>;
  /** 0 disables clipping. */
  maxGradNorm: number;
  /** 0 = keep optimizer state resident on the GPU. */
  optimizerGpuBudgetBytes: number;
  vocabChunk?: number;
  /** Token rows per MLP chunk (GraphOptions.mlpChunkRows). */
  mlpChunkRows?: number;
  /** Initial adapter (flat layout); default PEFT init from `seed`. */
  adapter?: Float32Array;
  /** Evaluation and generation only: no gradients' optimizer state is allocated. */
  evalOnly?: boolean;
}

export interface StepResult {
  loss: number;
  gradNorm: number;
  /** Tokens with a label (the loss denominator). */
  labelTokens: number;
  /** All non-padding tokens processed. */
  inputTokens: number;
  pagedInBytes: number;
  pagedOutBytes: number;
}

export interface EvalResult {
  lossSum: number;
  correct: number;
  tokens: number;
}

export class TrainingEngine {
  readonly layout: LoraLayout;
  readonly graph: ModelGraph;
  readonly #optimizer: AdamWOptimizer | undefined;
  readonly params: GpuBuffer;
  readonly grads: GpuBuffer;
  readonly #norm: GpuBuffer;
  readonly #clipScale: GpuBuffer;
  readonly #normScratch: GpuBuffer;

  constructor(
    readonly ctx: GpuContext,
    readonly model: BaseModel,
    readonly options: EngineOptions,
  ) {
    this.layout = new LoraLayout(model.cfg, options.lora);
    const n = this.layout.totalFloats;
    const init = options.adapter ?? this.layout.initPeft(options.seed);
    if (init.length !== n) {
      throw invalidArgument(`adapter has ${init.length} values, expected ${n}`);
    }
    this.params = ctx.upload("lora_params", "lora", init);
    this.grads = ctx.createBuffer({ label: "lora_grads", category: "gradients", size: n * 4 });
    this.#norm = ctx.createBuffer({ label: "grad_norm", category: "scratch", size: 8 });
    this.#clipScale = ctx.createBuffer({ label: "clip_scale", category: "scratch", size: 4 });
    this.#normScratch = ctx.createBuffer({
      label: "grad_norm_scratch",
      category: "scratch",
      size: globalNormScratchBytes([n]),
    });
    this.graph = new ModelGraph(ctx, model, this.layout, {
      maxShape: options.maxShape,
      gradientCheckpointing: options.gradientCheckpointing,
      activationPrecision: options.activationPrecision ?? "auto",
      vocabChunk: options.vocabChunk,
      mlpChunkRows: options.mlpChunkRows,
    });
    this.#optimizer = options.evalOnly ? undefined : new AdamWOptimizer(
      ctx,
      n,
      { ...ADAMW_DEFAULTS, ...options.adamw },
      options.optimizerGpuBudgetBytes,
    );
  }

  get optimizer(): AdamWOptimizer {
    if (!this.#optimizer) throw new Error("engine was created evalOnly: no optimizer");
    return this.#optimizer;
  }

  /** Optimizer steps taken so far. */
  get step(): number {
    return this.#optimizer?.step ?? 0;
  }

  /** Runs forward and backward over the micro-batches; gradients are left in `grads`. */
  async accumulateGradients(micro: MicroBatch[]): Promise<{
    loss: number;
    labelTokens: number;
    inputTokens: number;
  }> {
    if (micro.length === 0) throw invalidArgument("a step needs at least one micro-batch");
    const labelTokens = micro.reduce((s, mb) => s + countLabels(mb), 0);
    const inputTokens = micro.reduce((s, mb) => s + mb.tokens.reduce((a, t) => a + t.length, 0), 0);
    const start = this.ctx.batch("zero-grads");
    await encodeFill(this.ctx, start, this.grads, 0);
    await encodeFill(this.ctx, start, this.graph.lossAcc, 0);
    start.submit();
    const gradScale = labelTokens > 0 ? 1 / labelTokens : 0;
    for (let i = 0; i < micro.length; i++) {
      const { shape } = this.graph.upload(micro[i]);
      await this.graph.encode({
        shape,
        params: this.params,
        grads: this.grads,
        train: true,
        gradScale,
        seed: this.options.seed,
        streamBase: ((this.step * 257 + i) * 1024) >>> 0,
      });
    }
    const rows = await this.ctx.readF32(this.graph.lossAcc);
    let sum = 0;
    for (const v of rows) sum += v;
    return { loss: labelTokens > 0 ? sum / labelTokens : 0, labelTokens, inputTokens };
  }

  /** One optimizer step over a gradient-accumulation step's micro-batches. */
  async trainStep(micro: MicroBatch[], lr: number): Promise<StepResult> {
    if (!(lr >= 0)) throw invalidArgument(`learning rate ${lr} must be >= 0`);
    const { loss, labelTokens, inputTokens } = await this.accumulateGradients(micro);
    const batch = this.ctx.batch("clip");
    await encodeGlobalNorm(this.ctx, batch, {
      tensors: [{ buffer: this.grads, n: this.layout.totalFloats }],
      out: this.#norm,
      maxNorm: this.options.maxGradNorm,
      scratch: this.#normScratch,
    });
    batch.copy(this.#norm, 4, this.#clipScale, 0, 4);
    batch.submit();
    const paging = await this.optimizer.apply(this.params, this.grads, this.#clipScale, lr);
    const [gradNorm] = await this.ctx.readF32(this.#norm, 0, 1);
    return { loss, gradNorm, labelTokens, inputTokens, ...paging };
  }

  /** Loss sum, correct argmax count and label tokens of one micro-batch, no gradients. */
  async evaluate(mb: MicroBatch): Promise<EvalResult> {
    const { shape, labelTokens } = this.graph.upload(mb);
    const fill = this.ctx.batch("zero-loss");
    await encodeFill(this.ctx, fill, this.graph.lossAcc, 0);
    fill.submit();
    await this.graph.encode({
      shape,
      params: this.params,
      grads: this.grads,
      train: false,
      gradScale: 0,
      seed: this.options.seed,
      streamBase: 0,
    });
    const rows = shape.batch * shape.seq;
    const loss = await this.ctx.readF32(this.graph.rowLoss, 0, rows);
    const correct = await this.ctx.readU32(this.graph.rowCorrect, 0, rows);
    let lossSum = 0;
    let right = 0;
    for (let i = 0; i < rows; i++) {
      lossSum += loss[i];
      right += correct[i];
    }
    return { lossSum, correct: right, tokens: labelTokens };
  }

  async readAdapter(): Promise<Float32Array> {
    return await this.ctx.readF32(this.params, 0, this.layout.totalFloats);
  }

  writeAdapter(flat: Float32Array): void {
    if (flat.length !== this.layout.totalFloats) {
      throw invalidArgument(
        `adapter has ${flat.length} values, expected ${this.layout.totalFloats}`,
      );
    }
    this.ctx.write(this.params, flat);
  }

  async readGradients(): Promise<Float32Array> {
    return await this.ctx.readF32(this.grads, 0, this.layout.totalFloats);
  }

  memory(): MemoryBytes {
    return this.ctx.memory.current();
  }

  destroy(): void {
    this.graph.destroy();
    this.#optimizer?.destroy();
    for (const b of [this.params, this.grads, this.#norm, this.#clipScale, this.#normScratch]) {
      b.destroy();
    }
  }
}

function countLabels(mb: MicroBatch): number {
  let n = 0;
  for (const l of mb.labels) for (let i = 0; i < l.length; i++) if (l[i] !== -100) n++;
  return n;
}
