/**
 * Where the LoRA matmuls read the adapter's parameters from. "f32": the flat f32 buffer itself,
 * a slot bound at its offset. "bf16": a 16-bit compute copy (packed two per u32, the LoraLayout
 * offsets) and one f32 window the size of the largest layer's LoRA span; before a layer's
 * forward and before its backward (with its recompute) `encodeLayer` expands that layer's slice
 * into the window, and a slot binds the window at its offset less the layer's start. The layout
 * is layer-major, so a layer's slots are contiguous, and every slot offset is 64-float aligned,
 * so the window offsets keep the 256-byte binding alignment. Dispatches of one batch run in
 * order, so one window reused layer after layer is correct inside a single submit.
 *
 * In bf16 mode the f32 master lives with the optimizer (src/train/paged_adamw.ts), which packs
 * each updated page into the compute copy.
 */
import type { Binding, DispatchBatch, GpuBuffer, GpuContext } from "../gpu/context.ts";
import { type LoraLayout, type LoraTensorSlot, SLOT_ALIGN_FLOATS } from "./lora.ts";
import { bf16BufferBytes, encodeExpandBf16 } from "../kernels/bf16.ts";
import { f32ArrayToBf16 } from "../io/dtype.ts";
import { invalidArgument } from "../util/errors.ts";

/** The LoRA parameters' storage on the GPU: "f32" (default) or a bf16 compute copy. */
export type LoraStorage = "f32" | "bf16";

export const LORA_STORAGES: readonly LoraStorage[] = ["f32", "bf16"];

/** What the layer code binds a LoRA tensor through. */
export interface LoraParams {
  readonly storage: LoraStorage;
  /** The binding a slot's matmuls read (valid after `encodeLayer` of its layer in bf16). */
  binding(slot: LoraTensorSlot): Binding;
  /** Makes `layer`'s slots readable through `binding`; nothing to do for f32. */
  encodeLayer(batch: DispatchBatch, layer: number): Promise<void>;
}

/** The floats [start, end) of each layer's slots in the flat layout (end 64-float aligned). */
export function layerSpans(layout: LoraLayout): Array<{ start: number; end: number } | undefined> {
  const spans: Array<{ start: number; end: number } | undefined> = new Array(layout.cfg.layers);
  for (const s of layout.slots) {
    const end = s.offset + Math.ceil(s.numel / SLOT_ALIGN_FLOATS) * SLOT_ALIGN_FLOATS;
    const cur = spans[s.layer];
    spans[s.layer] = cur
      ? { start: Math.min(cur.start, s.offset), end: Math.max(cur.end, end) }
      : { start: s.offset, end };
  }
  return spans;
}

/** Floats of the bf16 mode's f32 window: the largest layer's span (at least 64). */
export function loraWindowFloats(layout: LoraLayout): number {
  let most = SLOT_ALIGN_FLOATS;
  for (const s of layerSpans(layout)) if (s) most = Math.max(most, s.end - s.start);
  return most;
}

/** The f32 buffer itself: a slot is a slice of it. */
export class F32LoraParams implements LoraParams {
  readonly storage = "f32";
  constructor(readonly buffer: GpuBuffer) {}

  binding(slot: LoraTensorSlot): Binding {
    return { buffer: this.buffer, offset: slot.offset * 4, size: slot.numel * 4 };
  }

  encodeLayer(): Promise<void> {
    return Promise.resolve();
  }
}

/** The bf16 compute copy and its f32 layer window; owns both buffers. */
export class Bf16LoraParams implements LoraParams {
  readonly storage = "bf16";
  /** n bf16 values, two per 32-bit word, at the LoraLayout offsets. */
  readonly packed: GpuBuffer;
  /** One layer's slots in f32, expanded by encodeLayer. */
  readonly window: GpuBuffer;
  readonly #spans: Array<{ start: number; end: number } | undefined>;
  /** The layer the window was last expanded for (checked by `binding`). */
  #current = -1;

  constructor(readonly ctx: GpuContext, readonly layout: LoraLayout, init: Float32Array) {
    this.#spans = layerSpans(layout);
    this.packed = ctx.createBuffer({
      label: "lora_params_bf16",
      category: "lora",
      size: bf16BufferBytes(layout.totalFloats),
    });
    this.window = ctx.createBuffer({
      label: "lora_layer_window",
      category: "lora",
      size: loraWindowFloats(layout) * 4,
    });
    this.write(init);
  }

  /** Rounds `flat` (the f32 master) to bf16 on the host and uploads it whole. */
  write(flat: Float32Array): void {
    if (flat.length !== this.layout.totalFloats) {
      throw invalidArgument(
        `adapter has ${flat.length} values, expected ${this.layout.totalFloats}`,
      );
    }
    const halves = f32ArrayToBf16(flat);
    // Element 2i in the low half of word i: the little-endian byte order of a Uint16Array.
    const words = new Uint32Array(bf16BufferBytes(flat.length) / 4);
    new Uint16Array(words.buffer).set(halves);
    this.ctx.write(this.packed, words);
  }

  binding(slot: LoraTensorSlot): Binding {
    const span = this.#spans[slot.layer]!;
    if (this.#current !== slot.layer) {
      throw new Error(`LoRA layer ${slot.layer} read before its bf16 slice was expanded`);
    }
    return { buffer: this.window, offset: (slot.offset - span.start) * 4, size: slot.numel * 4 };
  }

  async encodeLayer(batch: DispatchBatch, layer: number): Promise<void> {
    const span = this.#spans[layer];
    this.#current = layer;
    if (!span) return;
    await encodeExpandBf16(this.ctx, batch, {
      src: this.packed,
      dst: this.window,
      n: span.end - span.start,
      first: span.start,
    });
  }

  destroy(): void {
    this.packed.destroy();
    this.window.destroy();
  }
}
