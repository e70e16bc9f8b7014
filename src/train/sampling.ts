/**
 * Choosing the next token from a row of logits, on the host: greedy (argmax), or a draw from the
 * softmax at a temperature restricted to the top-k tokens and then to the top-p nucleus, in that
 * order (transformers' order of its temperature, top-k and top-p warpers). Draws come from the
 * seeded generator (src/util/random.ts), so a seed reproduces a generation.
 */
import type { Rng } from "../util/random.ts";

export interface SamplingSettings {
  /** 0: greedy (argmax); otherwise logits are divided by it before the softmax. */
  temperature: number;
  /** Keep only the k most likely tokens; 0: no limit. */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1: all. */
  topP: number;
}

export const GREEDY: SamplingSettings = { temperature: 0, topK: 0, topP: 1 };

/** Index of the largest logit (the first of equal ones). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let v = 1; v < logits.length; v++) if (logits[v] > logits[best]) best = v;
  return best;
}

/**
 * The distribution a draw comes from: token ids, most likely first (ties by id), and their
 * probabilities after temperature, top-k and top-p, renormalized to sum to 1.
 */
export function samplingDistribution(
  logits: ArrayLike<number>,
  s: SamplingSettings,
): { ids: number[]; probs: number[] } {
  const ids = Array.from({ length: logits.length }, (_, i) => i);
  ids.sort((a, b) => logits[b] - logits[a] || a - b);
  const k = s.topK > 0 ? Math.min(s.topK, ids.length) : ids.length;
  const kept = ids.slice(0, k);
  const max = logits[kept[0]];
  let probs = kept.map((id) => Math.exp((logits[id] - max) / s.temperature));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  if (s.topP < 1) {
    // The nucleus: tokens in order until the probability before a token reaches top_p.
    let cum = 0;
    let n = 0;
    while (n < probs.length && cum < s.topP) cum += probs[n++];
    probs = probs.slice(0, Math.max(1, n));
    kept.length = probs.length;
    sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
  }
  return { ids: kept, probs };
}

/** The next token: argmax when greedy, else one draw from samplingDistribution. */
export function sampleToken(logits: ArrayLike<number>, s: SamplingSettings, rng: Rng): number {
  if (s.temperature === 0) return argmax(logits);
  const { ids, probs } = samplingDistribution(logits, s);
  const u = rng.next();
  let cum = 0;
  for (let i = 0; i < ids.length; i++) {
    cum += probs[i];
    if (u < cum) return ids[i];
  }
  // Rounding left the sum a hair below u: the last kept token.
  return ids[ids.length - 1];
}
