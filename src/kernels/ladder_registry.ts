/**
 * What a kernel tells the ladder about itself (a LadderKernel descriptor: its variants, a prior
 * guess, the shaders that key its cached choice, a probe), and the lookup of descriptors by name.
 * Each kernel module exports its descriptor(s); src/kernels/registry.ts lists them all, so the set
 * of laddered kernels does not depend on which modules happen to be imported.
 */
import type { DispatchBatch, GpuContext } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";

/** A kernel's inputs on one context, ready to record any variant into a batch. */
export interface LadderProbe {
  run(batch: DispatchBatch, variant: string): Promise<void>;
  destroy(): void;
}

export interface LadderKernel {
  /** The name used in QLORAD_KERNEL_VARIANTS and the cache. */
  name: string;
  variants: readonly string[];
  /** The choice before (or without) timing. */
  prior(ctx: GpuContext): string;
  /** Whether a variant can run on this device (e.g. needs `ctx.capabilities.f16`); default yes. */
  variantAvailable?(ctx: GpuContext, variant: string): boolean;
  /** Files in shaders/ whose text keys the cached choice (includes too). */
  shaders: readonly string[];
  probe(ctx: GpuContext): Promise<LadderProbe>;
}

/** The kernel's variants this device can run, in registration order. */
export function availableVariants(ctx: GpuContext, k: LadderKernel): string[] {
  return k.variants.filter((v) => k.variantAvailable?.(ctx, v) ?? true);
}

/** Descriptors by name; a descriptor without variants or a name given twice is refused. */
export class LadderRegistry {
  readonly #kernels = new Map<string, LadderKernel>();

  constructor(kernels: readonly LadderKernel[]) {
    for (const k of kernels) {
      if (k.variants.length === 0) {
        throw invalidArgument(`ladder: kernel ${k.name} has no variants`);
      }
      if (this.#kernels.has(k.name)) throw invalidArgument(`ladder: kernel ${k.name} listed twice`);
      this.#kernels.set(k.name, k);
    }
  }

  /** Every kernel, in list order. */
  list(): LadderKernel[] {
    return [...this.#kernels.values()];
  }

  get(name: string): LadderKernel {
    const k = this.#kernels.get(name);
    if (!k) throw invalidArgument(`ladder: no kernel named ${name}`);
    return k;
  }
}
