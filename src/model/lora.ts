/**
 * LoRA adapter layout: every A [r, in] and B [out, r] of every targeted linear lives in one
 * flat f32 buffer (params, and the same layout for gradients and optimizer moments), each
 * tensor starting on a 64-float boundary so it can be bound as a slice (256-byte offsets).
 */
import { type LinearModule, linearPath, linearShape, type LlamaConfig } from "./config.ts";
import { Rng } from "../util/random.ts";
import { invalidArgument } from "../util/errors.ts";

export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  targets: LinearModule[];
  useRslora: boolean;
}

export interface LoraTensorSlot {
  layer: number;
  module: LinearModule;
  kind: "A" | "B";
  shape: [number, number];
  /** Offset in floats within the flat buffer (multiple of 64). */
  offset: number;
  numel: number;
  /** PEFT key, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight */
  peftKey: string;
}

export const SLOT_ALIGN_FLOATS = 64;

export class LoraLayout {
  readonly slots: LoraTensorSlot[] = [];
  readonly totalFloats: number;
  readonly scaling: number;
  #byKey = new Map<string, LoraTensorSlot>();

  constructor(readonly cfg: LlamaConfig, readonly spec: LoraSpec) {
    if (!Number.isInteger(spec.r) || spec.r < 1) throw invalidArgument(`lora.r must be >= 1`);
    if (!(spec.alpha > 0)) throw invalidArgument(`lora.alpha must be > 0`);
    if (!(spec.dropout >= 0 && spec.dropout < 1)) {
      throw invalidArgument(`lora.dropout must be in [0, 1)`);
    }
    this.scaling = spec.useRslora ? spec.alpha / Math.sqrt(spec.r) : spec.alpha / spec.r;
    let offset = 0;
    for (let layer = 0; layer < cfg.layers; layer++) {
      for (const module of spec.targets) {
        const [out, inp] = linearShape(cfg, module);
        for (const kind of ["A", "B"] as const) {
          const shape: [number, number] = kind === "A" ? [spec.r, inp] : [out, spec.r];
          const numel = shape[0] * shape[1];
          const peftKey = `base_model.model.${linearPath(layer, module)}.lora_${kind}.weight`;
          const slot = { layer, module, kind, shape, offset, numel, peftKey };
          this.slots.push(slot);
          this.#byKey.set(`${layer}.${module}.${kind}`, slot);
          offset += Math.ceil(numel / SLOT_ALIGN_FLOATS) * SLOT_ALIGN_FLOATS;
        }
      }
    }
    this.totalFloats = Math.max(offset, SLOT_ALIGN_FLOATS);
  }

  /** Number of trainable parameters (excluding alignment padding). */
  get parameterCount(): number {
    return this.slots.reduce((s, t) => s + t.numel, 0);
  }

  slot(layer: number, module: LinearModule, kind: "A" | "B"): LoraTensorSlot | undefined {
    return this.#byKey.get(`${layer}.${module}.${kind}`);
  }

  /** PEFT initialization: A ~ U(±1/sqrt(in)) (kaiming-uniform, a = sqrt(5)), B = 0. */
  initPeft(seed: number): Float32Array {
    const flat = new Float32Array(this.totalFloats);
    const rng = new Rng(seed);
    for (const s of this.slots) {
      if (s.kind !== "A") continue;
      const bound = 1 / Math.sqrt(s.shape[1]);
      for (let i = 0; i < s.numel; i++) flat[s.offset + i] = rng.uniform(-bound, bound);
    }
    return flat;
  }

  /** PEFT tensors (name -> [shape, data]) from a flat buffer. */
  toPeftTensors(flat: Float32Array): Array<{ name: string; shape: number[]; data: Float32Array }> {
    return this.slots.map((s) => ({
      name: s.peftKey,
      shape: [...s.shape],
      data: flat.slice(s.offset, s.offset + s.numel),
    }));
  }

  /** A flat buffer from PEFT tensors; every slot must be present with the right shape. */
  fromPeftTensors(
    get: (name: string) => { shape: number[]; data: Float32Array } | undefined,
    source: string,
  ): Float32Array {
    const flat = new Float32Array(this.totalFloats);
    for (const s of this.slots) {
      const t = get(s.peftKey);
      if (!t) throw invalidArgument(`${source}: missing tensor ${s.peftKey}`);
      if (t.shape.length !== 2 || t.shape[0] !== s.shape[0] || t.shape[1] !== s.shape[1]) {
        throw invalidArgument(
          `${source}: tensor ${s.peftKey} has shape [${t.shape}], expected [${s.shape}]`,
        );
      }
      flat.set(t.data, s.offset);
    }
    return flat;
  }
}
