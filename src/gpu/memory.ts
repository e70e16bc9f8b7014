/** Byte accounting by category for every GPU buffer, with peaks, for metrics and the estimator. */
export const MEMORY_CATEGORIES = [
  "base_weights",
  "lora",
  "gradients",
  "optimizer",
  "activations",
  "scratch",
] as const;
export type MemoryCategory = typeof MEMORY_CATEGORIES[number];

export type MemoryBytes = Record<MemoryCategory, number>;

function zeros(): MemoryBytes {
  return Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as MemoryBytes;
}

export class MemoryLedger {
  #current = zeros();
  #peak = zeros();
  #total = 0;
  #peakTotal = 0;

  add(category: MemoryCategory, bytes: number): void {
    this.#current[category] += bytes;
    this.#total += bytes;
    this.#peak[category] = Math.max(this.#peak[category], this.#current[category]);
    this.#peakTotal = Math.max(this.#peakTotal, this.#total);
  }

  remove(category: MemoryCategory, bytes: number): void {
    this.#current[category] -= bytes;
    this.#total -= bytes;
  }

  current(): MemoryBytes {
    return { ...this.#current };
  }

  /** Peak of each category on its own (the categories peak at different times). */
  peak(): MemoryBytes {
    return { ...this.#peak };
  }

  get total(): number {
    return this.#total;
  }

  /** Peak of the sum over categories. */
  get peakTotal(): number {
    return this.#peakTotal;
  }

  resetPeak(): void {
    this.#peak = { ...this.#current };
    this.#peakTotal = this.#total;
  }
}
