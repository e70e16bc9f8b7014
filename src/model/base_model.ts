/**
 * The frozen base model on the GPU: 4-bit linears (packed codes + double-quantized absmax,
 * never dequantized in memory), embeddings and lm_head in 16-bit (bf16, or f16 from an f16
 * checkpoint) split into row chunks that each fit a binding, norms in f32.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { GpuQuantWeight } from "../kernels/quant_weight.ts";
import type { RowChunkedTable } from "../kernels/row_chunks.ts";
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
  /** [vocab, hidden], 16-bit in row chunks. */
  embed: RowChunkedTable;
  /** [vocab, hidden], 16-bit in row chunks; the same table as `embed` when embeddings are tied. */
  lmHead: RowChunkedTable;
  finalNorm: GpuBuffer;
  layers: BaseLayer[];
  /** f32 [headDim / 2] RoPE inverse frequencies, scaling applied. */
  invFreq: GpuBuffer;
  ctx: GpuContext;
  destroy(): void;
}
