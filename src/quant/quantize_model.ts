/**
 * Quantize a Hugging Face checkpoint folder into a bitsandbytes 4-bit folder that
 * transformers + bitsandbytes load: every Linear weight (2-D `.weight`, not embeddings, not
 * `skipModules`) becomes a 4-bit group (REFERENCE §5); everything else is copied as it was
 * (biases too: bitsandbytes' Linear4bit saves its bias as `*.bias` in the original dtype).
 * Inputs: one file or shards + index, BF16, F16 or F32. Tensors stream one at a time, shard by
 * shard (HfCheckpoint.names order): each result is appended to a spill file of its output shard
 * at once, so memory holds about one tensor at a time whatever the model's size. The folder
 * is built under a temporary name and renamed into place only when complete.
 */
import { join } from "node:path";
import { HfCheckpoint } from "../io/checkpoint.ts";
import { llamaConfigFromHf } from "../model/config.ts";
import { SafetensorsWriter, type TensorEntry } from "../io/safetensors.ts";
import { OutputDir, writeFileAtomic } from "../io/atomic.ts";
import type { Dtype } from "../io/dtype.ts";
import { validateBlocksize, validateQuantType } from "./blockwise.ts";
import type { QuantType } from "./codes.ts";
import {
  bitsPerParameter,
  dequantizeWeight,
  quantizationConfig,
  type QuantizedWeight,
  quantizeWeight,
  toBnbTensors,
} from "./quant_state.ts";
import { invalidArgument, throwIfAborted } from "../util/errors.ts";
import { releaseFreedMemory } from "../util/gc_hint.ts";

export type { QuantType };

/** Quantizes one [out, in] weight; the GPU kernel and the CPU reference both fit. */
export type WeightQuantizer = (
  w: Float32Array,
  shape: [number, number],
  opts: { quantType: QuantType; blocksize: number; doubleQuant: boolean; dtype: string },
) => Promise<QuantizedWeight>;

export const cpuQuantizer: WeightQuantizer = (w, shape, opts) =>
  Promise.resolve(quantizeWeight(w, shape, opts));

export interface QuantizeOptions {
  /** Path of the source model folder (config.json + safetensors). */
  modelDir: string;
  /** Path of the output folder; written to a temporary name, renamed when complete. */
  outputDir: string;
  quantType: QuantType;
  blocksize: number;
  doubleQuant: boolean;
  /** Module names (suffix match on the module path, e.g. "lm_head") kept in their dtype. */
  skipModules: string[];
  overwrite: boolean;
  signal?: AbortSignal;
  onProgress?: (p: QuantizeProgress) => void;
  /** Default: the CPU reference. The service passes the GPU kernel. */
  quantizer?: WeightQuantizer;
  /** Output shard size limit in bytes (default 2 GiB). */
  maxShardBytes?: number;
}

export interface QuantizeProgress {
  tensor: string;
  /** 1-based index among `total` tensors. */
  index: number;
  total: number;
  bytesIn: number;
  bytesOut: number;
  quantized: boolean;
}

export interface QuantizeResult {
  parametersQuantized: number;
  tensorsQuantized: number;
  tensorsKept: number;
  bitsPerParameter: number;
  bytesIn: number;
  bytesOut: number;
  meanAbsError: number;
  maxAbsError: number;
  outputDir: string;
}

const FLOAT_DTYPES = new Set(["F32", "F16", "BF16"]);
const TORCH_DTYPE: Record<string, string> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

/** Which tensors become 4-bit: Linear weights (2-D `.weight`, not embeddings) not skipped. */
export function isQuantizable(
  name: string,
  dtype: string,
  shape: readonly number[],
  skipModules: readonly string[],
): boolean {
  if (!name.endsWith(".weight") || shape.length !== 2 || !FLOAT_DTYPES.has(dtype)) return false;
  const module = name.slice(0, -".weight".length);
  if (/(^|\.)(embed_tokens|wte|wpe|embeddings?)$/.test(module)) return false;
  return !skipModules.some((s) => module === s || module.endsWith(`.${s}`));
}

