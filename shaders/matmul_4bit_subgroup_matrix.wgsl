// 4-bit matmuls on subgroup matrices (Dawn's chromium_experimental_subgroup_matrix, the tensor
// cores), f16 x f16 -> f32 (see matmul_4bit.wgsl for the math):
//   forward_sm:  Y[m, out] (=|+=) X[m, in] . W^T
//   backward_sm: dX[m, in] (=|+=) dY[m, out] . W
// As matmul_subgroup_matrix.wgsl: a workgroup is one subgroup (WG = the adapter's
// maxSubgroupSize) owning a TILE_M x TILE_N output tile as RM x RN result matrices; per KT-deep
// step it stages the activation tile and a tile of W dequantized to f16 in workgroup memory
// (zeros past the edges), then runs RM x RN x (KT / SM_K) multiply-adds; results leave through
// c_tile one row of matrices at a time (accumulate and the edges as plain stores). W's tile is
// dequantized once per workgroup and serves all TILE_M rows. No subgroup builtins here: one
// NVIDIA driver crashes when they share a shader with subgroup matrices.
//   forward:  left = X [TILE_M][KT]; right = W^T, staged as W's rows [TILE_N][KT] and loaded
//             column-major (element [k, n] at n * B_STRIDE_ROWS + k).
//   backward: left = dY [TILE_M][KT]; right = W [KT][TILE_N], row-major.
// Template: as matmul_4bit_common.wgsl, plus the plan of src/kernels/matmul_features.ts
// (SM_M, SM_N, SM_K, RM, RN, KT, WG, A_STRIDE, B_STRIDE_ROWS, B_STRIDE_COLS, C_STRIDE, A_LEN,
// B_LEN, C_LEN).
enable f16;
enable chromium_experimental_subgroup_matrix;

//!include matmul_4bit_common.wgsl

const SM_M = {{SM_M}};
const SM_N = {{SM_N}};
const SM_K = {{SM_K}};
const RM = {{RM}};
const RN = {{RN}};
const KT = {{KT}};
const WG = {{WG}};
const TILE_M = RM * SM_M;
const TILE_N = RN * SM_N;
const A_STRIDE = {{A_STRIDE}};
const B_STRIDE_ROWS = {{B_STRIDE_ROWS}};
const B_STRIDE_COLS = {{B_STRIDE_COLS}};
const C_STRIDE = {{C_STRIDE}};
const A_LEN = {{A_LEN}};
const B_LEN = {{B_LEN}};
const C_LEN = {{C_LEN}};

alias SmLeft = subgroup_matrix_left<f16, SM_K, SM_M>;
alias SmRight = subgroup_matrix_right<f16, SM_N, SM_K>;
alias SmResult = subgroup_matrix_result<f32, SM_N, SM_M>;

var<workgroup> a_tile: array<f16, A_LEN>; // activations [TILE_M][A_STRIDE]
var<workgroup> b_tile: array<f16, B_LEN>; // W: [TILE_N][B_STRIDE_ROWS] or [KT][B_STRIDE_COLS]
var<workgroup> c_tile: array<f32, C_LEN>; // one row of result matrices, [SM_M][C_STRIDE]

// Activation rows i0.. (row length `len`), reduction columns k0..: coalesced along the row.
fn stage_activations(li: u32, i0: u32, k0: u32, len: u32) {
  for (var t = 0u; t < TILE_M * KT / WG; t++) {
    let e = li + t * WG;
    let r = e / KT;
    let c = e % KT;
    var v = 0.0h;
    if (i0 + r < p.m && k0 + c < len) {
      v = f16(src[(i0 + r) * len + k0 + c]);
    }
    a_tile[r * A_STRIDE + c] = v;
  }
}

// Writes the eight weights of columns kc..kc+7 as f16 at b_tile[at..at+7], zeros past `limit`.
fn put_weights8(at: u32, w: QWeights8, first: u32, limit: u32) {
  for (var c = 0u; c < 4u; c++) {
    b_tile[at + c] = select(0.0h, f16(w.lo[c]), first + c < limit);
    b_tile[at + c + 4u] = select(0.0h, f16(w.hi[c]), first + c + 4u < limit);
  }
}

// The epilogue of both entry points, after c_tile holds rows [i, i + SM_M) of the tile (row
// block r): stores them into an [m, n_cols] output, skipping rows and columns past the edges.
fn store_row_block(li: u32, i: u32, c0: u32, n_cols: u32) {
  for (var t = 0u; t < SM_M * TILE_N / WG; t++) {
    let e = li + t * WG;
    let row = i + e / TILE_N;
    let col = c0 + e % TILE_N;
    if (row < p.m && col < n_cols) {
      store(row * n_cols + col, c_tile[(e / TILE_N) * C_STRIDE + e % TILE_N]);
    }
  }
}

