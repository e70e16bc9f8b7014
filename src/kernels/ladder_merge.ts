/**
 * How the ladder turns timing runs into a choice: each run's times divided by that run's fastest
 * (a run on a loaded machine weighs the same as a quiet one), the median ratio per variant, and
 * whether the choice is settled or is to be timed again by a later process.
 */
import { median } from "../gpu/timing.ts";
import type { RunTimes } from "./ladder_probe.ts";

/** Runs kept per choice; a choice with this many runs is settled. */
export const MAX_RUNS = 3;
/** A runner-up within this fraction of the best is a close call, timed again next time. */
export const CLOSE = 0.1;

/** The merge of several timing runs: a score per variant, the choice, and how close it was. */
export interface MergedRuns {
  /** Median over runs of (variant ms / that run's fastest ms); null when it ever failed. */
  score: Record<string, number | null>;
  /** Lowest score; undefined when no variant ran. */
  best?: string;
  /** Runner-up score / best score - 1 (Infinity with a single candidate). */
  margin: number;
}

/**
 * Merges timing runs over `variants`: a variant that failed (null) or was not timed in any run is
 * out (a failure is a compile or validation error, not noise). Ties go to the earlier variant.
 */
export function mergeRuns(runs: RunTimes[], variants: readonly string[]): MergedRuns {
  const score: Record<string, number | null> = {};
  const ratios = new Map<string, number[]>(variants.map((v) => [v, []]));
  for (const run of runs) {
    const times = variants.map((v) => run[v]).filter((t): t is number => typeof t === "number");
    const fastest = Math.min(...times);
    if (!(fastest > 0)) continue;
    for (const v of variants) {
      const t = run[v];
      if (typeof t === "number" && t > 0) ratios.get(v)!.push(t / fastest);
      else ratios.set(v, [NaN]);
    }
  }
  for (const [v, r] of ratios) score[v] = r.length === 0 || r.some(isNaN) ? null : median(r);
  const ranked = variants.filter((v) => score[v] !== null)
    .sort((a, b) => score[a]! - score[b]! || variants.indexOf(a) - variants.indexOf(b));
  if (ranked.length === 0) return { score, margin: 0 };
  const margin = ranked.length < 2 ? Infinity : score[ranked[1]]! / score[ranked[0]]! - 1;
  return { score, best: ranked[0], margin };
}

/**
 * Whether a choice needs no more timing: MAX_RUNS runs, or a clear winner (margin >= CLOSE) that
 * either agrees with the prior or was confirmed by a second run.
 */
export function isSettled(runs: RunTimes[], merged: MergedRuns, prior: string): boolean {
  if (runs.length >= MAX_RUNS) return true;
  if (merged.best === undefined || merged.margin < CLOSE) return false;
  return runs.length >= 2 || merged.best === prior;
}
