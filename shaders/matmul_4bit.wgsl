// Matmuls through a frozen bitsandbytes 4-bit weight W [out, in], dequantized in registers:
//   forward_*:  Y[m, out] (=|+=) X[m, in] . W^T
//   backward_*: dX[m, in] (=|+=) dY[m, out] . W
// Variants (src/kernels/matmul_4bit.ts picks one per adapter):
//   *_regblock: register tiles, no barriers (llvmpipe). Needs in % 8 == 0 (whole packed words
//     per row) and, backward, out % 4 == 0 (vec4 loads of dY); *_regblock_any takes any shape.
//   *_wide: larger register tiles for large m (llvmpipe): TM rows x OC outputs (forward) or
//     TM rows x NW packed words of columns (backward) per invocation. Need in % 8 == 0.
//   *_tiled: the activation tile and the dequantized W tile staged in workgroup memory (GPUs).
// Template: the dequant_4bit.wgsl parameters, ALIGNED (in % 8 == 0), TM (rows per invocation in
// the regblock and wide kernels), WG (their workgroup size), OC and NW (the wide kernels' widths).

//!include matmul_4bit_common.wgsl

const TM: u32 = {{TM}}u;
const WG: u32 = {{WG}}u;
const OC: u32 = {{OC}}u;
const NW: u32 = {{NW}}u;

// ---------------------------------------------------------------------------------------------
// Register-blocked forward (in % 8 == 0): workgroup (x, y) covers outputs [x*WG*4, +WG*4) and
// rows [y*TM, +TM); each invocation TM rows x 4 outputs, one packed word per W row a step.

