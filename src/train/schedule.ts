/**
 * Learning-rate schedules with linear warmup, as transformers' get_*_schedule_with_warmup
 * compute them: the multiplier for optimizer step `step` (0-based, so the first step of a
 * warmup runs at lr 0, exactly as the Hugging Face Trainer does).
 */
import { invalidArgument } from "../util/errors.ts";

export type LrScheduler = "constant" | "linear" | "cosine";

export function lrMultiplier(
  kind: LrScheduler,
  step: number,
  warmupSteps: number,
  totalSteps: number,
): number {
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  switch (kind) {
    case "constant":
      return 1;
    case "linear":
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
    case "cosine": {
      const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
    }
    default:
      throw invalidArgument(
        `lr_scheduler ${JSON.stringify(kind)} is not constant, linear or cosine`,
      );
  }
}

export function learningRate(
  base: number,
  kind: LrScheduler,
  step: number,
  warmupSteps: number,
  totalSteps: number,
): number {
  return base * lrMultiplier(kind, step, warmupSteps, totalSteps);
}
