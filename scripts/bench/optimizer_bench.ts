/**
 * Section (e, optimizer alone): one AdamW step over a LoRA-sized flat buffer with the moments
 * resident on the GPU against the same step paged through a pool of a quarter of the state's
 * bytes (src/train/paged_adamw.ts), timed side by side until the GPU is done and, when paged,
 * every page is back in host memory.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import { ADAMW_DEFAULTS, AdamWOptimizer } from "../../src/train/paged_adamw.ts";
import { Rng } from "../../src/util/random.ts";
import { interleaved } from "../../src/gpu/timing.ts";

export interface OptimizerRow {
  name: string;
  floats: number;
  stateBytes: number;
  budgetBytes: number;
  pages: number;
  residentMs: number;
  pagedMs: number;
  /** pagedMs / residentMs. */
  ratio: number;
}

export async function benchOptimizer(
  ctx: GpuContext,
  name: string,
  floats: number,
  o: { rounds: number },
): Promise<OptimizerRow> {
  const rng = new Rng(5);
  const params = ctx.upload("bench.params", "lora", rng.normals(floats, 0.01));
  const grads = ctx.upload("bench.grads", "gradients", rng.normals(floats, 0.01));
  const clip = ctx.upload("bench.clip", "scratch", new Float32Array([1]));
  const stateBytes = 2 * floats * 4;
  const budgetBytes = Math.floor(stateBytes / 4);
  const resident = new AdamWOptimizer(ctx, floats, ADAMW_DEFAULTS, 0);
  const paged = new AdamWOptimizer(ctx, floats, ADAMW_DEFAULTS, budgetBytes);
  try {
    const t = await interleaved([
      {
        name: "resident",
        run: async () => {
          await resident.apply(params, grads, clip, 1e-4);
          await ctx.sync();
        },
      },
      {
        name: "paged",
        run: async () => {
          await paged.apply(params, grads, clip, 1e-4);
          await ctx.sync();
        },
      },
    ], { warmup: 2, rounds: o.rounds });
    const residentMs = t.get("resident")!.ms;
    const pagedMs = t.get("paged")!.ms;
    return {
      name,
      floats,
      stateBytes,
      budgetBytes,
      pages: Math.ceil(floats / paged.pageFloats),
      residentMs,
      pagedMs,
      ratio: pagedMs / residentMs,
    };
  } finally {
    resident.destroy();
    paged.destroy();
    for (const b of [params, grads, clip]) b.destroy();
  }
}
