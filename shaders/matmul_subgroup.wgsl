// Dense f32 GEMM for skinny products, the reduction split across a subgroup:
// C[i, j] (=|+=) alpha * sum_kk L[i, kk] * R[kk, j] on the strided operands of matmul.wgsl (see
// matmul_common.wgsl). For the LoRA products, where one side of C is the rank (16..64) and the
// reduction is a model dimension or the token count: a 64x64 workgroup tile would be mostly
// empty and too few workgroups would fill a GPU. Here a workgroup is one subgroup (SG, the
// adapter's smallest subgroup size, so the driver cannot split it) owning a 4x4 block of C; its
// lanes take every SG-th k and subgroupAdd sums the 16 partial results at the end. f32
// throughout. Template: SG.
enable subgroups;

//!include matmul_common.wgsl

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;

const SG: u32 = {{SG}}u;
// Rows and columns of C per workgroup (4x4 block).
const BM: u32 = 4u;
const BN: u32 = 4u;

@compute @workgroup_size(SG)
fn split_k(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let tile = wg.y * p.groups_x + wg.x;
  if (tile >= p.tiles) {
    return;
  }
  let i0 = (tile / p.tiles_n) * BM;
  let j0 = (tile % p.tiles_n) * BN;
  // Rows and columns past the end read valid ones; their sums are not stored.
  var lrow: array<u32, 4>;
  var rcol: array<u32, 4>;
  for (var t = 0u; t < 4u; t++) {
    lrow[t] = min(i0 + t, p.m - 1u) * p.a_row;
    rcol[t] = min(j0 + t, p.n - 1u) * p.b_col;
  }
  var acc: array<vec4f, 4>; // acc[r][c]: C[i0 + r, j0 + c]
  // A uniform trip count: subgroupAdd below needs every lane in the same control flow.
  for (var k0 = 0u; k0 < p.k; k0 += SG) {
    let kk = k0 + li;
    if (kk < p.k) {
      let ak = kk * p.a_k;
      let bk = kk * p.b_k;
      let l = vec4f(lhs[lrow[0] + ak], lhs[lrow[1] + ak], lhs[lrow[2] + ak], lhs[lrow[3] + ak]);
      let r = vec4f(rhs[bk + rcol[0]], rhs[bk + rcol[1]], rhs[bk + rcol[2]], rhs[bk + rcol[3]]);
      acc[0] += l.x * r;
      acc[1] += l.y * r;
      acc[2] += l.z * r;
      acc[3] += l.w * r;
    }
  }
  for (var r = 0u; r < BM; r++) {
    let sum = subgroupAdd(acc[r]);
    // Lanes take turns storing, so the 16 stores are spread over the subgroup.
    for (var c = 0u; c < BN; c++) {
      if (li == (r * BN + c) % SG) {
        store_c(i0 + r, j0 + c, sum[c]);
      }
    }
  }
}
