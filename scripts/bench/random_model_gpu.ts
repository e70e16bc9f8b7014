/**
 * A random Llama base model made entirely on the GPU (scripts/bench/gpu_random.ts), layer by layer:
 * linears NF4 + double quant (blocksize 64), norms f32, embeddings and lm_head bf16, with the scales of
 * scripts/bench/random_model.ts. For benchmarks at real sizes (Llama-2-7B's 6.7B parameters): no
 * checkpoint is read and host memory holds one weight's absmax at most.
 */
import type { GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import type { GpuQuantWeight } from "../../src/kernels/quant_weight.ts";
import { ropeInvFreq } from "../../src/kernels/rope.ts";
import type { BaseLayer, BaseModel } from "../../src/model/base_model.ts";
import {
  LINEAR_MODULES,
  type LinearModule,
  linearPath,
  linearShape,
  type LlamaConfig,
} from "../../src/model/config.ts";
import { randomF32Buffer, randomQuantWeightGpu } from "./gpu_random.ts";
import { RowChunkedTable, uploadTable16 } from "../../src/kernels/row_chunks.ts";
import { f32ArrayToBf16 } from "../../src/io/dtype.ts";
import { Rng } from "../../src/util/random.ts";

/**
 * A bf16 [rows, cols] table uniform in ±scale, as the loader stores embeddings and lm_head (row
 * chunks within the binding limit). Made on the host: the bits are uploaded as they are, and a
 * 128k x 4096 table takes about a second.
 */
function randomBf16Table(
  ctx: GpuContext,
  label: string,
  rows: number,
  cols: number,
  scale: number,
  seed: number,
): RowChunkedTable {
  const bits = new Uint16Array(rows * cols);
  const rng = new Rng(seed);
  const chunk = new Float32Array(1 << 20);
  for (let at = 0; at < bits.length; at += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, bits.length - at));
    bits.set(f32ArrayToBf16(rng.fillUniform(part, -scale, scale)), at);
  }
  return uploadTable16(ctx, { label, category: "base_weights", dtype: "bf16", rows, cols, bits });
}

export async function randomModelGpu(
  ctx: GpuContext,
  cfg: LlamaConfig,
  seed: number,
  onLayer?: (layer: number) => void,
): Promise<BaseModel> {
  const owned: Array<GpuBuffer | GpuQuantWeight | RowChunkedTable> = [];
  const keep = <T extends GpuBuffer | GpuQuantWeight>(b: T): T => {
    owned.push(b);
    return b;
  };
  // Distinct seeds per tensor, drawn from the seeded PRNG: the GPU's hash of (seed, index)
  // would repeat across tensors otherwise.
  const seeds = new Rng(seed);
  const nextSeed = () => seeds.int(0x1_0000_0000);
  const f32 = async (label: string, count: number, center: number, scale: number) =>
    keep(
      await randomF32Buffer(ctx, label, "base_weights", count, { seed: nextSeed(), center, scale }),
    );
  try {
    const table = (label: string, scale: number) => {
      const t = randomBf16Table(ctx, label, cfg.vocab, cfg.hidden, scale, nextSeed());
      owned.push(t);
      return t;
    };
    const embed = table("embed_tokens", 0.5);
    const lmHead = cfg.tieEmbeddings ? embed : table("lm_head", 0.05);
    const finalNorm = await f32("norm", cfg.hidden, 1, 0.1);
    const layers: BaseLayer[] = [];
    for (let l = 0; l < cfg.layers; l++) {
      const inputNorm = await f32(`layer${l}.input_norm`, cfg.hidden, 1, 0.1);
      const postNorm = await f32(`layer${l}.post_norm`, cfg.hidden, 1, 0.1);
      const linears = {} as Record<LinearModule, GpuQuantWeight>;
      for (const m of LINEAR_MODULES) {
        const [out, inF] = linearShape(cfg, m);
        const { weight } = await randomQuantWeightGpu(ctx, {
          label: linearPath(l, m),
          out,
          in: inF,
          seed: nextSeed(),
        });
        linears[m] = keep(weight);
      }
      layers.push({ inputNorm, postNorm, linears });
      onLayer?.(l);
    }
    const invFreq = keep(
      ctx.upload(
        "rope_inv_freq",
        "base_weights",
        ropeInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling),
      ),
    );
    await ctx.sync();
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
  } catch (e) {
    for (const b of owned) b.destroy();
    throw e;
  }
}
