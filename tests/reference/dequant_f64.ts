/**
 * Float64 reference for the 4-bit matmul kernels, written from ../../../shared/REFERENCE.md
 * §1-4 independently of src/quant: the NF4/FP4 tables, the signed dynamic map, a dequantizer
 * (absmax through double quant in float32, as bitsandbytes computes it) and plain f64 matmuls.
 */

/** REFERENCE §1, as written there (index = code), rounded to float32 like bnb's tensor. */
export const NF4_TABLE: Float32Array = new Float32Array([
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
]);

/** REFERENCE §2: bit 3 the sign, low bits index [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12. */
export const FP4_TABLE: Float32Array = (() => {
  const mags = [0, 0.0625, 8, 12, 4, 6, 2, 3];
  const t = new Float32Array(16);
  for (let c = 0; c < 16; c++) t[c] = ((c & 8) ? -1 : 1) * mags[c & 7] / 12;
  return t;
})();

/** REFERENCE §4: create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8). */
export function signedDynamicMap(): Float32Array {
  const data: number[] = [];
  for (let i = 0; i <= 6; i++) {
    const n = 2 ** i + 1;
    const b = new Float32Array(n);
    for (let j = 0; j < n; j++) b[j] = 0.1 + (0.9 * j) / (n - 1);
    for (let j = 0; j + 1 < n; j++) {
      const mean = Math.fround((b[j] + b[j + 1]) / 2);
      data.push(10 ** (i - 6) * mean, -(10 ** (i - 6)) * mean);
    }
  }
  data.push(0, 1.0);
  while (data.length < 256) data.push(0);
  return new Float32Array(data.sort((a, b) => a - b));
}

/** The fields of a quantized weight the reference reads (the shape of src/quant's state). */
export interface QuantWeightRef {
  blocksize: number;
  shape: readonly number[];
  packed: Uint8Array;
  absmax?: Float32Array;
  dq?: { codes: Uint8Array; nestedAbsmax: Float32Array; offset: number; nestedMap: Float32Array };
  quantMap: Float32Array;
}

/** Per-block absmax; with double quant `nestedMap[code] * nestedAbsmax[b/256] + offset` in f32. */
export function blockAbsmax(q: QuantWeightRef): Float64Array {
  if (!q.dq) return Float64Array.from(q.absmax!);
  const { codes, nestedAbsmax, offset, nestedMap } = q.dq;
  const out = new Float64Array(codes.length);
  for (let b = 0; b < codes.length; b++) {
    out[b] = Math.fround(Math.fround(nestedMap[codes[b]] * nestedAbsmax[b >> 8]) + offset);
  }
  return out;
}

/** W [out, in] in float64: quantMap[nibble(e)] * absmax[e / blocksize]. */
export function dequantizeF64(q: QuantWeightRef): Float64Array {
  const n = q.shape[0] * q.shape[1];
  const absmax = blockAbsmax(q);
  const w = new Float64Array(n);
  for (let e = 0; e < n; e++) {
    const byte = q.packed[e >> 1];
    const nibble = (e & 1) === 0 ? byte >> 4 : byte & 15;
    w[e] = q.quantMap[nibble] * absmax[Math.floor(e / q.blocksize)];
  }
  return w;
}

/** Y[m, out] = X[m, in] . W^T. */
export function matmulXWt(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  m: number,
  nIn: number,
  nOut: number,
): Float64Array {
  const y = new Float64Array(m * nOut);
  for (let i = 0; i < m; i++) {
    for (let o = 0; o < nOut; o++) {
      let s = 0;
      for (let k = 0; k < nIn; k++) s += x[i * nIn + k] * w[o * nIn + k];
      y[i * nOut + o] = s;
    }
  }
  return y;
}

/** dX[m, in] = dY[m, out] . W. */
export function matmulDyW(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  m: number,
  nIn: number,
  nOut: number,
): Float64Array {
  const dx = new Float64Array(m * nIn);
  for (let i = 0; i < m; i++) {
    for (let o = 0; o < nOut; o++) {
      const d = dy[i * nOut + o];
      for (let k = 0; k < nIn; k++) dx[i * nIn + k] += d * w[o * nIn + k];
    }
  }
  return dx;
}
