// Dense GEMM on subgroup matrices (Dawn's chromium_experimental_subgroup_matrix, the tensor
// cores): C[i, j] (=|+=) alpha * sum_kk L[i, kk] * R[kk, j] on the strided operands of
// matmul.wgsl (see matmul_common.wgsl), f16 x f16 -> f32.
// A workgroup is one subgroup (WG = the adapter's maxSubgroupSize; Dawn wants workgroup_size.x a
// multiple of it) owning a TILE_M x TILE_N tile of C as RM x RN result matrices of SM_M x SM_N.
// Per KT-deep step of the reduction it stages op(A) [TILE_M][KT] and op(B) [KT][TILE_N] as f16 in
// workgroup memory (zeros past the edges), then runs RM x RN x (KT / SM_K) multiply-adds. The
// results leave one row of matrices at a time through c_tile, where alpha, accumulate and the
// edges are applied by plain stores. No subgroup builtins here: one NVIDIA driver crashes when
// they share a shader with subgroup matrices. Every subgroup-matrix call sits in uniform control
// flow with uniform arguments (loop bounds from constants and the uniform buffer).
// Template (src/kernels/matmul_features.ts planSubgroupMatrix): SM_M, SM_N, SM_K (the config),
// RM, RN, KT, WG, A_STRIDE, B_STRIDE_COLS, C_STRIDE, A_LEN, B_LEN, C_LEN (B_STRIDE_ROWS unused
// here), and IN_T (f32, or f16 for the f16 GEMM).
enable f16;
enable chromium_experimental_subgroup_matrix;

//!include matmul_common.wgsl

@group(0) @binding(0) var<storage, read> lhs: array<{{IN_T}}>;
@group(0) @binding(1) var<storage, read> rhs: array<{{IN_T}}>;

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
const B_STRIDE = {{B_STRIDE_COLS}};
const C_STRIDE = {{C_STRIDE}};
const A_LEN = {{A_LEN}};
const B_LEN = {{B_LEN}};
const C_LEN = {{C_LEN}};

alias SmLeft = subgroup_matrix_left<f16, SM_K, SM_M>;
alias SmRight = subgroup_matrix_right<f16, SM_N, SM_K>;
alias SmResult = subgroup_matrix_result<f32, SM_N, SM_M>;

var<workgroup> a_tile: array<f16, A_LEN>; // op(A)[i0 + r, k0 + c] at r * A_STRIDE + c
var<workgroup> b_tile: array<f16, B_LEN>; // op(B)[k0 + r, j0 + c] at r * B_STRIDE + c
var<workgroup> c_tile: array<f32, C_LEN>; // one row of result matrices, [SM_M][C_STRIDE]

fn lhs_at(i: u32, kk: u32) -> f16 {
  if (i < p.m && kk < p.k) {
    return f16(lhs[i * p.a_row + kk * p.a_k]);
  }
  return 0.0h;
}

fn rhs_at(kk: u32, j: u32) -> f16 {
  if (kk < p.k && j < p.n) {
    return f16(rhs[kk * p.b_k + j * p.b_col]);
  }
  return 0.0h;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let tile = wg.y * p.groups_x + wg.x;
  if (tile >= p.tiles) {
    return;
  }
  let i0 = (tile / p.tiles_n) * TILE_M;
  let j0 = (tile % p.tiles_n) * TILE_N;
  var acc: array<SmResult, RM * RN>; // zero-initialised; acc[r * RN + c] is block (r, c)
  for (var k0 = 0u; k0 < p.k; k0 += KT) {
    // Staging: consecutive invocations walk each operand's contiguous dimension.
    for (var t = 0u; t < TILE_M * KT / WG; t++) {
      let e = li + t * WG;
      var r: u32;
      var c: u32;
      if (p.a_k == 1u) {
        r = e / KT;
        c = e % KT;
      } else {
        r = e % TILE_M;
        c = e / TILE_M;
      }
      a_tile[r * A_STRIDE + c] = lhs_at(i0 + r, k0 + c);
    }
    for (var t = 0u; t < KT * TILE_N / WG; t++) {
      let e = li + t * WG;
      var r: u32;
      var c: u32;
      if (p.b_col == 1u) {
        r = e / TILE_N;
        c = e % TILE_N;
      } else {
        r = e % KT;
        c = e / KT;
      }
      b_tile[r * B_STRIDE + c] = rhs_at(k0 + r, j0 + c);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < KT; kk += SM_K) {
      var left: array<SmLeft, RM>;
      for (var r = 0u; r < RM; r++) {
        left[r] = subgroupMatrixLoad<SmLeft, row_major>(&a_tile, r * SM_M * A_STRIDE + kk, A_STRIDE);
      }
      for (var c = 0u; c < RN; c++) {
        let right = subgroupMatrixLoad<SmRight, row_major>(&b_tile, kk * B_STRIDE + c * SM_N, B_STRIDE);
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
    for (var t = 0u; t < SM_M * TILE_N / WG; t++) {
      let e = li + t * WG;
      let rr = e / TILE_N;
      let cc = e % TILE_N;
      store_c(i0 + r * SM_M + rr, j0 + cc, c_tile[rr * C_STRIDE + cc]);
    }
    workgroupBarrier();
  }
}
