/**
 * Loads the frozen base model onto the GPU from a model folder: a bitsandbytes 4-bit folder
 * (ours or one saved by transformers + bitsandbytes), or a full-precision checkpoint that is
 * quantized on load. Tensors are read one at a time (shard by shard for a sharded folder); only
 * 4-bit linears reach the GPU in 4-bit form, embeddings and lm_head in 16-bit row chunks (bf16
 * and f16 checkpoints bit-exact, others rounded once to bf16), norms and Qwen2's q/k/v biases
 * in f32.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import { HfCheckpoint } from "../io/checkpoint.ts";
import { type GpuQuantWeight, uploadQuantWeight } from "../kernels/quant_weight.ts";
import { ropeInvFreq } from "../kernels/rope.ts";
import {
  RowChunkedTable,
  type Table16Dtype,
  uploadTable16,
  uploadTableFromF32,
} from "../kernels/row_chunks.ts";
import { f32ArrayToBf16, numel } from "../io/dtype.ts";
import { fromBnbTensors, type QuantizedWeight, quantizeWeight } from "../quant/quant_state.ts";
import type { QuantType } from "../quant/codes.ts";
import { invalidArgument } from "../util/errors.ts";
import {
  LINEAR_MODULES,
  type LinearModule,
  linearPath,
  linearShape,
  type LlamaConfig,
} from "./config.ts";
import { llamaConfigFromHf } from "./config.ts";
import type { BaseLayer, BaseModel } from "./base_model.ts";

export interface HostLayer {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  linears: Record<LinearModule, QuantizedWeight>;
  /** [out] biases of the linears that have one (Qwen2: q, k, v). */
  biases?: Partial<Record<LinearModule, Float32Array>>;
}

/** A base model in host memory (tests build one directly; the loader streams instead). */
export interface HostBaseModel {
  cfg: LlamaConfig;
  /** Rounded to bf16 on upload (tests round their reference the same way). */
  embed: Float32Array;
  finalNorm: Float32Array;
  /** Rounded to bf16 on upload; absent: tied to embed. */
  lmHead?: Float32Array;
  layers: HostLayer[];
}

export interface LoadOptions {
  /** For full-precision checkpoints, quantized on load. */
  quantType?: QuantType;
  blocksize?: number;
  doubleQuant?: boolean;
  onProgress?: (tensor: string, index: number, total: number) => void;
  signal?: AbortSignal;
}

function isBnb4bit(config: Record<string, unknown>): boolean {
  const q = config.quantization_config as Record<string, unknown> | undefined;
  return q?.quant_method === "bitsandbytes" && q?.load_in_4bit === true;
}

function uploadF32(ctx: GpuContext, label: string, data: Float32Array): GpuBuffer {
  return ctx.upload(label, "base_weights", data);
}

/** What the model owns on the GPU and frees on destroy. */
type Owned = GpuBuffer | GpuQuantWeight | RowChunkedTable;

/**
 * A [vocab, hidden] tensor (embed_tokens, lm_head) as a 16-bit table in row chunks: bf16 and f16
 * bits go to the GPU as they are; any other float dtype is rounded once to bf16.
 */
async function loadTable(
  ctx: GpuContext,
  ckpt: HfCheckpoint,
  cfg: LlamaConfig,
  name: string,
  label: string,
  dir: string,
): Promise<RowChunkedTable> {
  if (!ckpt.has(name)) throw invalidArgument(`${dir}: missing tensor ${name}`);
  const info = ckpt.info(name);
  const n = cfg.vocab * cfg.hidden;
  if (numel(info.shape) !== n) {
    throw invalidArgument(
      `${dir}: tensor ${name} has shape [${info.shape}], config.json implies [${cfg.vocab}, ${cfg.hidden}]`,
    );
  }
  let dtype: Table16Dtype = "bf16";
  let bits: Uint16Array;
  if (info.dtype === "BF16" || info.dtype === "F16") {
    dtype = info.dtype === "F16" ? "f16" : "bf16";
    const bytes = await ckpt.readBytes(name);
    bits = bytes.byteOffset % 2 === 0
      ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
      : new Uint16Array(bytes.slice().buffer);
  } else {
    bits = f32ArrayToBf16(await ckpt.readFloat32(name));
  }
  return uploadTable16(ctx, {
    label,
    category: "base_weights",
    dtype,
    rows: cfg.vocab,
    cols: cfg.hidden,
    bits,
  });
}

