/**
 * Float64 reference of the bitsandbytes 32-bit AdamW step (../../../shared/REFERENCE.md §9, the
 * CUDA kernel `kOptimizer32bit2State`, case ADAM) and of torch.nn.utils.clip_grad_norm_ with the
 * L2 norm. bitsandbytes keeps its state in float32; this reference keeps it in float64, so tests
 * compare with a float32 tolerance.
 */

export interface AdamWHyper {
  lr: number;
  /** default 0.9 */
  beta1?: number;
  /** default 0.999 */
  beta2?: number;
  /** default 1e-8 */
  eps?: number;
  /** default 0 */
  weightDecay?: number;
}

export interface AdamWState {
  /** first moment, same length as the parameter */
  m: Float64Array;
  /** second moment */
  v: Float64Array;
  /** steps taken so far; adamwStep increments it before use, so the first step runs with t = 1 */
  step: number;
}

export function newAdamWState(n: number): AdamWState {
  return { m: new Float64Array(n), v: new Float64Array(n), step: 0 };
}

/**
 * One AdamW step in place, exactly as bitsandbytes' 32-bit kernel orders it:
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   c1 = 1 - b1^t;  c2 = sqrt(1 - b2^t)
 *   p = p - lr (c2/c1) m / (sqrt(v) + eps c2)
 *   p = p (1 - lr wd)          (decoupled decay, after the update, only when wd > 0)
 */
export function adamwStep(
  p: Float64Array,
  g: Float64Array,
  state: AdamWState,
  hyper: AdamWHyper,
): void {
  if (g.length !== p.length || state.m.length !== p.length || state.v.length !== p.length) {
    throw new Error(
      `adamwStep: lengths differ: param ${p.length}, grad ${g.length}, ` +
        `m ${state.m.length}, v ${state.v.length}`,
    );
  }
  const b1 = hyper.beta1 ?? 0.9;
  const b2 = hyper.beta2 ?? 0.999;
  const eps = hyper.eps ?? 1e-8;
  const wd = hyper.weightDecay ?? 0;
  const lr = hyper.lr;
  state.step += 1;
  const t = state.step;
  const c1 = 1 - Math.pow(b1, t);
  const c2 = Math.sqrt(1 - Math.pow(b2, t));
  const stepSize = lr * c2 / c1;
  for (let i = 0; i < p.length; i++) {
    state.m[i] = b1 * state.m[i] + (1 - b1) * g[i];
    state.v[i] = b2 * state.v[i] + (1 - b2) * g[i] * g[i];
    p[i] = p[i] - stepSize * state.m[i] / (Math.sqrt(state.v[i]) + eps * c2);
    if (wd > 0) p[i] = p[i] * (1 - lr * wd);
  }
}

/**
 * Global L2 gradient clipping as torch.nn.utils.clip_grad_norm_ (norm_type 2), which the HF Trainer
 * applies before the optimizer step: totalNorm = sqrt(sum of all squared entries),
 * scale = min(1, maxNorm / (totalNorm + 1e-6)), and every gradient is multiplied by scale in place
 * (torch multiplies unconditionally, also when scale is 1). Returns the norm before clipping.
 */
export function clipByGlobalNorm(
  grads: Iterable<Float64Array>,
  maxNorm: number,
): { totalNorm: number; scale: number } {
  const list = [...grads];
  let ss = 0;
  for (const g of list) for (let i = 0; i < g.length; i++) ss += g[i] * g[i];
  const totalNorm = Math.sqrt(ss);
  const scale = Math.min(1, maxNorm / (totalNorm + 1e-6));
  for (const g of list) for (let i = 0; i < g.length; i++) g[i] *= scale;
  return { totalNorm, scale };
}
