/**
 * The GPU check's measuring stages, each run in a child process of its own (scripts/gpu_check.ts)
 * on a fresh GPU context: the adapter's description and the kernel ladder's choices, the GEMM and
 * GEMV figures, the training figures (~50M model, Llama-2-7B shape, one Llama-3-8B layer at
 * three lengths), and generation (prefill and KV-cached decode at the Llama-2-7B shape and
 * ~50M). A stage reports through `save`, as often as it has
 * something new, so that a stage killed at its time limit still leaves what it measured.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import {
  kernelLadder,
  type LadderDecision,
  parseVariantOverrides,
  VARIANTS_ENV,
} from "../../src/kernels/ladder.ts";
import { type GenerateMeasurement, measureGenerate } from "./generate_bench.ts";
import { benchGemm } from "./gemm_bench.ts";
import { benchGemv } from "./gemv_bench.ts";
import { describeDevice, describeGpu } from "./gpu_info.ts";
import type { CheckPlan, StageName } from "./gpu_check_plan.ts";
import { parameterCount } from "./random_model.ts";
import { num } from "./report.ts";
import { releaseFreedMemory } from "../../src/util/gc_hint.ts";
import { benchLargeTraining } from "./train_large_bench.ts";
import { benchTraining } from "./train_bench.ts";
import { benchTrainLengths } from "./train_lengths_bench.ts";

export interface StageContext {
  ctx: GpuContext;
  plan: CheckPlan;
  /** Date.now() by which the stage should be done (it is killed a little after). */
  deadline: number;
  save: (data: Record<string, unknown>) => Promise<void>;
  log: (line: string) => void;
}

/** The variants this process ran: the ladder's decisions, and the choices forced by the environment. */
function ladderChoices(ctx: GpuContext): LadderDecision[] {
  const decided = kernelLadder.decisions(ctx);
  const forced = [...parseVariantOverrides(Deno.env.get(VARIANTS_ENV))].map((
    [kernel, variant],
  ) => ({
    kernel,
    variant,
    source: "override" as const,
  }));
  return [...decided, ...forced.filter((f) => !decided.some((d) => d.kernel === f.kernel))];
}

export type MeasuringStage = Exclude<StageName, `tests-${number}`>;

export async function runStage(name: MeasuringStage, s: StageContext): Promise<void> {
  const { ctx, plan } = s;
  switch (name) {
    case "adapter": {
      // What the device says first: the second adapter request is the riskier step.
      await s.save({ info: describeDevice(ctx) });
      const info = await describeGpu(ctx);
      await s.save({ info });
      // Decide every laddered kernel now, so that later stages (other processes) read the
      // choices from the ladder's disk cache instead of timing them again.
      if (plan.warmLadder) await s.save({ info, ladder: await kernelLadder.warm(ctx) });
      return;
    }
    case "gemm": {
      const rows: unknown[] = [];
      await benchGemm(ctx, {
        ...plan.gemm,
        onRow: async (row) => {
          rows.push(row);
          s.log(
            `gemm ${row.key}: nf4 ${num(row.nf4.tflops)}, f32 ${num(row.denseF32.tflops)} TFLOP/s`,
          );
          await s.save({ rows, ladder: ladderChoices(ctx) });
        },
      });
      await s.save({ rows, ladder: ladderChoices(ctx) });
      return;
    }
    case "gemv": {
      const gemv = await benchGemv(ctx, plan.gemv);
      await s.save({ gemv, ladder: ladderChoices(ctx) });
      return;
    }
    case "train_50m": {
      const c = plan.train50m;
      const row = await benchTraining(ctx, { ...c }, s.log);
      await s.save({
        row,
        batch: c.batch,
        seq: c.seq,
        parameters: parameterCount(c.cfg),
        ladder: ladderChoices(ctx),
      });
      return;
    }
    case "train_7b": {
      const c = plan.train7b;
      const result = await benchLargeTraining(ctx, {
        ...c,
        deadline: s.deadline,
        onProgress: s.log,
        onUpdate: (partial) => void s.save({ result: partial }),
      });
      await s.save({ result, ladder: ladderChoices(ctx) });
      return;
    }
    case "train_8b_1l": {
      const c = plan.train8b1l;
      const result = await benchTrainLengths(ctx, {
        ...c,
        deadline: s.deadline,
        onProgress: s.log,
        onUpdate: (partial) => void s.save({ result: partial }),
      });
      await s.save({ result, ladder: ladderChoices(ctx) });
      return;
    }
    case "generate": {
      const { cases, laterCaseS } = plan.generate;
      const rows: GenerateMeasurement[] = [];
      const notes: string[] = [];
      for (const [i, c] of cases.entries()) {
        const later = (cases.length - 1 - i) * laterCaseS * 1000;
        // A case needs its model, a warm-up and a round: not started in the last seconds.
        if (i > 0 && Date.now() + (laterCaseS * 1000) / 2 > s.deadline) {
          notes.push(`${c.name}: not run, no time left`);
          break;
        }
        s.log(`${c.name}: prompt ${c.promptTokens}, ${c.newTokens} new tokens`);
        rows.push(
          await measureGenerate(ctx, { ...c, deadline: s.deadline - later, onProgress: s.log }),
        );
        releaseFreedMemory();
        await s.save({ rows, notes, ladder: ladderChoices(ctx) });
      }
      await s.save({ rows, notes, ladder: ladderChoices(ctx) });
      return;
    }
  }
}