/** Reads `model.*` tensors one at a time and builds the GPU model. */
export async function loadBaseModel(
  ctx: GpuContext,
  dir: string,
  opts: LoadOptions = {},
): Promise<BaseModel> {
  const ckpt = await HfCheckpoint.open(dir);
  const owned: Owned[] = [];
  try {
    const cfg = llamaConfigFromHf(ckpt.config, `${ckpt.dir}/config.json`);
    const bnb = isBnb4bit(ckpt.config);
    refuseUndeclaredBiases(ckpt, cfg, dir);
    const biased = biasedModules(cfg);
    const total = cfg.layers * (LINEAR_MODULES.length + biased.length + 2) + 3;
    let index = 0;
    const step = (name: string) => {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error("aborted");
      opts.onProgress?.(name, ++index, total);
    };
    const readVector = async (name: string, n: number) => {
      if (!ckpt.has(name)) throw invalidArgument(`${dir}: missing tensor ${name}`);
      const v = await ckpt.readFloat32(name);
      if (v.length !== n) {
        throw invalidArgument(`${dir}: tensor ${name} has ${v.length} values, expected ${n}`);
      }
      return v;
    };
    const keep = <T extends Owned>(b: T): T => {
      owned.push(b);
      return b;
    };

    step("model.embed_tokens.weight");
    const embed = keep(
      await loadTable(ctx, ckpt, cfg, "model.embed_tokens.weight", "embed_tokens", dir),
    );
    const layers: BaseLayer[] = [];
    for (let l = 0; l < cfg.layers; l++) {
      const p = `model.layers.${l}.`;
      step(`${p}input_layernorm.weight`);
      const inputNorm = keep(uploadF32(
        ctx,
        `${p}input_layernorm`,
        await readVector(`${p}input_layernorm.weight`, cfg.hidden),
      ));
      step(`${p}post_attention_layernorm.weight`);
      const postNorm = keep(uploadF32(
        ctx,
        `${p}post_attention_layernorm`,
        await readVector(`${p}post_attention_layernorm.weight`, cfg.hidden),
      ));
      const linears = {} as Record<LinearModule, GpuQuantWeight>;
      const biases: Partial<Record<LinearModule, GpuBuffer>> = {};
      for (const m of LINEAR_MODULES) {
        const path = linearPath(l, m);
        step(`${path}.weight`);
        const q = bnb
          ? await readBnbLinear(ckpt, path, dir)
          : await quantizeOnLoad(ckpt, cfg, path, m, dir, opts);
        const shape = linearShape(cfg, m);
        if (q.shape[0] !== shape[0] || q.shape[1] !== shape[1]) {
          throw invalidArgument(
            `${dir}: ${path}.weight has shape [${q.shape}], config.json implies [${shape}]`,
          );
        }
        linears[m] = keep(uploadQuantWeight(ctx, q, path));
        if (biased.includes(m)) {
          // Kept in 16-bit by the quantizer (as bitsandbytes does); f32 on the GPU, it is small.
          step(`${path}.bias`);
          if (!ckpt.has(`${path}.bias`)) {
            throw invalidArgument(
              `${dir}: missing tensor ${path}.bias (model_type "${cfg.modelType}" has q/k/v biases)`,
            );
          }
          biases[m] = keep(
            uploadF32(ctx, `${path}.bias`, await readVector(`${path}.bias`, shape[0])),
          );
        }
      }
      layers.push({ inputNorm, postNorm, linears, ...(biased.length > 0 ? { biases } : {}) });
    }
    step("model.norm.weight");
    const finalNorm = keep(
      uploadF32(ctx, "norm", await readVector("model.norm.weight", cfg.hidden)),
    );
    step("lm_head.weight");
    const lmHead = cfg.tieEmbeddings || !ckpt.has("lm_head.weight")
      ? embed
      : keep(await loadTable(ctx, ckpt, cfg, "lm_head.weight", "lm_head", dir));
    if (!cfg.tieEmbeddings && lmHead === embed) {
      throw invalidArgument(`${dir}: missing tensor lm_head.weight (tie_word_embeddings is false)`);
    }
    return assemble(ctx, cfg, embed, lmHead, finalNorm, layers, owned);
  } catch (e) {
    for (const b of owned) b.destroy();
    throw e;
  } finally {
    ckpt.close();
  }
}

/** The linears that carry a bias in this architecture (Qwen2: q, k, v; Llama, Mistral: none). */
function biasedModules(cfg: LlamaConfig): LinearModule[] {
  return cfg.qkvBias ? ["q", "k", "v"] : [];
}

/**
 * A bias tensor the architecture does not have (e.g. q_proj.bias in a Llama folder whose
 * config.json says attention_bias false) would be silently dropped, computing a different model:
 * refuse it, naming the tensor and the config field.
 */
