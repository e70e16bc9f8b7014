/**
 * The frozen base model on the GPU: 4-bit linears (packed codes + double-quantized absmax,
 * never dequantized in memory), full-precision embeddings, norms and lm_head.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { GpuQuantWeight } from "../kernels/quant_weight.ts";
import type { LinearModule, LlamaConfig } from "./config.ts";

export interface BaseLayer {
  inputNorm: GpuBuffer;
  postNorm: GpuBuffer;
  linears: Record<LinearModule, GpuQuantWeight>;
  /** f32 [out] biases of the linears that have one (Qwen2: q, k, v); frozen. */
  biases?: Partial<Record<LinearModule, GpuBuffer>>;
}

export interface BaseModel {
  cfg: LlamaConfig;
  /** f32 [vocab, hidden] */
  embed: GpuBuffer;
  /** f32 [vocab, hidden]; the same buffer as `embed` when embeddings are tied. */
  lmHead: GpuBuffer;
  finalNorm: GpuBuffer;
  layers: BaseLayer[];
  /** f32 [headDim / 2] RoPE inverse frequencies, scaling applied. */
  invFreq: GpuBuffer;
  ctx: GpuContext;
  destroy(): void;
}
