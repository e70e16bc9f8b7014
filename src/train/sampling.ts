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
 *
 * Nothing sorts the whole vocabulary (128k entries at Llama 3, once per generated token): top-k
 * selects its k ids with a heap, and a nucleus without top-k takes the most likely ids in growing
 * batches until their probability reaches top_p (almost always the first batch).
 */
export function samplingDistribution(
  logits: ArrayLike<number>,
  s: SamplingSettings,
): { ids: number[]; probs: number[] } {
  const n = logits.length;
  const k = s.topK > 0 ? Math.min(s.topK, n) : n;
  const max = logits[argmax(logits)];
  const weight = (id: number) => Math.exp((logits[id] - max) / s.temperature);
  // The softmax's denominator over the top-k set (the whole vocabulary without top-k).
  let kept = k < n || s.topP >= 1 ? mostLikely(logits, k) : undefined;
  let total = 0;
  if (kept) { for (const id of kept) total += weight(id); }
  else for (let id = 0; id < n; id++) total += weight(id);
  if (s.topP >= 1) return { ids: kept!, probs: kept!.map((id) => weight(id) / total) };

  // The nucleus: tokens in order until the probability before a token reaches top_p.
  let batch = Math.min(k, NUCLEUS_BATCH);
  for (;;) {
    const candidates = kept ?? mostLikely(logits, batch);
    let cum = 0;
    let count = 0;
    while (count < candidates.length && cum < s.topP) cum += weight(candidates[count++]) / total;
    if (cum >= s.topP || candidates.length === k) {
      const ids = candidates.slice(0, Math.max(1, count));
      const probs = ids.map((id) => weight(id) / total);
      const sum = probs.reduce((a, b) => a + b, 0);
      return { ids, probs: probs.map((p) => p / sum) };
    }
    batch = Math.min(k, batch * 8);
    kept = undefined;
  }
}

/** The first batch of most likely ids a nucleus is looked for in. */
const NUCLEUS_BATCH = 256;

/**
 * The `count` most likely ids, most likely first, ties by the smaller id: a min-heap of the best
 * `count` seen so far (O(n log count)), sorted at the end; the whole vocabulary only when asked.
 */
export function mostLikely(logits: ArrayLike<number>, count: number): number[] {
  const n = logits.length;
  // a ranks before b: larger logit, or the same logit and a smaller id.
  const before = (a: number, b: number) =>
    logits[a] > logits[b] || (logits[a] === logits[b] && a < b);
  if (count >= n) {
    const all = Array.from({ length: n }, (_, i) => i);
    return all.sort((a, b) => (before(a, b) ? -1 : 1));
  }
  // heap[0] is the worst of the kept ids.
  const heap: number[] = [];
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let worst = i;
      if (l < heap.length && before(heap[worst], heap[l])) worst = l;
      if (r < heap.length && before(heap[worst], heap[r])) worst = r;
      if (worst === i) return;
      [heap[i], heap[worst]] = [heap[worst], heap[i]];
      i = worst;
    }
  };
  for (let id = 0; id < n; id++) {
    if (heap.length < count) {
      heap.push(id);
      for (let i = heap.length - 1; i > 0;) {
        const parent = (i - 1) >> 1;
        if (!before(heap[parent], heap[i])) break;
        [heap[i], heap[parent]] = [heap[parent], heap[i]];
        i = parent;
      }
    } else if (count > 0 && before(id, heap[0])) {
      heap[0] = id;
      down(0);
    }
  }
  return heap.sort((a, b) => (before(a, b) ? -1 : 1));
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
