/**
 * The training engine the service drives: LoRA parameters, gradients and AdamW state on top
 * of a frozen 4-bit base model. A step runs every micro-batch of a gradient-accumulation
 * step (loss normalized by the label tokens of the whole step), clips by global norm on the
 * GPU, and updates; one small readback per step brings the loss and gradient norm home.
 *
 * With the optimizer resident, a step of one micro-batch is one queue submit: zeroing, forward,
 * backward, clipping, AdamW and the copy of the loss rows and norm into a host-visible buffer
 * are recorded into one batch, and the host waits once, for that copy. Each further micro-batch
 * adds a submit (its inputs are written to the same buffers, which the queue orders between
 * submits); paged AdamW adds one per group of pages (src/train/paged_adamw.ts).
 *
 * LoRA storage (EngineOptions.loraStorage): "f32" keeps the parameters in one f32 GPU buffer the
 * optimizer updates in place; "bf16" keeps a bf16 compute copy on the GPU (src/model/lora_params.ts)
 * and the f32 master with the paged optimizer in host memory, which packs each updated page back
 * into the copy. Adapters read and written here are always the f32 values (the master).
 */
import { type DispatchBatch, GpuBuffer, type GpuContext } from "../gpu/context.ts";
import type { BaseModel } from "../model/base_model.ts";
import { LoraLayout, type LoraSpec } from "../model/lora.ts";
import {
  Bf16LoraParams,
  F32LoraParams,
  type LoraParams,
  type LoraStorage,
} from "../model/lora_params.ts";
import { type ActivationPrecision, type MicroBatch, ModelGraph } from "../model/graph.ts";
import type { Shape } from "../model/activations.ts";
import { ADAMW_DEFAULTS, type AdamWHyper, AdamWOptimizer } from "./paged_adamw.ts";
import { encodeFill } from "../kernels/fill.ts";
import { encodeGlobalNorm, globalNormScratchBytes } from "../kernels/grad_norm.ts";
import type { MemoryBytes } from "../gpu/memory.ts";
import { bf16ArrayToF32 } from "../io/dtype.ts";
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
  /**
   * The LoRA parameters on the GPU: "f32" (default), or a "bf16" compute copy with the f32 master
   * paged with the optimizer (needs optimizerGpuBudgetBytes > 0 and under the master and moments'
   * bytes). evalOnly engines always keep f32: they have no optimizer to hold a master.
   */
  loraStorage?: LoraStorage;
  /**
   * Submit at the step's old boundaries (zeroing, each micro-batch, clipping, AdamW) and read
   * the loss back before clipping: the path before one-submit steps, kept so that tests and the
   * benchmark compare the two on the same run. Same kernels in the same order, same bits.
   */
  splitSubmits?: boolean;
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
  /** What the graph binds the LoRA tensors through (f32 buffer, or bf16 copy and window). */
  readonly loraParams: LoraParams;
  readonly storage: LoraStorage;
  /** f32 storage: the parameters themselves. */
  readonly #f32Params: GpuBuffer | undefined;
  readonly #bf16Params: Bf16LoraParams | undefined;
  readonly grads: GpuBuffer;
  readonly #norm: GpuBuffer;
  readonly #clipScale: GpuBuffer;
  readonly #normScratch: GpuBuffer;
  /** Host-visible: a step's loss rows and gradient norm come home through it in one mapping. */
  #staging: GpuBuffer | undefined;

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
    const adamw = { ...ADAMW_DEFAULTS, ...options.adamw };
    const storage = options.evalOnly ? "f32" : options.loraStorage ?? "f32";
    if (storage !== "f32" && storage !== "bf16") {
      throw invalidArgument(`lora_dtype must be f32 or bf16, got ${storage}`);
    }
    this.storage = storage;
    if (storage === "bf16") {
      // The optimizer first: it refuses a budget that leaves no reason to page the master.
      this.#optimizer = new AdamWOptimizer(ctx, n, adamw, options.optimizerGpuBudgetBytes, init);
      this.#bf16Params = new Bf16LoraParams(ctx, this.layout, init);
      this.loraParams = this.#bf16Params;
    } else {
      this.#f32Params = ctx.upload("lora_params", "lora", init);
      this.loraParams = new F32LoraParams(this.#f32Params);
    }
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
    if (storage === "f32") {
      this.#optimizer = options.evalOnly
        ? undefined
        : new AdamWOptimizer(ctx, n, adamw, options.optimizerGpuBudgetBytes);
    }
  }

  /** f32 storage: the flat f32 parameter buffer (generation binds it directly). */
  get params(): GpuBuffer {
    if (!this.#f32Params) {
      throw new Error("bf16 LoRA storage has no f32 parameter buffer: use loraParams");
    }
    return this.#f32Params;
  }

  /** What the optimizer updates on the GPU: the f32 parameters, or the packed bf16 copy. */
  get #gpuParams(): GpuBuffer {
    return this.#bf16Params?.packed ?? this.#f32Params!;
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
    const { batch, labelTokens, inputTokens } = await this.#recordGradients(micro);
    const [rows] = await this.#submitAndRead(batch, [this.graph.lossAcc]);
    return { loss: this.#meanLoss(rows, labelTokens), labelTokens, inputTokens };
  }

  /**
   * Records zeroing, then forward and backward of each micro-batch; returns the open batch of the
   * last one. A micro-batch after the first submits the batch before it: its inputs go to the
   * same buffers, and queue writes land between submits.
   */
  async #recordGradients(micro: MicroBatch[]): Promise<{
    batch: DispatchBatch;
    labelTokens: number;
    inputTokens: number;
  }> {
    if (micro.length === 0) throw invalidArgument("a step needs at least one micro-batch");
    const labelTokens = micro.reduce((s, mb) => s + countLabels(mb), 0);
    const inputTokens = micro.reduce((s, mb) => s + mb.tokens.reduce((a, t) => a + t.length, 0), 0);
    let batch = this.ctx.batch("train-step");
    await encodeFill(this.ctx, batch, this.grads, 0);
    await encodeFill(this.ctx, batch, this.graph.lossAcc, 0);
    if (this.options.splitSubmits) batch = this.#cut(batch);
    const gradScale = labelTokens > 0 ? 1 / labelTokens : 0;
    for (let i = 0; i < micro.length; i++) {
      if (i > 0) batch = this.#cut(batch);
      const { shape } = this.graph.upload(micro[i]);
      await this.graph.encode({
        shape,
        params: this.loraParams,
        grads: this.grads,
        train: true,
        gradScale,
        seed: this.options.seed,
        streamBase: ((this.step * 257 + i) * 1024) >>> 0,
        batch,
      });
    }
    return { batch, labelTokens, inputTokens };
  }

  /** Submits `batch` and opens the next one of the step. */
  #cut(batch: DispatchBatch): DispatchBatch {
    batch.submit();
    return this.ctx.batch("train-step");
  }

  /** The loss per label token from the accumulated row losses (summed in f64, row order). */
  #meanLoss(rows: ArrayBuffer, labelTokens: number): number {
    let sum = 0;
    for (const v of new Float32Array(rows)) sum += v;
    return labelTokens > 0 ? sum / labelTokens : 0;
  }

  /** One optimizer step over a gradient-accumulation step's micro-batches. */
  async trainStep(micro: MicroBatch[], lr: number): Promise<StepResult> {
    if (!(lr >= 0)) throw invalidArgument(`learning rate ${lr} must be >= 0`);
    if (this.options.splitSubmits) return await this.#trainStepSplit(micro, lr);
    const optimizer = this.optimizer;
    const { batch, labelTokens, inputTokens } = await this.#recordGradients(micro);
    await this.#recordClip(batch);
    const home = [this.#norm, this.graph.lossAcc];
    let paging = { pagedInBytes: 0, pagedOutBytes: 0 };
    let norm: ArrayBuffer;
    let rows: ArrayBuffer;
    if (!optimizer.paged) {
      await optimizer.encode(batch, this.#gpuParams, this.grads, this.#clipScale, lr);
      [norm, rows] = await this.#submitAndRead(batch, home);
    } else {
      // The norm and loss are final before the pages move: their readback overlaps the paging.
      const read = this.#submitAndRead(batch, home);
      read.catch(() => {}); // awaited below: not an unhandled rejection while paging runs
      try {
        paging = await optimizer.apply(this.#gpuParams, this.grads, this.#clipScale, lr);
      } catch (e) {
        await read.catch(() => {});
        throw e;
      }
      [norm, rows] = await read;
    }
    const gradNorm = new Float32Array(norm, 0, 1)[0];
    const loss = this.#meanLoss(rows, labelTokens);
    return { loss, gradNorm, labelTokens, inputTokens, ...paging };
  }

  /** The step as it was before one-submit steps (EngineOptions.splitSubmits). */
  async #trainStepSplit(micro: MicroBatch[], lr: number): Promise<StepResult> {
    const step = await this.#recordGradients(micro);
    step.batch.submit();
    const loss = this.#meanLoss(await this.ctx.read(this.graph.lossAcc), step.labelTokens);
    const batch = this.ctx.batch("train-step");
    await this.#recordClip(batch);
    batch.submit();
    const paging = await this.optimizer.apply(
      this.#gpuParams,
      this.grads,
      this.#clipScale,
      lr,
    );
    const [gradNorm] = await this.ctx.readF32(this.#norm, 0, 1);
    const { labelTokens, inputTokens } = step;
    return { loss, gradNorm, labelTokens, inputTokens, ...paging };
  }

  /** Global gradient norm, and the clip multiplier AdamW reads (element 0 of #clipScale). */
  async #recordClip(batch: DispatchBatch): Promise<void> {
    await encodeGlobalNorm(this.ctx, batch, {
      tensors: [{ buffer: this.grads, n: this.layout.totalFloats }],
      out: this.#norm,
      maxNorm: this.options.maxGradNorm,
      scratch: this.#normScratch,
    });
    batch.copy(this.#norm, 4, this.#clipScale, 0, 4);
  }

  /**
   * Records copies of each buffer (whole, or its first `bytes`) into the staging buffer,
   * submits `batch`, and maps them home in one wait; returns each buffer's bytes. An engine steps
   * one call at a time, so one staging buffer serves.
   */
  async #submitAndRead(
    batch: DispatchBatch,
    parts: Array<GpuBuffer | { buffer: GpuBuffer; bytes: number }>,
  ): Promise<ArrayBuffer[]> {
    const spans = parts.map((p) => p instanceof GpuBuffer ? { buffer: p, bytes: p.size } : p);
    const offsets: number[] = [];
    let total = 0;
    for (const p of spans) {
      offsets.push(total);
      total += Math.ceil(p.bytes / 4) * 4; // copy offsets and sizes are 4-byte multiples
    }
    const staging = this.#stagingOf(total);
    spans.forEach((p, i) =>
      batch.copy(p.buffer, 0, staging, offsets[i], Math.ceil(p.bytes / 4) * 4)
    );
    batch.submit();
    const raw = staging.buffer;
    try {
      await this.ctx.wait(raw.mapAsync(MAP_READ, 0, total), "readback of a step's results");
      const all = raw.getMappedRange(0, total);
      const out = spans.map((p, i) => all.slice(offsets[i], offsets[i] + p.bytes));
      raw.unmap();
      return out;
    } catch (e) {
      // A failed or abandoned mapping leaves the buffer unusable: the next readback makes one.
      if (this.#staging === staging) this.#staging = undefined;
      raw.destroy();
      throw e;
    } finally {
      this.ctx.check(); // as GpuContext.read: surface any GPU error of the step here
    }
  }

  /** The staging buffer, grown to `bytes`; outside the memory ledger, like GpuContext.read's. */
  #stagingOf(bytes: number): GpuBuffer {
    if (this.#staging && this.#staging.size >= bytes) return this.#staging;
    this.#staging?.buffer.destroy();
    const size = Math.ceil(bytes / 8) * 8;
    const raw = this.ctx.device.createBuffer({
      label: "step_readback",
      size,
      usage: MAP_READ | COPY_DST,
    });
    this.#staging = new GpuBuffer(this.ctx, raw, size, "scratch", "step_readback");
    return this.#staging;
  }

  /** Loss sum, correct argmax count and label tokens of one micro-batch, no gradients. */
  async evaluate(mb: MicroBatch): Promise<EvalResult> {
    const { shape, labelTokens } = this.graph.upload(mb);
    const batch = this.ctx.batch("evaluate");
    await encodeFill(this.ctx, batch, this.graph.lossAcc, 0);
    await this.graph.encode({
      shape,
      params: this.loraParams,
      grads: this.grads,
      train: false,
      gradScale: 0,
      seed: this.options.seed,
      streamBase: 0,
      batch,
    });
    const rows = shape.batch * shape.seq;
    const [lossBytes, correctBytes] = await this.#submitAndRead(batch, [
      { buffer: this.graph.rowLoss, bytes: rows * 4 },
      { buffer: this.graph.rowCorrect, bytes: rows * 4 },
    ]);
    const loss = new Float32Array(lossBytes);
    const correct = new Uint32Array(correctBytes);
    let lossSum = 0;
    let right = 0;
    for (let i = 0; i < rows; i++) {
      lossSum += loss[i];
      right += correct[i];
    }
    return { lossSum, correct: right, tokens: labelTokens };
  }

  /** The adapter's f32 values: the parameters, or in bf16 storage the f32 master. */
  async readAdapter(): Promise<Float32Array> {
    if (this.#bf16Params) return this.optimizer.master();
    return await this.ctx.readF32(this.params, 0, this.layout.totalFloats);
  }

  /** bf16 storage: the GPU's compute copy, expanded to f32 (tests compare it with the master). */
  async readComputeCopy(): Promise<Float32Array> {
    if (!this.#bf16Params) return await this.readAdapter();
    const words = await this.ctx.readU32(this.#bf16Params.packed);
    // Element 2i is the low half of word i: the little-endian order of a Uint16Array.
    return bf16ArrayToF32(new Uint16Array(words.buffer, words.byteOffset, this.layout.totalFloats));
  }

  writeAdapter(flat: Float32Array): void {
    if (flat.length !== this.layout.totalFloats) {
      throw invalidArgument(
        `adapter has ${flat.length} values, expected ${this.layout.totalFloats}`,
      );
    }
    if (this.#bf16Params) {
      // The master, and its rounding into the compute copy (resume re-packs it here).
      this.optimizer.setMaster(flat);
      this.#bf16Params.write(flat);
      return;
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
    // Outside the ledger: destroy the raw buffer, not the wrapper (src/train/paged_adamw.ts).
    this.#staging?.buffer.destroy();
    this.#staging = undefined;
    this.#f32Params?.destroy();
    this.#bf16Params?.destroy();
    for (const b of [this.grads, this.#norm, this.#clipScale, this.#normScratch]) b.destroy();
  }
}

const MAP_READ = 0x01; // GPUMapMode.READ and GPUBufferUsage.MAP_READ
const COPY_DST = 0x08;

function countLabels(mb: MicroBatch): number {
  let n = 0;
  for (const l of mb.labels) for (let i = 0; i < l.length; i++) if (l[i] !== -100) n++;
  return n;
}
