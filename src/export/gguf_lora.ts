/**
 * The adapter alone as a GGUF LoRA adapter, as llama.cpp loads it with `--lora` (facts from
 * convert_lora_to_gguf.py and llama.cpp src/llama-adapter.cpp):
 * - metadata `general.type = "adapter"`, `general.architecture` equal to the base model's
 *   (llama.cpp refuses a mismatch), `adapter.type = "lora"`, `adapter.lora.alpha` (FLOAT32);
 * - per targeted linear `<base tensor>.lora_a` with ne = [in, r] (PEFT's A [r, in]) and
 *   `<base tensor>.lora_b` with ne = [r, out] (PEFT's B [out, r]); llama.cpp checks
 *   a.ne[0] == base.ne[0], b.ne[1] == base.ne[1] and a.ne[1] == b.ne[0];
 * - llama.cpp adds scale·(alpha / r)·B·A·x, r read from lora_a's shape, so alpha is written as
 *   scaling·r: alpha for plain LoRA, alpha·sqrt(r) for rsLoRA (scaling alpha/sqrt(r)).
 * B of q_proj / k_proj gets the base's row permutation (gguf_arch.ts permuteQkRows): B·A's
 * output rows must line up with the permuted base rows.
 */
import type { LlamaConfig } from "../model/config.ts";
import type { LoadedAdapter } from "../train/peft.ts";
import { throwIfAborted } from "../util/errors.ts";
import { encodeGgml } from "./gguf_quants.ts";
import { GgufMetadata, type GgufTensorEntry, GgufWriter } from "./gguf_writer.ts";
import { ggufArch, ggufLinearName, permuteQkRows, qkHeads } from "./gguf_arch.ts";

export interface LoraGgufOptions {
  cfg: LlamaConfig;
  adapter: LoadedAdapter;
  outputPath: string;
  /** LoRA tensors stay small: F32 (exact) or F16. */
  type: "F32" | "F16";
  name?: string;
  signal?: AbortSignal;
  onProgress?: (tensor: string, index: number, total: number) => void;
}

export interface LoraGgufResult {
  tensors: number;
  /** The adapter.lora.alpha written: scaling·r. */
  alpha: number;
}

export async function writeLoraGguf(o: LoraGgufOptions): Promise<LoraGgufResult> {
  const { cfg, adapter } = o;
  const { layout, flat } = adapter;
  const arch = ggufArch(cfg);
  const alpha = layout.scaling * layout.spec.r;
  const md = new GgufMetadata();
  md.string("general.architecture", arch);
  md.string("general.type", "adapter");
  if (o.name !== undefined) md.string("general.name", o.name);
  md.string("adapter.type", "lora");
  md.f32("adapter.lora.alpha", alpha);

  const plan: (GgufTensorEntry & { offset: number; permute?: number })[] = [];
  for (const s of layout.slots) {
    const base = ggufLinearName(s.layer, s.module);
    const name = `${base}.lora_${s.kind === "A" ? "a" : "b"}`;
    const permute = s.kind === "B" ? qkHeads(cfg, base) : undefined;
    plan.push({ name, shape: [...s.shape], type: o.type, offset: s.offset, permute });
  }
  const writer = await GgufWriter.create(o.outputPath, md, plan);
  try {
    for (let i = 0; i < plan.length; i++) {
      throwIfAborted(o.signal);
      const t = plan[i];
      await o.onProgress?.(t.name, i + 1, plan.length);
      let values = flat.subarray(t.offset, t.offset + t.shape[0] * t.shape[1]);
      if (t.permute !== undefined) {
        values = permuteQkRows(values, t.permute, cfg.headDim, t.shape[1]);
      }
      await writer.write(t.name, encodeGgml(t.type, values));
    }
    await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return { tensors: plan.length, alpha };
}
