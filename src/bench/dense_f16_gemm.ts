/**
 * The dense f16 GEMM contender of the GPU check, kept to one function so that wiring in the
 * f16 entry point of src/kernels/matmul.ts (being added on another branch) is one line: today
 * there is none, and the function says so, and why, instead of a number.
 */
import type { DispatchBatch, GpuBuffer, GpuContext } from "../gpu/context.ts";

/** Y[m, n] = X[m, k] · Wᵀ with W stored [n, k], as the f32 contenders get it (f32 buffers). */
export interface GemmOperands {
  x: GpuBuffer;
  w: GpuBuffer;
  y: GpuBuffer;
  m: number;
  n: number;
  k: number;
}

export type DenseF16Gemm =
  | {
    available: true;
    /** The variant that will run (for the report). */
    variant: string;
    encode: (batch: DispatchBatch) => Promise<void>;
    /** Frees whatever the f16 path made (f16 copies of the operands). */
    destroy: () => void;
  }
  | { available: false; reason: string };

/**
 * The f16 GEMM of these operands on this device, or why there is none. To wire one in, return
 * e.g. `{ available: true, variant, encode: (b) => encodeMatmulF16(ctx, b, {...}), destroy }`.
 */
export function denseF16Gemm(ctx: GpuContext, _op: GemmOperands): Promise<DenseF16Gemm> {
  if (!ctx.capabilities.f16) {
    return Promise.resolve({ available: false, reason: "the device has no shader-f16" });
  }
  return Promise.resolve({
    available: false,
    reason: "src/kernels/matmul.ts has no f16 GEMM entry point yet",
  });
}