function refuseUndeclaredBiases(ckpt: HfCheckpoint, cfg: LlamaConfig, dir: string): void {
  const declared = new Set<string>();
  for (let l = 0; l < cfg.layers; l++) {
    for (const m of biasedModules(cfg)) declared.add(`${linearPath(l, m)}.bias`);
  }
  const extra = ckpt.names().find((n) => n.endsWith(".bias") && !declared.has(n));
  if (extra === undefined) return;
  const why = cfg.modelType === "qwen2"
    ? `model_type "qwen2" has biases on q/k/v only`
    : `model_type "${cfg.modelType ?? "llama"}" has no biases${
      cfg.modelType === "mistral" ? "" : " (attention_bias and mlp_bias are false)"
    }`;
  throw invalidArgument(
    `${dir}: tensor ${extra} (in ${
      ckpt.info(extra).file
    }) is a bias that config.json does not declare: ${why}`,
  );
}

async function readBnbLinear(ckpt: HfCheckpoint, path: string, dir: string) {
  const prefix = `${path}.`;
  const tensors = new Map<string, { dtype: string; shape: readonly number[]; data: Uint8Array }>();
  for (const name of ckpt.names()) {
    if (!name.startsWith(`${prefix}weight`)) continue;
    const info = ckpt.info(name);
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data: await ckpt.readBytes(name) });
  }
  return fromBnbTensors(prefix, (n) => tensors.get(n), dir);
}

async function quantizeOnLoad(
  ckpt: HfCheckpoint,
  cfg: LlamaConfig,
  path: string,
  m: LinearModule,
  dir: string,
  opts: LoadOptions,
): Promise<QuantizedWeight> {
  const name = `${path}.weight`;
  if (!ckpt.has(name)) throw invalidArgument(`${dir}: missing tensor ${name}`);
  const w = await ckpt.readFloat32(name);
  return quantizeWeight(w, linearShape(cfg, m), {
    quantType: opts.quantType ?? "nf4",
    blocksize: opts.blocksize ?? 64,
    doubleQuant: opts.doubleQuant ?? true,
    dtype: dtypeName(ckpt.info(name).dtype),
  });
}

function dtypeName(st: string): string {
  return st === "BF16" ? "bfloat16" : st === "F16" ? "float16" : "float32";
}

function assemble(
  ctx: GpuContext,
  cfg: LlamaConfig,
  embed: RowChunkedTable,
  lmHead: RowChunkedTable,
  finalNorm: GpuBuffer,
  layers: BaseLayer[],
  owned: Owned[],
): BaseModel {
  const invFreq = ctx.upload(
    "rope_inv_freq",
    "base_weights",
    ropeInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling),
  );
  owned.push(invFreq);
  return {
    cfg,
    ctx,
    embed,
    lmHead,
    finalNorm,
    layers,
    invFreq,
    destroy: () => {
      for (const b of owned) b.destroy();
    },
  };
}

/** Uploads a host-side base model (tests, and callers that already hold one). */
export function uploadBaseModel(ctx: GpuContext, host: HostBaseModel): BaseModel {
  const owned: Owned[] = [];
  const keep = <T extends Owned>(b: T): T => {
    owned.push(b);
    return b;
  };
  const cfg = host.cfg;
  const table = (label: string, values: Float32Array) =>
    keep(uploadTableFromF32(ctx, {
      label,
      category: "base_weights",
      rows: cfg.vocab,
      cols: cfg.hidden,
      values,
    }));
  const embed = table("embed_tokens", host.embed);
  const lmHead = host.lmHead ? table("lm_head", host.lmHead) : embed;
  const finalNorm = keep(uploadF32(ctx, "norm", host.finalNorm));
  const layers = host.layers.map((l, i): BaseLayer => ({
    inputNorm: keep(uploadF32(ctx, `layer${i}.input_norm`, l.inputNorm)),
    postNorm: keep(uploadF32(ctx, `layer${i}.post_norm`, l.postNorm)),
    linears: Object.fromEntries(
      LINEAR_MODULES.map((m) => [m, keep(uploadQuantWeight(ctx, l.linears[m], linearPath(i, m)))]),
    ) as Record<LinearModule, GpuQuantWeight>,
    ...(l.biases
      ? {
        biases: Object.fromEntries(
          Object.entries(l.biases).map((
            [m, b],
          ) => [m, keep(uploadF32(ctx, `${linearPath(i, m as LinearModule)}.bias`, b))]),
        ),
      }
      : {}),
  }));
  return assemble(ctx, cfg, embed, lmHead, finalNorm, layers, owned);
}