// The subgroup-matrix calls stay in the entry points' bodies (no matrices through pointers).
@compute @workgroup_size(WG)
fn forward_sm(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let tile = wg.y * p.groups_x + wg.x;
  let c0 = (tile % p.tiles) * TILE_N; // outputs (rows of W)
  let i0 = (tile / p.tiles) * TILE_M; // rows of X
  var acc: array<SmResult, RM * RN>;
  for (var k0 = 0u; k0 < p.n_in; k0 += KT) {
    stage_activations(li, i0, k0, p.n_in);
    // W rows c0.., packed words of KT columns: consecutive invocations, consecutive words.
    for (var t = 0u; t < TILE_N * KT / 8u / WG; t++) {
      let e = li + t * WG;
      let n = e / (KT / 8u);
      let kc = (e % (KT / 8u)) * 8u;
      var w = QWeights8(vec4f(0.0), vec4f(0.0));
      let k = k0 + kc;
      if (c0 + n < p.n_out && k < p.n_in) {
        w = weights8((c0 + n) * p.n_in, k);
      }
      put_weights8(n * B_STRIDE_ROWS + kc, w, k, p.n_in);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < KT; kk += SM_K) {
      var left: array<SmLeft, RM>;
      for (var r = 0u; r < RM; r++) {
        left[r] = subgroupMatrixLoad<SmLeft, row_major>(&a_tile, r * SM_M * A_STRIDE + kk, A_STRIDE);
      }
      for (var c = 0u; c < RN; c++) {
        let right = subgroupMatrixLoad<SmRight, col_major>(&b_tile, c * SM_N * B_STRIDE_ROWS + kk, B_STRIDE_ROWS);
        for (var r = 0u; r < RM; r++) {
          acc[r * RN + c] = subgroupMatrixMultiplyAccumulate(left[r], right, acc[r * RN + c]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < RM; r++) {
    for (var c = 0u; c < RN; c++) {
      subgroupMatrixStore<row_major>(&c_tile, c * SM_N, acc[r * RN + c], C_STRIDE);
    }
    workgroupBarrier();
    store_row_block(li, i0 + r * SM_M, c0, p.n_out);
    workgroupBarrier();
  }
}

@compute @workgroup_size(WG)
fn backward_sm(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let tile = wg.y * p.groups_x + wg.x;
  let c0 = (tile % p.tiles) * TILE_N; // columns of dX (and of W)
  let i0 = (tile / p.tiles) * TILE_M; // rows of dY
  var acc: array<SmResult, RM * RN>;
  for (var o0 = 0u; o0 < p.n_out; o0 += KT) {
    stage_activations(li, i0, o0, p.n_out);
    // W rows o0.. (KT of them), packed words of TILE_N columns.
    for (var t = 0u; t < KT * TILE_N / 8u / WG; t++) {
      let e = li + t * WG;
      let o = e / (TILE_N / 8u);
      let kc = (e % (TILE_N / 8u)) * 8u;
      var w = QWeights8(vec4f(0.0), vec4f(0.0));
      let col = c0 + kc;
      if (o0 + o < p.n_out && col < p.n_in) {
        w = weights8((o0 + o) * p.n_in, col);
      }
      put_weights8(o * B_STRIDE_COLS + kc, w, col, p.n_in);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < KT; kk += SM_K) {
      var left: array<SmLeft, RM>;
      for (var r = 0u; r < RM; r++) {
        left[r] = subgroupMatrixLoad<SmLeft, row_major>(&a_tile, r * SM_M * A_STRIDE + kk, A_STRIDE);
      }
      for (var c = 0u; c < RN; c++) {
        let right = subgroupMatrixLoad<SmRight, row_major>(&b_tile, kk * B_STRIDE_COLS + c * SM_N, B_STRIDE_COLS);
        for (var r = 0u; r < RM; r++) {
          acc[r * RN + c] = subgroupMatrixMultiplyAccumulate(left[r], right, acc[r * RN + c]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < RM; r++) {
    for (var c = 0u; c < RN; c++) {
      subgroupMatrixStore<row_major>(&c_tile, c * SM_N, acc[r * RN + c], C_STRIDE);
    }
    workgroupBarrier();
    store_row_block(li, i0 + r * SM_M, c0, p.n_in);
    workgroupBarrier();
  }
}