/**
 * A Linear weight in a dtype the quantizer does not read (F64, FP8, integers: already quantized
 * by another tool) would be copied through unquantized and then fail to load: refuse it first.
 */
function refuseUnquantizableLinears(ckpt: HfCheckpoint, skipModules: readonly string[]): void {
  for (const name of ckpt.names()) {
    const info = ckpt.info(name);
    if (!isQuantizable(name, "F32", info.shape, skipModules) || FLOAT_DTYPES.has(info.dtype)) {
      continue;
    }
    throw invalidArgument(
      `${join(ckpt.dir, info.file)}: tensor ${
        JSON.stringify(name)
      } is ${info.dtype}; Linear weights must be BF16, F16 or F32 to quantize`,
    );
  }
}

/** A tensor staged in a shard's spill file, waiting for the shard's header to be written. */
interface Staged {
  entry: TensorEntry;
  offset: number;
  length: number;
}

/**
 * Tensor bytes of one output shard, appended to a spill file as they are produced (the
 * safetensors header, which needs every size first, is written when the shard is complete).
 */
class ShardSpill {
  staged: Staged[] = [];
  length = 0;

  private constructor(readonly path: string, readonly file: Deno.FsFile) {}

  static async create(path: string): Promise<ShardSpill> {
    return new ShardSpill(
      path,
      await Deno.open(path, { read: true, write: true, createNew: true }),
    );
  }

  async append(entry: TensorEntry, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) done += await this.file.write(data.subarray(done));
    this.staged.push({ entry, offset: this.length, length: data.length });
    this.length += data.length;
  }

  async read(s: Staged): Promise<Uint8Array> {
    const out = new Uint8Array(s.length);
    await this.file.seek(s.offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < s.length) {
      const n = await this.file.read(out.subarray(done));
      if (n === null) throw new Error(`${this.path}: short read`);
      done += n;
    }
    return out;
  }

  /** Writes the finished shard at `finalPath` and removes the spill file. */
  async writeShard(finalPath: string): Promise<void> {
    const writer = await SafetensorsWriter.create(
      finalPath,
      this.staged.map((s) => s.entry),
      { format: "pt" },
    );
    try {
      for (const s of this.staged) await writer.write(s.entry.name, await this.read(s));
      await writer.finish();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    this.close();
    await Deno.remove(this.path);
  }

  close(): void {
    try {
      this.file.close();
    } catch {
      // already closed
    }
  }
}

