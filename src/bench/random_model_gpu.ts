/**
 * A random Llama base model made entirely on the GPU (src/bench/gpu_random.ts), layer by layer:
 * linears NF4 + double quant (blocksize 64), embeddings, norms and lm_head f32, with the scales of
 * src/bench/random_model.ts. For benchmarks at real sizes (Llama-2-7B's 6.7B parameters): no
 * checkpoint is read and host memory holds one weight's absmax at most.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { GpuQuantWeight } from "../kernels/quant_weight.ts";
import { ropeInvFreq } from "../kernels/rope.ts";
import type { BaseLayer, BaseModel } from "../model/base_model.ts";
import {
  LINEAR_MODULES,
  type LinearModule,
  linearPath,
  linearShape,
  type LlamaConfig,
} from "../model/config.ts";
import { randomF32Buffer, randomQuantWeightGpu } from "./gpu_random.ts";

export async function randomModelGpu(
  ctx: GpuContext,
  cfg: LlamaConfig,
  seed: number,
  onLayer?: (layer: number) => void,
): Promise<BaseModel> {
  const owned: Array<GpuBuffer | GpuQuantWeight> = [];
  const keep = <T extends GpuBuffer | GpuQuantWeight>(b: T): T => {
    owned.push(b);
    return b;
  };
  // Distinct seeds per tensor: the hash of (seed, index) would repeat across tensors otherwise.
  let tensor = 0;
  const nextSeed = () => (Math.imul(seed, 0x9e3779b1) + 0x632be5ab * ++tensor) >>> 0;
  const f32 = async (label: string, count: number, center: number, scale: number) =>
    keep(
      await randomF32Buffer(ctx, label, "base_weights", count, { seed: nextSeed(), center, scale }),
    );
  try {
    const embed = await f32("embed_tokens", cfg.vocab * cfg.hidden, 0, 0.5);
    const lmHead = cfg.tieEmbeddings
      ? embed
      : await f32("lm_head", cfg.vocab * cfg.hidden, 0, 0.05);
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
