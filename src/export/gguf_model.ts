/**
 * The merged model as one GGUF file for llama.cpp: W' = dequant(W4) + scaling·B·A for every
 * linear the adapter targets (the same float64 merge as `export --merge`, src/train/merge.ts),
 * every other tensor as in the checkpoint, the `{arch}.*` hyperparameters and the tokenizer.
 * Streams tensor by tensor: host memory holds one tensor (as float64) at a time.
 *
 * Tensor types per file type (as convert_hf_to_gguf and llama-quantize choose them):
 * 1-D tensors (norms, biases, rope_freqs) are always F32; matrices take the file type, except
 * that a quantized type needs rows of a multiple of 32 values, so a matrix whose rows are not
 * falls back to F16 (listed in the result's `fallbacks`), and in a Q4_0 file token_embd and
 * output are Q8_0: llama-quantize also keeps the output layer at a higher precision than the
 * 4-bit body (Q6_K there; Q8_0 is the nearest type this exporter writes).
 */
import { basename } from "node:path";
import { HfCheckpoint } from "../io/checkpoint.ts";
import { dequantizeWeight, fromBnbTensors } from "../quant/quant_state.ts";
import {
  LINEAR_MODULES,
  type LinearModule,
  linearPath,
  linearShape,
  type LlamaConfig,
  llamaConfigFromHf,
} from "../model/config.ts";
import type { LoadedAdapter } from "../train/peft.ts";
import { throwIfAborted } from "../util/errors.ts";
import { releaseFreedMemory } from "../util/gc_hint.ts";
import { encodeGgml } from "./gguf_quants.ts";
import {
  type GgmlTypeName,
  GgufMetadata,
  type GgufTensorEntry,
  GgufWriter,
} from "./gguf_writer.ts";
import { ggufArch, ggufTensorName, permuteQkRows, qkHeads } from "./gguf_arch.ts";
import { addTokenizerMetadata, type GgufTokenizerSummary } from "./gguf_tokenizer.ts";

export type GgufFileType = "F32" | "F16" | "Q8_0" | "Q4_0";

/** llama.cpp's general.file_type (enum llama_ftype). */
const FILE_TYPE: Record<GgufFileType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

const BNB_SUFFIX = /\.weight\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\..*)$/;

export interface MergedGgufOptions {
  ckpt: HfCheckpoint;
  cfg: LlamaConfig;
  /** Folded into the linears it targets; none: the (dequantized) base alone. */
  adapter?: LoadedAdapter;
  outputPath: string;
  type: GgufFileType;
  /** general.name; default the base model folder's name. */
  name?: string;
  signal?: AbortSignal;
  onProgress?: (tensor: string, index: number, total: number) => void;
}

export interface MergedGgufResult {
  tensors: number;
  /** Linears with the adapter folded in. */
  merged: number;
  /** Matrices written as F16 because their rows do not fill 32-value blocks. */
  fallbacks: string[];
  tokenizer: GgufTokenizerSummary;
}

/** The ggml type of one tensor in a file of this type (see the header comment). */
export function tensorTypeFor(
  fileType: GgufFileType,
  ggufName: string,
  shape: readonly number[],
): { type: GgmlTypeName; fallback: boolean } {
  if (shape.length === 1) return { type: "F32", fallback: false };
  if (fileType === "F32" || fileType === "F16") return { type: fileType, fallback: false };
  const outer = ggufName === "token_embd.weight" || ggufName === "output.weight";
  const type = fileType === "Q4_0" && outer ? "Q8_0" : fileType;
  if (shape[shape.length - 1] % 32 !== 0) return { type: "F16", fallback: true };
  return { type, fallback: false };
}

/** `{arch}.*` hyperparameters (gguf-py Keys.LLM / Keys.Attention / Keys.Rope). */
export function addModelMetadata(md: GgufMetadata, cfg: LlamaConfig, arch: string): void {
  md.u32(`${arch}.vocab_size`, cfg.vocab);
  md.u32(`${arch}.context_length`, cfg.maxPositions);
  md.u32(`${arch}.embedding_length`, cfg.hidden);
  md.u32(`${arch}.block_count`, cfg.layers);
  md.u32(`${arch}.feed_forward_length`, cfg.intermediate);
  md.u32(`${arch}.attention.head_count`, cfg.heads);
  md.u32(`${arch}.attention.head_count_kv`, cfg.kvHeads);
  md.u32(`${arch}.attention.key_length`, cfg.headDim);
  md.u32(`${arch}.attention.value_length`, cfg.headDim);
  md.u32(`${arch}.rope.dimension_count`, cfg.headDim);
  md.f32(`${arch}.rope.freq_base`, cfg.ropeTheta);
  md.f32(`${arch}.attention.layer_norm_rms_epsilon`, cfg.rmsEps);
  if (cfg.ropeScaling?.type === "linear") {
    md.string(`${arch}.rope.scaling.type`, "linear");
    md.f32(`${arch}.rope.scaling.factor`, cfg.ropeScaling.factor);
  }
}

/**
 * Llama 3 RoPE scaling as convert_hf_to_gguf writes it: a `rope_freqs.weight` tensor of
 * headDim/2 factors that llama.cpp divides each base frequency θ^(-2i/d) by: 1 for short
 * wavelengths, `factor` for long ones, and 1 / ((1 - s)/factor + s) in between with
 * s = (original / wavelength - low) / (high - low) (transformers' llama3 rope init).
 */
