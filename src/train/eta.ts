/**
 * The training ETA. A run's first step also compiles every pipeline (seconds on a CPU adapter,
 * tens of times a later step), so an average over all steps says hours at the start and
 * drifts down for the whole run. The estimate here leaves the first step out once a second one
 * is known, and averages the rest with a bias-corrected exponential moving average: the plain
 * mean while few steps are in, then mostly the recent ones, so it follows a machine that gets
 * busier or quieter.
 */

/**
 * Weight of the past in the moving average: about the last 1 / (1 - 0.95) = 20 steps count,
 * enough to ride out a few steps slowed by other work on a shared machine.
 */
const DEFAULT_DECAY = 0.95;

export class StepTimeEstimator {
  #decay: number;
  #first: number | undefined;
  #ema = 0;
  /** decay^n after n averaged steps: (1 - this) corrects the average's bias toward 0. */
  #weight = 1;

  constructor(decay = DEFAULT_DECAY) {
    if (!(decay >= 0 && decay < 1)) throw new RangeError(`decay must be in [0, 1), got ${decay}`);
    this.#decay = decay;
  }

  /** One finished step's wall time in seconds. */
  add(seconds: number): void {
    if (this.#first === undefined) {
      this.#first = seconds;
      return;
    }
    this.#ema = this.#decay * this.#ema + (1 - this.#decay) * seconds;
    this.#weight *= this.#decay;
  }

  /** Seconds a step takes now: the average of the steps after the first, else the first. */
  get stepSeconds(): number {
    if (this.#weight < 1) return this.#ema / (1 - this.#weight);
    return this.#first ?? 0;
  }

  /** Seconds until `stepsLeft` more steps are done. */
  remainingSeconds(stepsLeft: number): number {
    return this.stepSeconds * Math.max(0, stepsLeft);
  }
}