@compute @workgroup_size(WG)
fn forward_regblock(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let o0 = (wg.x * WG + li) * 4u;
  let i0 = wg.y * TM;
  // Rows and outputs past the end load valid ones; their results are not stored.
  let in4 = p.n_in / 4u;
  var xrow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    xrow[i] = min(i0 + i, p.m - 1u) * in4;
  }
  let w0_row = min(o0, p.n_out - 1u) * p.n_in;
  let w1_row = min(o0 + 1u, p.n_out - 1u) * p.n_in;
  let w2_row = min(o0 + 2u, p.n_out - 1u) * p.n_in;
  let w3_row = min(o0 + 3u, p.n_out - 1u) * p.n_in;
  let block_mask = (1u << p.block_shift) - 1u;
  var s0 = 0.0;
  var s1 = 0.0;
  var s2 = 0.0;
  var s3 = 0.0;
  var acc: array<vec4f, TM>;
  for (var k = 0u; k < p.n_in; k += 8u) {
    // A row's absmax changes only at block starts.
    if (k == 0u || ((w0_row + k) & block_mask) == 0u) {
      s0 = q_block_absmax((w0_row + k) >> p.block_shift);
    }
    if (k == 0u || ((w1_row + k) & block_mask) == 0u) {
      s1 = q_block_absmax((w1_row + k) >> p.block_shift);
    }
    if (k == 0u || ((w2_row + k) & block_mask) == 0u) {
      s2 = q_block_absmax((w2_row + k) >> p.block_shift);
    }
    if (k == 0u || ((w3_row + k) & block_mask) == 0u) {
      s3 = q_block_absmax((w3_row + k) >> p.block_shift);
    }
    let w0 = q_unpack8(q_packed[(w0_row + k) >> 3u], s0);
    let w1 = q_unpack8(q_packed[(w1_row + k) >> 3u], s1);
    let w2 = q_unpack8(q_packed[(w2_row + k) >> 3u], s2);
    let w3 = q_unpack8(q_packed[(w3_row + k) >> 3u], s3);
    for (var i = 0u; i < TM; i++) {
      let r = xrow[i] + k / 4u;
      let xa = x4[r];
      let xb = x4[r + 1u];
      acc[i] += vec4f(
        dot(xa, w0.lo) + dot(xb, w0.hi),
        dot(xa, w1.lo) + dot(xb, w1.hi),
        dot(xa, w2.lo) + dot(xb, w2.hi),
        dot(xa, w3.lo) + dot(xb, w3.hi),
      );
    }
  }
  for (var i = 0u; i < TM; i++) {
    if (i0 + i < p.m) {
      let base = (i0 + i) * p.n_out;
      for (var j = 0u; j < 4u; j++) {
        if (o0 + j < p.n_out) {
          store(base + o0 + j, acc[i][j]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Register-blocked backward (in % 8 == 0, out % 4 == 0): workgroup (x, y) covers columns
// [x*WG*8, +WG*8) and rows [y*TM, +TM); each invocation TM rows x 8 columns (one packed word
// per W row), four rows of W a step against a vec4 of dY.

@compute @workgroup_size(WG)
fn backward_regblock(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let c0 = (wg.x * WG + li) * 8u;
  let i0 = wg.y * TM;
  let c = min(c0, p.n_in - 8u);
  let out4 = p.n_out / 4u;
  var drow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    drow[i] = min(i0 + i, p.m - 1u) * out4;
  }
  var acc: array<vec4f, TM * 2u>;
  for (var o = 0u; o < p.n_out; o += 4u) {
    let e0 = o * p.n_in + c;
    let e1 = e0 + p.n_in;
    let e2 = e1 + p.n_in;
    let e3 = e2 + p.n_in;
    let w0 = q_weights8(e0);
    let w1 = q_weights8(e1);
    let w2 = q_weights8(e2);
    let w3 = q_weights8(e3);
    for (var i = 0u; i < TM; i++) {
      let d = dy4[drow[i] + o / 4u];
      acc[2u * i] += d.x * w0.lo + d.y * w1.lo + d.z * w2.lo + d.w * w3.lo;
      acc[2u * i + 1u] += d.x * w0.hi + d.y * w1.hi + d.z * w2.hi + d.w * w3.hi;
    }
  }
  if (c0 < p.n_in) {
    for (var i = 0u; i < TM; i++) {
      if (i0 + i < p.m) {
        let base = (i0 + i) * p.n_in + c0;
        for (var j = 0u; j < 8u; j++) {
          store(base + j, acc[2u * i + j / 4u][j % 4u]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Wide register tiles (in % 8 == 0), for large m: more arithmetic per load than the regblock
// kernels, which llvmpipe turns into speed once m fills the rows. Rows, outputs and columns past
// the end load valid ones (clamped); their results are not stored.

// Forward: workgroup (x, y) covers outputs [x*WG*OC, +WG*OC) and rows [y*TM, +TM); each
// invocation TM rows x OC outputs, one packed word of each of its OC rows of W a step.
@compute @workgroup_size(WG)
fn forward_wide(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let o0 = (wg.x * WG + li) * OC;
  let i0 = wg.y * TM;
  let in4 = p.n_in / 4u;
  var xrow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    xrow[i] = min(i0 + i, p.m - 1u) * in4;
  }
  let block_mask = (1u << p.block_shift) - 1u;
  var wrow: array<u32, OC>;
  var s: array<f32, OC>;
  for (var j = 0u; j < OC; j++) {
    wrow[j] = min(o0 + j, p.n_out - 1u) * p.n_in;
    s[j] = q_block_absmax(wrow[j] >> p.block_shift);
  }
  var acc: array<array<f32, OC>, TM>;
  for (var k = 0u; k < p.n_in; k += 8u) {
    var wlo: array<vec4f, OC>;
    var whi: array<vec4f, OC>;
    for (var j = 0u; j < OC; j++) {
      let e = wrow[j] + k;
      // A row's absmax changes only at block starts (which need not align across rows).
      if ((e & block_mask) == 0u) {
        s[j] = q_block_absmax(e >> p.block_shift);
      }
      let u = q_unpack8(q_packed[e >> 3u], s[j]);
      wlo[j] = u.lo;
      whi[j] = u.hi;
    }
    for (var i = 0u; i < TM; i++) {
      let r = xrow[i] + k / 4u;
      let xa = x4[r];
      let xb = x4[r + 1u];
      for (var j = 0u; j < OC; j++) {
        acc[i][j] += dot(xa, wlo[j]) + dot(xb, whi[j]);
      }
    }
  }
  for (var i = 0u; i < TM; i++) {
    if (i0 + i < p.m) {
      let base = (i0 + i) * p.n_out;
      for (var j = 0u; j < OC; j++) {
        if (o0 + j < p.n_out) {
          store(base + o0 + j, acc[i][j]);
        }
      }
    }
  }
}

// Backward: workgroup (x, y) covers columns [x*WG*NW*8, +WG*NW*8) and rows [y*TM, +TM); each
// invocation TM rows x NW packed words (8*NW columns), one row of W a step.
@compute @workgroup_size(WG)
fn backward_wide(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let c0 = (wg.x * WG + li) * NW * 8u;
  let i0 = wg.y * TM;
  var col: array<u32, NW>;
  for (var t = 0u; t < NW; t++) {
    col[t] = min(c0 + 8u * t, p.n_in - 8u);
  }
  var drow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    drow[i] = min(i0 + i, p.m - 1u) * p.n_out;
  }
  var acc: array<array<vec4f, 2u * NW>, TM>;
  for (var o = 0u; o < p.n_out; o++) {
    let e = o * p.n_in;
    var w: array<vec4f, 2u * NW>;
    for (var t = 0u; t < NW; t++) {
      let u = q_weights8(e + col[t]);
      w[2u * t] = u.lo;
      w[2u * t + 1u] = u.hi;
    }
    for (var i = 0u; i < TM; i++) {
      let d = src[drow[i] + o];
      for (var t = 0u; t < 2u * NW; t++) {
        acc[i][t] += d * w[t];
      }
    }
  }
  for (var i = 0u; i < TM; i++) {
    if (i0 + i < p.m) {
      let base = (i0 + i) * p.n_in + c0;
      for (var t = 0u; t < NW; t++) {
        if (c0 + 8u * t < p.n_in) {
          for (var j = 0u; j < 8u; j++) {
            store(base + 8u * t + j, acc[i][2u * t + j / 4u][j % 4u]);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Register-blocked kernels for any shape (unaligned rows): 1-D grid, TM rows x 4 outputs
// (forward) or TM rows x 8 columns (backward) per invocation, scalar loads.

@compute @workgroup_size(WG)
fn forward_regblock_any(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let t = (wg.y * p.groups_x + wg.x) * WG + li;
  let o0 = (t % p.tiles) * 4u;
  let i0 = (t / p.tiles) * TM;
  if (i0 >= p.m) {
    return;
  }
  var xrow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    xrow[i] = min(i0 + i, p.m - 1u) * p.n_in;
  }
  let w0_row = min(o0, p.n_out - 1u) * p.n_in;
  let w1_row = min(o0 + 1u, p.n_out - 1u) * p.n_in;
  let w2_row = min(o0 + 2u, p.n_out - 1u) * p.n_in;
  let w3_row = min(o0 + 3u, p.n_out - 1u) * p.n_in;
  var acc: array<vec4f, TM>;
  for (var k = 0u; k < p.n_in; k += 8u) {
    let w0 = weights8(w0_row, k);
    let w1 = weights8(w1_row, k);
    let w2 = weights8(w2_row, k);
    let w3 = weights8(w3_row, k);
    for (var i = 0u; i < TM; i++) {
      let r = xrow[i];
      let xa = vec4f(
        src_or_zero(r, k),
        src_or_zero(r, k + 1u),
        src_or_zero(r, k + 2u),
        src_or_zero(r, k + 3u),
      );
      let xb = vec4f(
        src_or_zero(r, k + 4u),
        src_or_zero(r, k + 5u),
        src_or_zero(r, k + 6u),
        src_or_zero(r, k + 7u),
      );
      acc[i] += vec4f(
        dot(xa, w0.lo) + dot(xb, w0.hi),
        dot(xa, w1.lo) + dot(xb, w1.hi),
        dot(xa, w2.lo) + dot(xb, w2.hi),
        dot(xa, w3.lo) + dot(xb, w3.hi),
      );
    }
  }
  for (var i = 0u; i < TM; i++) {
    if (i0 + i < p.m) {
      let base = (i0 + i) * p.n_out;
      for (var j = 0u; j < 4u; j++) {
        if (o0 + j < p.n_out) {
          store(base + o0 + j, acc[i][j]);
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn backward_regblock_any(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let t = (wg.y * p.groups_x + wg.x) * WG + li;
  let c0 = (t % p.tiles) * 8u;
  let i0 = (t / p.tiles) * TM;
  if (i0 >= p.m) {
    return;
  }
  var drow: array<u32, TM>;
  for (var i = 0u; i < TM; i++) {
    drow[i] = min(i0 + i, p.m - 1u) * p.n_out;
  }
  var acc: array<vec4f, TM * 2u>;
  for (var o = 0u; o < p.n_out; o++) {
    let w = weights8(o * p.n_in, c0);
    for (var i = 0u; i < TM; i++) {
      let d = src[drow[i] + o];
      acc[2u * i] += d * w.lo;
      acc[2u * i + 1u] += d * w.hi;
    }
  }
  for (var i = 0u; i < TM; i++) {
    if (i0 + i < p.m) {
      let base = (i0 + i) * p.n_in;
      for (var j = 0u; j < 8u; j++) {
        if (c0 + j < p.n_in) {
          store(base + c0 + j, acc[2u * i + j / 4u][j % 4u]);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Workgroup-tiled variants: 16x16 invocations, a 64x64 output tile, each invocation 4x4
// outputs strided by 16 (conflict-free workgroup-memory reads). The W tile is dequantized
// once per workgroup, one packed word per invocation.

const T_DIM: u32 = 64u;
const T_K: u32 = 32u;
// Staged tiles, k-major: a_tile[kk * 64 + row], b_tile[kk * 64 + col].
var<workgroup> a_tile: array<f32, 2048>;
var<workgroup> b_tile: array<f32, 2048>;

//!include matmul_4bit_tiled_store.wgsl

fn tiled_accumulate(acc: ptr<function, array<vec4f, 4>>, lx: u32, ly: u32) {
  for (var kk = 0u; kk < T_K; kk++) {
    let av = vec4f(
      a_tile[kk * T_DIM + ly],
      a_tile[kk * T_DIM + ly + 16u],
      a_tile[kk * T_DIM + ly + 32u],
      a_tile[kk * T_DIM + ly + 48u],
    );
    let bv = vec4f(
      b_tile[kk * T_DIM + lx],
      b_tile[kk * T_DIM + lx + 16u],
      b_tile[kk * T_DIM + lx + 32u],
      b_tile[kk * T_DIM + lx + 48u],
    );
    (*acc)[0] += av.x * bv;
    (*acc)[1] += av.y * bv;
    (*acc)[2] += av.z * bv;
    (*acc)[3] += av.w * bv;
  }
}

@compute @workgroup_size(16, 16)
fn forward_tiled(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let tile = wg.y * p.groups_x + wg.x;
  let c0 = (tile % p.tiles) * T_DIM; // outputs (rows of W)
  let i0 = (tile / p.tiles) * T_DIM; // rows of X
  // Staging: X tile row li/4, columns (li%4)*8..+7; W tile row li/4, the same columns.
  let sr = li / 4u;
  let sk = (li % 4u) * 8u;
  let x_ok = i0 + sr < p.m;
  let x_row = min(i0 + sr, p.m - 1u) * p.n_in;
  let w_ok = c0 + sr < p.n_out;
  let w_row = min(c0 + sr, p.n_out - 1u) * p.n_in;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < p.n_in; k0 += T_K) {
    let k = k0 + sk;
    var w = QWeights8(vec4f(0.0), vec4f(0.0));
    if (w_ok && k < p.n_in) {
      w = weights8(w_row, k);
    }
    for (var c = 0u; c < 4u; c++) {
      b_tile[(sk + c) * T_DIM + sr] = w.lo[c];
      b_tile[(sk + c + 4u) * T_DIM + sr] = w.hi[c];
    }
    for (var c = 0u; c < 8u; c++) {
      var v = 0.0;
      if (x_ok && k + c < p.n_in) {
        v = src[x_row + k + c];
      }
      a_tile[(sk + c) * T_DIM + sr] = v;
    }
    workgroupBarrier();
    tiled_accumulate(&acc, lid.x, lid.y);
    workgroupBarrier();
  }
  tiled_store(i0, c0, lid.x, lid.y, p.n_out, acc);
}

@compute @workgroup_size(16, 16)
fn backward_tiled(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let tile = wg.y * p.groups_x + wg.x;
  let c0 = (tile % p.tiles) * T_DIM; // columns of dX (and of W)
  let i0 = (tile / p.tiles) * T_DIM; // rows of dY
  // Staging: dY tile row li/4, W rows (li%4)*8..+7; W tile row li/8, word li%8.
  let sr = li / 4u;
  let so = (li % 4u) * 8u;
  let d_ok = i0 + sr < p.m;
  let d_row = min(i0 + sr, p.m - 1u) * p.n_out;
  let wr = li / 8u;
  let wk = c0 + (li % 8u) * 8u;
  var acc: array<vec4f, 4>;
  for (var o0 = 0u; o0 < p.n_out; o0 += T_K) {
    let o = o0 + wr;
    var w = QWeights8(vec4f(0.0), vec4f(0.0));
    if (o < p.n_out && wk < p.n_in) {
      w = weights8(o * p.n_in, wk);
    }
    let wb = wr * T_DIM + (li % 8u) * 8u;
    for (var c = 0u; c < 4u; c++) {
      b_tile[wb + c] = w.lo[c];
      b_tile[wb + c + 4u] = w.hi[c];
    }
    for (var c = 0u; c < 8u; c++) {
      var v = 0.0;
      if (d_ok && o0 + so + c < p.n_out) {
        v = src[d_row + o0 + so + c];
      }
      a_tile[(so + c) * T_DIM + sr] = v;
    }
    workgroupBarrier();
    tiled_accumulate(&acc, lid.x, lid.y);
    workgroupBarrier();
  }
  tiled_store(i0, c0, lid.x, lid.y, p.n_in, acc);
}
