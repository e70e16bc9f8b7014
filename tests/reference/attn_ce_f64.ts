/**
 * Float64 references in plain loops for the training kernels: causal GQA attention with packed
 * segments (forward and backward), lm_head + cross-entropy (per-row loss, argmax, d/dh), the
 * bitsandbytes 32-bit AdamW step and the global gradient norm with torch's clip scale.
 * Written from the formulas (../../../shared/REFERENCE.md §7, §9), independent of the shaders.
 */

export interface AttnShape {
  batchSize: number;
  seq: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** Token i of batch row b attends to token j of that row iff j <= i and their segments match. */
function visible(segments: ArrayLike<number>, s: AttnShape, b: number, i: number, j: number) {
  return j <= i && segments[b * s.seq + j] === segments[b * s.seq + i];
}

function qIndex(s: AttnShape, b: number, t: number, h: number, d: number): number {
  return ((b * s.seq + t) * s.heads + h) * s.headDim + d;
}

function kvIndex(s: AttnShape, b: number, t: number, g: number, d: number): number {
  return ((b * s.seq + t) * s.kvHeads + g) * s.headDim + d;
}

/**
 * The softmax row of query i of batch row b, head h: probs[j] for j <= i (0 where masked), and
 * lse = log sum_j exp(scale q_i.k_j) over the visible keys. O(seq) memory, so long sequences fit.
 */
function softmaxRow(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  segments: ArrayLike<number>,
  s: AttnShape,
  b: number,
  h: number,
  i: number,
): { probs: Float64Array; lse: number } {
  const g = Math.floor(h / (s.heads / s.kvHeads));
  const scale = 1 / Math.sqrt(s.headDim);
  const scores = new Float64Array(i + 1).fill(-Infinity);
  let max = -Infinity;
  for (let j = 0; j <= i; j++) {
    if (!visible(segments, s, b, i, j)) continue;
    let dot = 0;
    for (let d = 0; d < s.headDim; d++) dot += q[qIndex(s, b, i, h, d)] * k[kvIndex(s, b, j, g, d)];
    scores[j] = dot * scale;
    max = Math.max(max, scores[j]);
  }
  let sum = 0;
  for (let j = 0; j <= i; j++) if (scores[j] > -Infinity) sum += Math.exp(scores[j] - max);
  const probs = new Float64Array(i + 1);
  for (let j = 0; j <= i; j++) {
    probs[j] = scores[j] > -Infinity ? Math.exp(scores[j] - max) / sum : 0;
  }
  return { probs, lse: max + Math.log(sum) };
}

/**
 * out [batch*seq, heads*headDim] = softmax(scale q k^T, masked) v, row by row; lse
 * [batch*seq, heads] the log-sum-exp of each query's visible scaled scores.
 */
export function attentionForwardF64(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  segments: ArrayLike<number>,
  s: AttnShape,
): { out: Float64Array; lse: Float64Array } {
  const { batchSize, seq, heads, kvHeads, headDim } = s;
  const group = heads / kvHeads;
  const out = new Float64Array(batchSize * seq * heads * headDim);
  const lse = new Float64Array(batchSize * seq * heads);
  for (let b = 0; b < batchSize; b++) {
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / group);
      for (let i = 0; i < seq; i++) {
        const row = softmaxRow(q, k, segments, s, b, h, i);
        lse[(b * seq + i) * heads + h] = row.lse;
        for (let j = 0; j <= i; j++) {
          const p = row.probs[j];
          if (p === 0) continue;
          for (let d = 0; d < headDim; d++) {
            out[qIndex(s, b, i, h, d)] += p * v[kvIndex(s, b, j, g, d)];
          }
        }
      }
    }
  }
  return { out, lse };
}

/**
 * Gradients of sum(out * dout) with respect to q, k, v (k and v summed over their query heads),
 * from the softmax Jacobian row by row: dP_ij = dout_i . v_j, dS_ij = P_ij (dP_ij - sum_l P_il
 * dP_il), dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i, dv_j = sum_i P_ij dout_i.
 */
