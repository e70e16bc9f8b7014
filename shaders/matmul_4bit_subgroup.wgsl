// 4-bit matmuls for few rows (m <= 16: generation, small batches), where streaming W is the
// whole cost (see matmul_4bit.wgsl for the math):
//   forward_gemv:  Y[m, out] (=|+=) X[m, in] . W^T
//   backward_gemv: dX[m, in] (=|+=) dY[m, out] . W
// A workgroup is one subgroup (SG = the adapter's smallest subgroup size, so the driver cannot
// split it). A 256-entry table in workgroup memory turns each byte of packed codes into its two
// code values with one lookup.
// - forward: the workgroup owns R = 4 outputs (rows of W) for TM rows of X; lane l reads packed
//   words l, l + SG, ... of each W row (consecutive lanes, consecutive words) and subgroupAdd
//   sums the lanes' partial dot products.
// - backward: the workgroup owns CW packed words (8 CW columns) for TM rows of dY; lane l takes
//   word l % CW of rows l / CW, l / CW + SG / CW, ... of W, and subgroupShuffleXor folds the
//   SG / CW row phases together. This assumes the workgroup's invocations are lanes 0..SG-1 of
//   their subgroup, true of every driver we know; the shuffles pair lanes by
//   subgroup_invocation_id, which is also the lane id used to split the work.
// f32 arithmetic. Template: as matmul_4bit_common.wgsl, plus SG, TM, CW.
enable subgroups;

//!include matmul_4bit_common.wgsl

const SG: u32 = {{SG}}u;
const TM: u32 = {{TM}}u;
const CW: u32 = {{CW}}u;
const R: u32 = 4u;

// pair_lut[b] = (code value of b's high nibble, of its low nibble): element 2j is the high nibble
// of byte j.
var<workgroup> pair_lut: array<vec2f, 256>;

fn fill_pair_lut(li: u32) {
  for (var t = 0u; t < 256u / SG; t++) {
    let b = li + t * SG;
    pair_lut[b] = vec2f(Q_MAP[b >> 4u], Q_MAP[b & 15u]);
  }
  workgroupBarrier();
}

// The eight values of packed word w scaled by s, from the table.
fn unpack8_lut(w: u32, s: f32) -> QWeights8 {
  let b0 = pair_lut[w & 255u];
  let b1 = pair_lut[(w >> 8u) & 255u];
  let b2 = pair_lut[(w >> 16u) & 255u];
  let b3 = pair_lut[w >> 24u];
  return QWeights8(vec4f(b0, b1) * s, vec4f(b2, b3) * s);
}

// Weights of W's row starting at flattened element `row`, columns k..k+7 (k a multiple of 8).
fn row_weights8(row: u32, k: u32) -> QWeights8 {
  if (ALIGNED) {
    let e = row + k;
    return unpack8_lut(q_packed[e >> 3u], q_block_absmax(e >> p.block_shift));
  }
  return weights8(row, k);
}

@compute @workgroup_size(SG)
fn forward_gemv(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  fill_pair_lut(li);
  let o0 = (wg.y * p.groups_x + wg.x) * R;
  if (o0 >= p.n_out) {
    return;
  }
  let i0 = wg.z * TM;
  // Rows and outputs past the end read valid ones; their sums are not stored.
  var wrow: array<u32, R>;
  for (var r = 0u; r < R; r++) {
    wrow[r] = min(o0 + r, p.n_out - 1u) * p.n_in;
  }
  var xrow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    xrow[i] = min(i0 + i, p.m - 1u) * p.n_in;
  }
  var acc: array<vec4f, TM>; // acc[i][r]: Y[i0 + i, o0 + r]
  let words = (p.n_in + 7u) / 8u;
  // A uniform trip count: subgroupAdd below needs every lane in the same control flow.
  for (var w0 = 0u; w0 < words; w0 += SG) {
    let k = (w0 + li) * 8u;
    if (k < p.n_in) {
      var lo: array<vec4f, R>;
      var hi: array<vec4f, R>;
      for (var r = 0u; r < R; r++) {
        let u = row_weights8(wrow[r], k);
        lo[r] = u.lo;
        hi[r] = u.hi;
      }
      for (var i = 0u; i < TM; i++) {
        // Scalar loads (one binding view per entry point): consecutive, so they merge.
        var xa: vec4f;
        var xb: vec4f;
        let b = xrow[i] + k;
        if (ALIGNED) {
          xa = vec4f(src[b], src[b + 1u], src[b + 2u], src[b + 3u]);
          xb = vec4f(src[b + 4u], src[b + 5u], src[b + 6u], src[b + 7u]);
        } else {
          let r = xrow[i];
          xa = vec4f(src_or_zero(r, k), src_or_zero(r, k + 1u), src_or_zero(r, k + 2u),
            src_or_zero(r, k + 3u));
          xb = vec4f(src_or_zero(r, k + 4u), src_or_zero(r, k + 5u), src_or_zero(r, k + 6u),
            src_or_zero(r, k + 7u));
        }
        acc[i] += vec4f(
          dot(xa, lo[0]) + dot(xb, hi[0]),
          dot(xa, lo[1]) + dot(xb, hi[1]),
          dot(xa, lo[2]) + dot(xb, hi[2]),
          dot(xa, lo[3]) + dot(xb, hi[3]),
        );
      }
    }
  }
  for (var i = 0u; i < TM; i++) {
    let sum = subgroupAdd(acc[i]);
    // Lanes take turns storing.
    if (li == i % SG && i0 + i < p.m) {
      for (var r = 0u; r < R; r++) {
        if (o0 + r < p.n_out) {
          store((i0 + i) * p.n_out + o0 + r, sum[r]);
        }
      }
    }
  }
}

@compute @workgroup_size(SG)
fn backward_gemv(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_index) li: u32,
  @builtin(subgroup_invocation_id) lane: u32,
) {
  fill_pair_lut(li);
  let cw = lane % CW;
  let phase = lane / CW;
  let c0 = ((wg.y * p.groups_x + wg.x) * CW + cw) * 8u; // this lane's first column
  let i0 = wg.z * TM;
  let col_ok = c0 < p.n_in;
  let col = min(c0, p.n_in - 1u);
  var drow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    drow[i] = min(i0 + i, p.m - 1u) * p.n_out;
  }
  var acc: array<vec4f, 2u * TM>; // acc[2i], acc[2i + 1]: dX[i0 + i, c0 .. c0 + 7]
  for (var o0 = 0u; o0 < p.n_out; o0 += SG / CW) {
    let o = o0 + phase;
    if (o < p.n_out && col_ok) {
      let w = row_weights8(o * p.n_in, col);
      for (var i = 0u; i < TM; i++) {
        let d = src[drow[i] + o];
        acc[2u * i] += d * w.lo;
        acc[2u * i + 1u] += d * w.hi;
      }
    }
  }
  // Lanes holding the same column words differ by multiples of CW.
  for (var mask = CW; mask < SG; mask *= 2u) {
    for (var t = 0u; t < 2u * TM; t++) {
      acc[t] += subgroupShuffleXor(acc[t], mask);
    }
  }
  if (phase == 0u && col_ok) {
    for (var i = 0u; i < TM; i++) {
      if (i0 + i < p.m) {
        let base = (i0 + i) * p.n_in + c0;
        for (var j = 0u; j < 8u; j++) {
          if (c0 + j < p.n_in) {
            store(base + j, acc[2u * i + j / 4u][j % 4u]);
          }
        }
      }
    }
  }
}
