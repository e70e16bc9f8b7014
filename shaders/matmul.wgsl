// Dense f32 GEMM on strided operands: C[i, j] (=|+=) alpha * sum_kk L[i, kk] * R[kk, j].
// L[i, kk] is lhs[i * a_row + kk * a_k], R[kk, j] is rhs[kk * b_k + j * b_col], C[i, j] is
// out[i * c_row + j * c_col]; the host turns transA/transB (and swapping the operands to get
// C^T = R^T L^T) into these strides, so one pipeline per variant serves every layout.
//
// Two variants:
// - `blocked`: no shared memory, no barriers. Each invocation owns a 16x16 block of C held as
//   sixteen mat4x4 accumulators (column r of a block = row r's four outputs), so each k step
//   loads 32 values for 256 multiply-adds. For llvmpipe, where barriers are very expensive and
//   every per-lane load costs several instructions.
// - `tiled`: 16x16 invocations share 64x16 / 16x64 tiles of L and R in workgroup memory; each
//   invocation owns 4x4 outputs strided by 16. For real GPUs.
// Out-of-range rows and columns are clamped on load (blocked) or zero-filled (tiled) and never
// stored, so any m, n, k >= 1 works.

//!include matmul_common.wgsl

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;

// ---- blocked ------------------------------------------------------------------------------

const BLOCKED_WG: u32 = 8u;
const BLOCKED_TM: u32 = 16u;
const BLOCKED_TN: u32 = 16u;

fn gather_lhs(o: vec4u) -> vec4f {
  return vec4f(lhs[o.x], lhs[o.y], lhs[o.z], lhs[o.w]);
}

fn gather_rhs(o: vec4u) -> vec4f {
  return vec4f(rhs[o.x], rhs[o.y], rhs[o.z], rhs[o.w]);
}

// Element offsets of four consecutive indices from `first`, clamped to the last valid one.
fn clamped4(first: u32, count: u32, stride: u32) -> vec4u {
  return min(vec4u(first) + vec4u(0u, 1u, 2u, 3u), vec4u(count - 1u)) * stride;
}

// Rank-1 update of a 4x4 block: column r gets the four columns of R scaled by row r's L value.
fn outer(r: vec4f, l: vec4f) -> mat4x4f {
  return mat4x4f(r * l.x, r * l.y, r * l.z, r * l.w);
}

fn store_block(v: mat4x4f, i: u32, j: u32) {
  for (var r = 0u; r < 4u; r++) {
    for (var q = 0u; q < 4u; q++) {
      store_c(i + r, j + q, v[r][q]);
    }
  }
}

@compute @workgroup_size(BLOCKED_WG)
fn blocked(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let tile = wg.y * p.groups_x + wg.x;
  if (tile >= p.tiles) {
    return;
  }
  let i0 = (tile / p.tiles_n) * BLOCKED_TM;
  let j0 = ((tile % p.tiles_n) * BLOCKED_WG + li) * BLOCKED_TN;
  let l0 = clamped4(i0, p.m, p.a_row);
  let l1 = clamped4(i0 + 4u, p.m, p.a_row);
  let l2 = clamped4(i0 + 8u, p.m, p.a_row);
  let l3 = clamped4(i0 + 12u, p.m, p.a_row);
  let r0 = clamped4(j0, p.n, p.b_col);
  let r1 = clamped4(j0 + 4u, p.n, p.b_col);
  let r2 = clamped4(j0 + 8u, p.n, p.b_col);
  let r3 = clamped4(j0 + 12u, p.n, p.b_col);
  var c00 = mat4x4f();
  var c01 = mat4x4f();
  var c02 = mat4x4f();
  var c03 = mat4x4f();
  var c10 = mat4x4f();
  var c11 = mat4x4f();
  var c12 = mat4x4f();
  var c13 = mat4x4f();
  var c20 = mat4x4f();
  var c21 = mat4x4f();
  var c22 = mat4x4f();
  var c23 = mat4x4f();
  var c30 = mat4x4f();
  var c31 = mat4x4f();
  var c32 = mat4x4f();
  var c33 = mat4x4f();
  for (var kk = 0u; kk < p.k; kk++) {
    let ak = vec4u(kk * p.a_k);
    let bk = vec4u(kk * p.b_k);
    let a0 = gather_lhs(l0 + ak);
    let a1 = gather_lhs(l1 + ak);
    let a2 = gather_lhs(l2 + ak);
    let a3 = gather_lhs(l3 + ak);
    let b0 = gather_rhs(r0 + bk);
    let b1 = gather_rhs(r1 + bk);
    let b2 = gather_rhs(r2 + bk);
    let b3 = gather_rhs(r3 + bk);
    c00 += outer(b0, a0);
    c01 += outer(b1, a0);
    c02 += outer(b2, a0);
    c03 += outer(b3, a0);
    c10 += outer(b0, a1);
    c11 += outer(b1, a1);
    c12 += outer(b2, a1);
    c13 += outer(b3, a1);
    c20 += outer(b0, a2);
    c21 += outer(b1, a2);
    c22 += outer(b2, a2);
    c23 += outer(b3, a2);
    c30 += outer(b0, a3);
    c31 += outer(b1, a3);
    c32 += outer(b2, a3);
    c33 += outer(b3, a3);
  }
  store_block(c00, i0, j0);
  store_block(c01, i0, j0 + 4u);
  store_block(c02, i0, j0 + 8u);
  store_block(c03, i0, j0 + 12u);
  store_block(c10, i0 + 4u, j0);
  store_block(c11, i0 + 4u, j0 + 4u);
  store_block(c12, i0 + 4u, j0 + 8u);
  store_block(c13, i0 + 4u, j0 + 12u);
  store_block(c20, i0 + 8u, j0);
  store_block(c21, i0 + 8u, j0 + 4u);
  store_block(c22, i0 + 8u, j0 + 8u);
  store_block(c23, i0 + 8u, j0 + 12u);
  store_block(c30, i0 + 12u, j0);
  store_block(c31, i0 + 12u, j0 + 4u);
  store_block(c32, i0 + 12u, j0 + 8u);
  store_block(c33, i0 + 12u, j0 + 12u);
}