export function attentionBackwardF64(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  segments: ArrayLike<number>,
  dout: ArrayLike<number>,
  s: AttnShape,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { batchSize, seq, heads, kvHeads, headDim } = s;
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let b = 0; b < batchSize; b++) {
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / group);
      for (let i = 0; i < seq; i++) {
        const { probs } = softmaxRow(q, k, segments, s, b, h, i);
        const dp = new Float64Array(i + 1);
        let rowDot = 0;
        for (let j = 0; j <= i; j++) {
          if (probs[j] === 0) continue;
          let acc = 0;
          for (let d = 0; d < headDim; d++) {
            acc += dout[qIndex(s, b, i, h, d)] * v[kvIndex(s, b, j, g, d)];
          }
          dp[j] = acc;
          rowDot += probs[j] * acc;
        }
        for (let j = 0; j <= i; j++) {
          const p = probs[j];
          if (p === 0) continue;
          const ds = p * (dp[j] - rowDot);
          for (let d = 0; d < headDim; d++) {
            dv[kvIndex(s, b, j, g, d)] += p * dout[qIndex(s, b, i, h, d)];
            dq[qIndex(s, b, i, h, d)] += scale * ds * k[kvIndex(s, b, j, g, d)];
            dk[kvIndex(s, b, j, g, d)] += scale * ds * q[qIndex(s, b, i, h, d)];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * logits = h W^T; per row: loss = logsumexp(logits) - logits[label] (0 where label is -100),
 * correct = argmax == label (first maximum), dh = d(sum(loss) * gradScale)/dh.
 */
export function lmHeadCrossEntropyF64(
  h: ArrayLike<number>,
  weight: ArrayLike<number>,
  labels: ArrayLike<number>,
  rows: number,
  hidden: number,
  vocab: number,
  gradScale = 1,
): { loss: Float64Array; correct: Uint32Array; dh: Float64Array; logits: Float64Array } {
  const loss = new Float64Array(rows);
  const correct = new Uint32Array(rows);
  const dh = new Float64Array(rows * hidden);
  const logits = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < vocab; c++) {
      let acc = 0;
      for (let x = 0; x < hidden; x++) acc += h[r * hidden + x] * weight[c * hidden + x];
      logits[r * vocab + c] = acc;
    }
    const label = labels[r];
    if (label === -100) continue;
    let max = -Infinity;
    let arg = -1;
    for (let c = 0; c < vocab; c++) {
      if (logits[r * vocab + c] > max) {
        max = logits[r * vocab + c];
        arg = c;
      }
    }
    let sum = 0;
    for (let c = 0; c < vocab; c++) sum += Math.exp(logits[r * vocab + c] - max);
    loss[r] = Math.log(sum) + max - logits[r * vocab + label];
    correct[r] = arg === label ? 1 : 0;
    for (let c = 0; c < vocab; c++) {
      const dl = (Math.exp(logits[r * vocab + c] - max) / sum - (c === label ? 1 : 0)) * gradScale;
      for (let x = 0; x < hidden; x++) dh[r * hidden + x] += dl * weight[c * hidden + x];
    }
  }
  return { loss, correct, dh, logits };
}

export interface AdamWRefHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One bitsandbytes 32-bit AdamW step in place at step t (>= 1), grad multiplied by gradScale. */
export function adamwStepF64(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  t: number,
  hp: AdamWRefHyper,
  gradScale = 1,
): void {
  const c1 = 1 - Math.pow(hp.beta1, t);
  const c2 = Math.sqrt(1 - Math.pow(hp.beta2, t));
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * gradScale;
    m[i] = hp.beta1 * m[i] + (1 - hp.beta1) * gi;
    v[i] = hp.beta2 * v[i] + (1 - hp.beta2) * gi * gi;
    p[i] -= (hp.lr * c2 / c1) * m[i] / (Math.sqrt(v[i]) + hp.eps * c2);
    if (hp.weightDecay > 0) p[i] *= 1 - hp.lr * hp.weightDecay;
  }
}

/** L2 norm over all tensors and torch.nn.utils.clip_grad_norm_'s scale (1 when maxNorm is 0). */
export function globalNormF64(
  tensors: ArrayLike<number>[],
  maxNorm: number,
): { norm: number; clipScale: number } {
  let ss = 0;
  for (const t of tensors) for (let i = 0; i < t.length; i++) ss += t[i] * t[i];
  const norm = Math.sqrt(ss);
  const clipScale = maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
  return { norm, clipScale };
}