export function llama3RopeFreqs(cfg: LlamaConfig): Float32Array | undefined {
  const s = cfg.ropeScaling;
  if (s?.type !== "llama3") return undefined;
  const half = cfg.headDim / 2;
  const out = new Float32Array(half);
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = 1 / Math.pow(cfg.ropeTheta, (2 * i) / cfg.headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) /
        (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

/** A 4-bit bitsandbytes weight of the checkpoint, dequantized (float32, exact). */
async function readBnbWeight(ckpt: HfCheckpoint, weightName: string): Promise<Float32Array> {
  const tensors = new Map<string, { dtype: string; shape: readonly number[]; data: Uint8Array }>();
  for (const name of ckpt.names()) {
    if (!name.startsWith(weightName + ".") && name !== weightName) continue;
    const info = ckpt.info(name);
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data: await ckpt.readBytes(name) });
  }
  const prefix = weightName.slice(0, -"weight".length);
  return dequantizeWeight(fromBnbTensors(prefix, (n) => tensors.get(n), ckpt.dir));
}

interface Planned extends GgufTensorEntry {
  hf?: string;
  linear?: { layer: number; module: LinearModule };
}

/** Writes the merged model to `outputPath` (atomically). */
export async function writeMergedGguf(o: MergedGgufOptions): Promise<MergedGgufResult> {
  const { ckpt, cfg, adapter } = o;
  const arch = ggufArch(cfg);
  const configFile = `${ckpt.dir}/config.json`;
  const linearKeys = new Map<string, { layer: number; module: LinearModule }>();
  for (let l = 0; l < cfg.layers; l++) {
    for (const m of LINEAR_MODULES) {
      linearKeys.set(`${linearPath(l, m)}.weight`, { layer: l, module: m });
    }
  }
  const fallbacks: string[] = [];
  const plan: Planned[] = [];
  for (const hf of ckpt.names()) {
    if (BNB_SUFFIX.test(hf)) continue;
    const name = ggufTensorName(hf, configFile);
    if (name === undefined) continue;
    const linear = linearKeys.get(hf);
    const quantized = ckpt.has(`${hf}.absmax`);
    const shape = linear
      ? [...linearShape(cfg, linear.module)]
      : quantized && hf === "lm_head.weight"
      ? [cfg.vocab, cfg.hidden]
      : [...ckpt.info(hf).shape];
    const { type, fallback } = tensorTypeFor(o.type, name, shape);
    if (fallback) fallbacks.push(name);
    plan.push({ name, shape, type, hf, linear });
  }
  const ropeFreqs = llama3RopeFreqs(cfg);
  if (ropeFreqs) plan.push({ name: "rope_freqs.weight", shape: [ropeFreqs.length], type: "F32" });

  const md = new GgufMetadata();
  md.string("general.architecture", arch);
  md.string("general.type", "model");
  md.string("general.name", o.name ?? basename(ckpt.dir));
  md.u32("general.file_type", FILE_TYPE[o.type]);
  md.u32("general.quantization_version", 2);
  addModelMetadata(md, cfg, arch);
  const tokenizer = await addTokenizerMetadata(md, ckpt.dir, cfg.vocab);

  const writer = await GgufWriter.create(o.outputPath, md, plan);
  let merged = 0;
  try {
    for (let i = 0; i < plan.length; i++) {
      throwIfAborted(o.signal);
      const t = plan[i];
      await o.onProgress?.(t.name, i + 1, plan.length);
      let values: Float32Array | Float64Array;
      if (!t.hf) values = ropeFreqs!;
      else if (ckpt.has(`${t.hf}.absmax`)) values = await readBnbWeight(ckpt, t.hf);
      else values = await ckpt.readFloat32(t.hf);
      if (t.linear && adapter) {
        const a = adapter.layout.slot(t.linear.layer, t.linear.module, "A");
        const b = adapter.layout.slot(t.linear.layer, t.linear.module, "B");
        if (a && b) {
          values = foldLora(values, adapter, a, b, t.shape[0], t.shape[1]);
          merged++;
        }
      }
      const heads = qkHeads(cfg, t.name);
      if (heads !== undefined) {
        values = permuteQkRows(values, heads, cfg.headDim, t.shape.length === 2 ? t.shape[1] : 1);
      }
      await writer.write(t.name, encodeGgml(t.type, values));
      releaseFreedMemory();
    }
    await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return { tensors: plan.length, merged, fallbacks, tokenizer };
}

/** dequant(W) + scaling·B·A in float64 (merge.ts's arithmetic). */
function foldLora(
  w: Float32Array | Float64Array,
  adapter: LoadedAdapter,
  a: { offset: number; shape: [number, number] },
  b: { offset: number },
  rows: number,
  inp: number,
): Float64Array {
  const { flat, layout } = adapter;
  const r = a.shape[0];
  const result = new Float64Array(w);
  for (let row = 0; row < rows; row++) {
    for (let k = 0; k < r; k++) {
      const s = layout.scaling * flat[b.offset + row * r + k];
      if (s === 0) continue;
      const aRow = a.offset + k * inp;
      for (let c = 0; c < inp; c++) result[row * inp + c] += s * flat[aRow + c];
    }
  }
  return result;
}

/** Opens the base checkpoint and its config (the caller closes it). */
export async function openBase(dir: string): Promise<{ ckpt: HfCheckpoint; cfg: LlamaConfig }> {
  const ckpt = await HfCheckpoint.open(dir);
  try {
    return { ckpt, cfg: llamaConfigFromHf(ckpt.config, `${dir}/config.json`) };
  } catch (e) {
    ckpt.close();
    throw e;
  }
}