export async function quantizeModel(opts: QuantizeOptions): Promise<QuantizeResult> {
  validateQuantType(opts.quantType, "quant_type");
  validateBlocksize(opts.blocksize, "blocksize");
  const quantizer = opts.quantizer ?? cpuQuantizer;
  const maxShard = opts.maxShardBytes ?? 2 * 1024 ** 3;
  const ckpt = await HfCheckpoint.open(opts.modelDir);
  let out: OutputDir | undefined;
  try {
    if ((ckpt.config as { quantization_config?: unknown }).quantization_config !== undefined) {
      throw invalidArgument(
        `${opts.modelDir}/config.json: the model is already quantized (quantization_config present)`,
      );
    }
    // Only architectures we can train are worth quantizing: refuse others before any work.
    llamaConfigFromHf(ckpt.config, `${opts.modelDir}/config.json`);
    refuseUnquantizableLinears(ckpt, opts.skipModules);
    out = await OutputDir.create(opts.outputDir, { overwrite: opts.overwrite });
    const names = ckpt.names();
    const total = names.length;
    let index = 0;
    let bytesIn = 0;
    let params = 0;
    let bits = 0;
    let errSum = 0;
    let errMax = 0;
    let tensorsQuantized = 0;
    let bytesOut = 0;
    let computeDtype: string | undefined;
    const spills: ShardSpill[] = [];
    const spill = async (bytes: number): Promise<ShardSpill> => {
      const current = spills.at(-1);
      if (current && (current.length === 0 || current.length + bytes <= maxShard)) return current;
      const next = await ShardSpill.create(out!.file(`.spill-${spills.length}`));
      spills.push(next);
      return next;
    };
    try {
      for (const name of names) {
        throwIfAborted(opts.signal);
        const info = ckpt.info(name);
        bytesIn += info.byteLength;
        index++;
        if (!isQuantizable(name, info.dtype, info.shape, opts.skipModules)) {
          const entry = { name, dtype: info.dtype, shape: [...info.shape] };
          await (await spill(info.byteLength)).append(entry, await ckpt.readBytes(name));
          opts.onProgress?.({
            tensor: name,
            index,
            total,
            bytesIn: info.byteLength,
            bytesOut: info.byteLength,
            quantized: false,
          });
          continue;
        }
        computeDtype ??= TORCH_DTYPE[info.dtype];
        const w = await ckpt.readFloat32(name);
        const shape: [number, number] = [info.shape[0], info.shape[1]];
        const q = await quantizer(w, shape, {
          quantType: opts.quantType,
          blocksize: opts.blocksize,
          doubleQuant: opts.doubleQuant,
          dtype: TORCH_DTYPE[info.dtype],
        });
        const deq = dequantizeWeight(q);
        for (let i = 0; i < w.length; i++) {
          const e = Math.abs(deq[i] - w[i]);
          errSum += e;
          if (e > errMax) errMax = e;
        }
        params += w.length;
        bits += bitsPerParameter(q) * w.length;
        tensorsQuantized++;
        const group = toBnbTensors(name.slice(0, -"weight".length), q);
        const bytes = group.reduce((sum, t) => sum + t.data.byteLength, 0);
        const target = await spill(bytes);
        for (const t of group) {
          await target.append({ name: t.name, dtype: t.dtype as Dtype, shape: t.shape }, t.data);
        }
        releaseFreedMemory();
        opts.onProgress?.({
          tensor: name,
          index,
          total,
          bytesIn: info.byteLength,
          bytesOut: bytes,
          quantized: true,
        });
      }
      if (tensorsQuantized === 0) {
        throw invalidArgument(`${opts.modelDir}: no Linear weights to quantize`);
      }
      const files = spills.length === 1
        ? ["model.safetensors"]
        : spills.map((_, i) =>
          `model-${String(i + 1).padStart(5, "0")}-of-${
            String(spills.length).padStart(5, "0")
          }.safetensors`
        );
      const weightMap: Record<string, string> = {};
      for (let i = 0; i < spills.length; i++) {
        throwIfAborted(opts.signal);
        for (const st of spills[i].staged) weightMap[st.entry.name] = files[i];
        await spills[i].writeShard(out.file(files[i]));
        bytesOut += (await Deno.stat(out.file(files[i]))).size;
      }
      if (spills.length > 1) {
        const totalSize = spills.reduce((sum, sp) => sum + sp.length, 0);
        await writeFileAtomic(
          out.file("model.safetensors.index.json"),
          JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) +
            "\n",
        );
      }
    } finally {
      for (const sp of spills) sp.close();
    }
    const config = {
      ...ckpt.config,
      quantization_config: {
        ...quantizationConfig({
          quantType: opts.quantType,
          doubleQuant: opts.doubleQuant,
          computeDtype: computeDtype ?? "bfloat16",
        }),
        llm_int8_skip_modules: opts.skipModules.length > 0 ? opts.skipModules : null,
      },
    };
    await writeFileAtomic(out.file("config.json"), JSON.stringify(config, null, 2) + "\n");
    for (const f of ckpt.otherFiles()) {
      await Deno.copyFile(join(ckpt.dir, f), out.file(f));
    }
    throwIfAborted(opts.signal);
    await out.commit();
    return {
      parametersQuantized: params,
      tensorsQuantized,
      tensorsKept: names.length - tensorsQuantized,
      bitsPerParameter: bits / params,
      bytesIn,
      bytesOut,
      meanAbsError: errSum / params,
      maxAbsError: errMax,
      outputDir: opts.outputDir,
    };
  } catch (e) {
    await out?.abort();
    throw e;
  } finally {
    ckpt.close();
  }
}
