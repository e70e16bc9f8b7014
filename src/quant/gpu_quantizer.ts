/** The GPU quantize kernel as a WeightQuantizer for quantizeModel (byte-identical to the CPU path). */
import type { GpuContext } from "../gpu/context.ts";
import { quantize4bitGpu } from "../kernels/quantize_4bit.ts";
import { quantMapFor } from "./codes.ts";
import type { WeightQuantizer } from "./quantize_model.ts";

export function gpuQuantizer(ctx: GpuContext): WeightQuantizer {
  return async (w, shape, opts) => {
    const r = await quantize4bitGpu(ctx, w, shape, opts);
    return {
      quantType: opts.quantType,
      blocksize: opts.blocksize,
      shape: [shape[0], shape[1]],
      dtype: opts.dtype,
      packed: r.packed,
      absmax: r.dq ? undefined : r.absmax,
      dq: r.dq,
      quantMap: quantMapFor(opts.quantType),
    };
  };
}