// ---- tiled --------------------------------------------------------------------------------

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> tile_l: array<f32, 1024>; // [TILE_K][TILE]: tile_l[kk * 64 + i]
var<workgroup> tile_r: array<f32, 1024>; // [TILE_K][TILE]: tile_r[kk * 64 + j]

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tile = wg.y * p.groups_x + wg.x;
  if (tile >= p.tiles) {
    return;
  }
  let i0 = (tile / p.tiles_n) * TILE;
  let j0 = (tile % p.tiles_n) * TILE;
  let li = lid.y * 16u + lid.x;
  var acc: array<vec4f, 4>; // acc[r][q]: row lid.y + 16r, column lid.x + 16q
  for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
    // 1024 elements per tile, four per invocation; consecutive invocations walk the operand's
    // contiguous dimension so global loads coalesce.
    for (var t = 0u; t < 4u; t++) {
      let e = li + 256u * t;
      var i: u32;
      var kl: u32;
      if (p.a_k == 1u) {
        kl = e % TILE_K;
        i = e / TILE_K;
      } else {
        i = e % TILE;
        kl = e / TILE;
      }
      var v = 0.0;
      if (i0 + i < p.m && k0 + kl < p.k) {
        v = lhs[(i0 + i) * p.a_row + (k0 + kl) * p.a_k];
      }
      tile_l[kl * TILE + i] = v;
      var j: u32;
      var kr: u32;
      if (p.b_col == 1u) {
        j = e % TILE;
        kr = e / TILE;
      } else {
        kr = e % TILE_K;
        j = e / TILE_K;
      }
      var w = 0.0;
      if (j0 + j < p.n && k0 + kr < p.k) {
        w = rhs[(k0 + kr) * p.b_k + (j0 + j) * p.b_col];
      }
      tile_r[kr * TILE + j] = w;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TILE_K; kk++) {
      let l = vec4f(
        tile_l[kk * TILE + lid.y],
        tile_l[kk * TILE + lid.y + 16u],
        tile_l[kk * TILE + lid.y + 32u],
        tile_l[kk * TILE + lid.y + 48u],
      );
      let r = vec4f(
        tile_r[kk * TILE + lid.x],
        tile_r[kk * TILE + lid.x + 16u],
        tile_r[kk * TILE + lid.x + 32u],
        tile_r[kk * TILE + lid.x + 48u],
      );
      acc[0] += l.x * r;
      acc[1] += l.y * r;
      acc[2] += l.z * r;
      acc[3] += l.w * r;
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    for (var q = 0u; q < 4u; q++) {
      store_c(i0 + lid.y + 16u * r, j0 + lid.x + 16u * q, acc[r][q]);
    }
  }
}
