/**
 * `qlorad export --merge`: a full-precision Hugging Face checkpoint with the adapter folded
 * in, W' = dequant(W4) + scaling · B·A, for serving without peft or bitsandbytes.
 * Rounding caveat: the 4-bit base is dequantized exactly (float32), the merge is computed in
 * float64, then each weight is rounded once to the output dtype. With bf16 output the merged
 * model differs from base + adapter by up to half a bf16 ulp per weight, so its loss can
 * differ slightly from evaluating the adapter on the 4-bit base.
 */
import { join } from "node:path";
import { HfCheckpoint } from "../io/checkpoint.ts";
import { SafetensorsWriter } from "../io/safetensors.ts";
import { OutputDir, writeFileAtomic } from "../io/atomic.ts";
import { type Dtype, fromFloat } from "../io/dtype.ts";
import { fromBnbTensors } from "../quant/quant_state.ts";
import { dequantizeWeight } from "../quant/quant_state.ts";
import { LINEAR_MODULES, linearPath, linearShape, llamaConfigFromHf } from "../model/config.ts";
import { loadAdapter } from "./peft.ts";
import { throwIfAborted } from "../util/errors.ts";
import { releaseFreedMemory } from "../util/gc_hint.ts";

export interface MergeOptions {
  baseModelDir: string;
  adapterDir: string;
  outputDir: string;
  dtype: "BF16" | "F16" | "F32";
  overwrite: boolean;
  signal?: AbortSignal;
  onProgress?: (tensor: string, index: number, total: number) => void;
}

const TORCH: Record<string, string> = { BF16: "bfloat16", F16: "float16", F32: "float32" };
const BNB_SUFFIX = /\.weight\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\..*)$/;

export async function mergeAdapter(o: MergeOptions): Promise<{ tensors: number; merged: number }> {
  const ckpt = await HfCheckpoint.open(o.baseModelDir);
  let out: OutputDir | undefined;
  try {
    const cfg = llamaConfigFromHf(ckpt.config, `${o.baseModelDir}/config.json`);
    const adapter = await loadAdapter(o.adapterDir, cfg);
    const { layout, flat } = adapter;
    const scaling = layout.scaling;
    const bnb = "quantization_config" in ckpt.config;
    const names = ckpt.names().filter((n) => !BNB_SUFFIX.test(n));
    const linearKeys = new Map<string, { layer: number; module: typeof LINEAR_MODULES[number] }>();
    for (let l = 0; l < cfg.layers; l++) {
      for (const m of LINEAR_MODULES) {
        linearKeys.set(`${linearPath(l, m)}.weight`, { layer: l, module: m });
      }
    }
    const entries = names.map((name) => {
      const info = ckpt.info(name);
      const lin = linearKeys.get(name);
      const isLinear = lin !== undefined;
      const shape = lin ? [...linearShape(cfg, lin.module)] : [...info.shape];
      const keepDtype = !isLinear && !["F32", "F16", "BF16"].includes(info.dtype);
      return { name, dtype: (keepDtype ? info.dtype : o.dtype) as Dtype, shape };
    });
    out = await OutputDir.create(o.outputDir, { overwrite: o.overwrite });
    const writer = await SafetensorsWriter.create(out.file("model.safetensors"), entries, {
      format: "pt",
    });
    let merged = 0;
    try {
      for (let i = 0; i < entries.length; i++) {
        throwIfAborted(o.signal);
        const { name, dtype } = entries[i];
        o.onProgress?.(name, i + 1, entries.length);
        const lin = linearKeys.get(name);
        if (!lin) {
          const info = ckpt.info(name);
          const bytes = info.dtype === dtype
            ? await ckpt.readBytes(name)
            : fromFloat(await ckpt.readFloat32(name), dtype);
          await writer.write(name, bytes);
          continue;
        }
        const w = bnb ? dequantizeWeight(await readBnb(ckpt, name)) : await ckpt.readFloat32(name);
        const a = layout.slot(lin.layer, lin.module, "A");
        const b = layout.slot(lin.layer, lin.module, "B");
        const result = new Float64Array(w);
        if (a && b) {
          const [rows, inp] = linearShape(cfg, lin.module);
          const r = a.shape[0];
          for (let row = 0; row < rows; row++) {
            for (let k = 0; k < r; k++) {
              const s = scaling * flat[b.offset + row * r + k];
              if (s === 0) continue;
              const aRow = a.offset + k * inp;
              for (let c = 0; c < inp; c++) result[row * inp + c] += s * flat[aRow + c];
            }
          }
          merged++;
        }
        await writer.write(name, fromFloat(result, dtype));
        releaseFreedMemory();
      }
      await writer.finish();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    const config: Record<string, unknown> = { ...ckpt.config, torch_dtype: TORCH[o.dtype] };
    delete config.quantization_config;
    await writeFileAtomic(out.file("config.json"), JSON.stringify(config, null, 2) + "\n");
    for (const f of ckpt.otherFiles()) await Deno.copyFile(join(ckpt.dir, f), out.file(f));
    await out.commit();
    return { tensors: entries.length, merged };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    ckpt.close();
  }
}

async function readBnb(ckpt: HfCheckpoint, weightName: string) {
  const prefix = weightName.slice(0, -"weight".length);
  const tensors = new Map<string, { dtype: string; shape: readonly number[]; data: Uint8Array }>();
  for (const name of ckpt.names()) {
    if (!name.startsWith(weightName)) continue;
    const info = ckpt.info(name);
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data: await ckpt.readBytes(name) });
  }
  return fromBnbTensors(prefix, (n) => tensors.get(n), ckpt.dir);
}
