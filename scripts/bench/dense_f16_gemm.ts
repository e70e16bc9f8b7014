/**
 * The dense f16 GEMM contender of the GPU check: the same product as the f32 contenders, on f16
 * copies of the operands, or the reason the device has none.
 */
import type { DispatchBatch, GpuBuffer, GpuContext } from "../../src/gpu/context.ts";
import { encodeF32ToF16, encodeMatmulF16, matmulF16Variant } from "../../src/kernels/matmul_f16.ts";

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
 * The f16 GEMM of these operands on this device (src/kernels/matmul_f16.ts: subgroup matrices
 * where the device has them, else f16 tiles), or why there is none. The f32 operands are
 * converted to f16 copies once, outside the timed work.
 */
export async function denseF16Gemm(ctx: GpuContext, op: GemmOperands): Promise<DenseF16Gemm> {
  const variant = matmulF16Variant(ctx);
  if (variant === undefined) {
    return { available: false, reason: "the device has no shader-f16" };
  }
  const half = (label: string, elems: number) =>
    ctx.createBuffer({ label, category: "scratch", size: Math.ceil((elems * 2) / 4) * 4 });
  const a = half("gemm.x.f16", op.m * op.k);
  const b = half("gemm.w.f16", op.n * op.k);
  try {
    const convert = ctx.batch("gemm f16 operands");
    await encodeF32ToF16(ctx, convert, { src: op.x, dst: a, count: op.m * op.k });
    await encodeF32ToF16(ctx, convert, { src: op.w, dst: b, count: op.n * op.k });
    convert.submit();
  } catch (e) {
    a.destroy();
    b.destroy();
    throw e;
  }
  return {
    available: true,
    variant,
    // W is stored [n, k]: op(B) = Wᵀ.
    encode: (batch: DispatchBatch) =>
      encodeMatmulF16(ctx, batch, {
        a,
        b,
        c: op.y,
        m: op.m,
        n: op.n,
        k: op.k,
        transB: true,
        variant,
      }),
    destroy: () => {
      a.destroy();
      b.destroy();
    },
  };
}
