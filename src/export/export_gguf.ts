/**
 * `exportGguf`: the one entry point of GGUF export (the CLI command and the Export RPC call
 * it): the merged model (base + adapter folded in, or the base alone) in F32 / F16 / Q8_0 /
 * Q4_0, or the adapter alone as a GGUF LoRA for llama.cpp's `--lora`. Progress per tensor,
 * cancellable between tensors, the file written atomically (nothing under the final name until
 * it is complete).
 */
import { exists } from "../io/atomic.ts";
import { loadAdapter } from "../train/peft.ts";
import { failedPrecondition, invalidArgument } from "../util/errors.ts";
import { type GgufFileType, openBase, writeMergedGguf } from "./gguf_model.ts";
import { writeLoraGguf } from "./gguf_lora.ts";
import type { GgufTokenizerSummary } from "./gguf_tokenizer.ts";

export type { GgufFileType };

export interface GgufExportOptions {
  /** The base model folder (4-bit qlorad/bitsandbytes checkpoint or a float one). */
  baseModelDir: string;
  /** PEFT adapter folder; required for "lora", optional for "merged". */
  adapterDir?: string;
  /** "merged": one model file; "lora": the adapter alone (load it on the base's GGUF). */
  mode: "merged" | "lora";
  /** The .gguf file to write. */
  outputPath: string;
  /** Tensor type: merged F32/F16/Q8_0/Q4_0; lora F32/F16. */
  type: GgufFileType;
  overwrite: boolean;
  /** general.name; default the base folder's name (merged) or none (lora). */
  name?: string;
  signal?: AbortSignal;
  /** Called before each tensor; a promise it returns is awaited (a caller may hold the export). */
  onProgress?: (tensor: string, index: number, total: number) => void;
}

export interface GgufExportResult {
  path: string;
  tensors: number;
  /** Linears with the adapter folded in (merged mode). */
  merged: number;
  /** Matrices written as F16 instead of a quantized type (rows not a multiple of 32). */
  fallbacks: string[];
  tokenizer?: GgufTokenizerSummary;
  /** The adapter.lora.alpha written (lora mode). */
  loraAlpha?: number;
}

export async function exportGguf(o: GgufExportOptions): Promise<GgufExportResult> {
  if (!["F32", "F16", "Q8_0", "Q4_0"].includes(o.type)) {
    throw invalidArgument(`type: ${JSON.stringify(o.type)} is not one of F32, F16, Q8_0, Q4_0`);
  }
  if (o.mode === "lora" && o.type !== "F32" && o.type !== "F16") {
    throw invalidArgument(`type: a LoRA GGUF is F32 or F16, not ${o.type}`);
  }
  if (o.mode === "lora" && !o.adapterDir) {
    throw invalidArgument("adapterDir: the lora mode exports an adapter, and none was given");
  }
  if (!o.overwrite && await exists(o.outputPath)) {
    throw failedPrecondition(`${o.outputPath}: already exists (set overwrite to replace it)`);
  }
  const { ckpt, cfg } = await openBase(o.baseModelDir);
  try {
    const adapter = o.adapterDir ? await loadAdapter(o.adapterDir, cfg) : undefined;
    if (o.mode === "lora") {
      const r = await writeLoraGguf({
        cfg,
        adapter: adapter!,
        outputPath: o.outputPath,
        type: o.type as "F32" | "F16",
        name: o.name,
        signal: o.signal,
        onProgress: o.onProgress,
      });
      return {
        path: o.outputPath,
        tensors: r.tensors,
        merged: 0,
        fallbacks: [],
        loraAlpha: r.alpha,
      };
    }
    const r = await writeMergedGguf({
      ckpt,
      cfg,
      adapter,
      outputPath: o.outputPath,
      type: o.type,
      name: o.name,
      signal: o.signal,
      onProgress: o.onProgress,
    });
    return { path: o.outputPath, ...r };
  } finally {
    ckpt.close();
  }
}
