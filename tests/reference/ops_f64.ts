/**
 * Float64 CPU references of the single ops behind the LoRA training engine, written straight
 * from the math with plain loops (no shared code with src/kernels): matmul, RMSNorm forward and
 * backward, RoPE inverse frequencies (default, linear, llama3 as in transformers'
 * modeling_rope_utils.py) and rotation, SwiGLU forward and backward. Inputs are any numeric
 * arrays (f32 data from the tests); outputs are Float64Array.
 */

type Vec = ArrayLike<number>;

/** C[m,n] = op(A)·op(B); A is [m,k] ([k,m] when transA), B is [k,n] ([n,k] when transB). */
export function matmulF64(
  a: Vec,
  b: Vec,
  m: number,
  n: number,
  k: number,
  transA = false,
  transB = false,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) {
        const av = transA ? a[q * m + i] : a[i * k + q];
        const bv = transB ? b[j * k + q] : b[q * n + j];
        s += av * bv;
      }
      c[i * n + j] = s;
    }
  }
  return c;
}

/** y = x / sqrt(mean(x²) + eps) * weight per row; rstd = 1/sqrt(mean(x²) + eps). */
export function rmsnormF64(
  x: Vec,
  weight: Vec,
  rows: number,
  dim: number,
  eps: number,
): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * dim);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[r * dim + j] * x[r * dim + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    rstd[r] = inv;
    for (let j = 0; j < dim; j++) y[r * dim + j] = x[r * dim + j] * inv * weight[j];
  }
  return { y, rstd };
}

/**
 * dL/dx of RMSNorm given dL/dy (weight frozen). With s = mean(x²)+eps and y_i = x_i s^-1/2 w_i:
 * dy_i/dx_j = w_i (δ_ij s^-1/2 - x_i x_j s^-3/2 / dim), so
 * dx_j = s^-1/2 w_j dy_j - x_j s^-3/2 / dim · sum_i dy_i w_i x_i (one pass per row, not dim²:
 * the Llama reference runs it at hidden 4096).
 */
export function rmsnormBackwardF64(
  x: Vec,
  weight: Vec,
  dy: Vec,
  rows: number,
  dim: number,
  eps: number,
): Float64Array {
  const dx = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    let dot = 0;
    for (let i = 0; i < dim; i++) dot += dy[o + i] * weight[i] * x[o + i];
    for (let j = 0; j < dim; j++) {
      dx[o + j] = inv * weight[j] * dy[o + j] - (inv * inv * inv * x[o + j] * dot) / dim;
    }
  }
  return dx;
}

export type RopeScalingF64 =
  | { type: "linear"; factor: number }
  | {
    type: "llama3";
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositionEmbeddings: number;
  };

/** inv_freq in float64, following transformers' _compute_{default,linear_scaling,llama3}_... */
export function ropeInvFreqF64(
  headDim: number,
  theta: number,
  scaling?: RopeScalingF64,
): Float64Array {
  const out = new Float64Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) {
    let f = 1 / theta ** ((2 * i) / headDim);
    if (scaling?.type === "linear") f = f / scaling.factor;
    if (scaling?.type === "llama3") {
      const wavelen = (2 * Math.PI) / f;
      const lowWavelen = scaling.originalMaxPositionEmbeddings / scaling.lowFreqFactor;
      const highWavelen = scaling.originalMaxPositionEmbeddings / scaling.highFreqFactor;
      if (wavelen > lowWavelen) {
        f = f / scaling.factor;
      } else if (wavelen >= highWavelen) {
        const smooth = (scaling.originalMaxPositionEmbeddings / wavelen - scaling.lowFreqFactor) /
          (scaling.highFreqFactor - scaling.lowFreqFactor);
        f = (1 - smooth) * f / scaling.factor + smooth * f;
      }
    }
    out[i] = f;
  }
  return out;
}

/**
 * RoPE on x [rows, heads*headDim], split halves: for pair (i, i+d/2) of every head,
 * (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with angle = position * invFreq[i], the
 * negative angle when inverse. The angle is the float32 product, as torch forms it from
 * float32 inv_freq and positions (`angleF32 = false` takes the float64 product instead).
 */
export function ropeF64(
  x: Vec,
  positions: Vec,
  invFreq: Vec,
  rows: number,
  heads: number,
  headDim: number,
  inverse = false,
  angleF32 = true,
): Float64Array {
  const half = headDim / 2;
  const y = Float64Array.from(x);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const base = (r * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const exact = positions[r] * invFreq[i];
        const angle = (angleF32 ? Math.fround(exact) : exact) * (inverse ? -1 : 1);
        const x1 = x[base + i];
        const x2 = x[base + half + i];
        y[base + i] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
        y[base + half + i] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
      }
    }
  }
  return y;
}

function sigmoidF64(g: number): number {
  return 1 / (1 + Math.exp(-g));
}

/** out = silu(gate)·up = gate·sigmoid(gate)·up */
export function swigluF64(gate: Vec, up: Vec): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = gate[i] * sigmoidF64(gate[i]) * up[i];
  return out;
}

/** d/dgate and d/dup of sum(dout · swiglu(gate, up)). */
export function swigluBackwardF64(
  gate: Vec,
  up: Vec,
  dout: Vec,
): { dgate: Float64Array; dup: Float64Array } {
  const dgate = new Float64Array(gate.length);
  const dup = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const s = sigmoidF64(g);
    // d(g·s)/dg = s + g·s·(1-s)
    dgate[i] = dout[i] * up[i] * (s + g * s * (1 - s));
    dup[i] = dout[i] * g * s;
  }
  return { dgate, dup };
}

/** Central difference of f at x along coordinate i (x is left unchanged). */
export function centralDifference(
  f: (x: Float64Array) => number,
  x: Float64Array,
  i: number,
  h = 1e-6,
): number {
  const saved = x[i];
  x[i] = saved + h;
  const plus = f(x);
  x[i] = saved - h;
  const minus = f(x);
  x[i] = saved;
  return (plus - minus) / (2 * h);
}

/** sum_i a_i b_i */
export function dotF64(a: Vec, b: Vec): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
