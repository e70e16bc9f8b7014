// Dense GEMM with f16 workgroup tiles: C[i, j] (=|+=) alpha * sum_kk L[i, kk] * R[kk, j], on
// the strided operands of matmul.wgsl (see matmul_common.wgsl). The structure of matmul.wgsl's
// `tiled` (16x16 invocations, a 64x64 output tile, 4x4 outputs per invocation strided by 16),
// but the tiles hold f16 pairs along the reduction: one vec2<f16> load brings two k steps of a
// row, so a k step costs half the workgroup-memory loads of the f32 tile, and the 64x32 tiles
// take 8 KB instead of 16. Operands are rounded to f16 once, when staged; products and sums are
// f32, so the error is that of the rounded inputs (2^-11 relative each), not of f16 arithmetic.
// Template: IN_T, the operands' element type in memory (f32, or f16 for the f16 GEMM of
// src/kernels/matmul_f16.ts). Out-of-range rows, columns and k are staged as zeros.
enable f16;

//!include matmul_common.wgsl

@group(0) @binding(0) var<storage, read> lhs: array<{{IN_T}}>;
@group(0) @binding(1) var<storage, read> rhs: array<{{IN_T}}>;

const TILE: u32 = 64u;
// k pairs per staged tile (32 k steps).
const TILE_KP: u32 = 16u;

var<workgroup> tile_l: array<vec2h, 1024>; // [TILE_KP][TILE]: (L[i, 2kp], L[i, 2kp+1]) at kp*64+i
var<workgroup> tile_r: array<vec2h, 1024>; // [TILE_KP][TILE]: (R[2kp, j], R[2kp+1, j]) at kp*64+j

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

@compute @workgroup_size(16, 16)
fn tiled_f16(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tile = wg.y * p.groups_x + wg.x;
  if (tile >= p.tiles) {
    return;
  }
  let i0 = (tile / p.tiles_n) * TILE;
  let j0 = (tile % p.tiles_n) * TILE;
  let li = lid.y * 16u + lid.x;
  var acc: array<vec4f, 4>; // acc[r][q]: row lid.y + 16r, column lid.x + 16q
  for (var k0 = 0u; k0 < p.k; k0 += 2u * TILE_KP) {
    // 1024 pairs per tile, four per invocation; consecutive invocations walk the operand's
    // contiguous dimension so global loads coalesce.
    for (var t = 0u; t < 4u; t++) {
      let e = li + 256u * t;
      var i: u32;
      var kl: u32;
      if (p.a_k == 1u) {
        kl = e % TILE_KP;
        i = e / TILE_KP;
      } else {
        i = e % TILE;
        kl = e / TILE;
      }
      let ka = k0 + 2u * kl;
      tile_l[kl * TILE + i] = vec2h(lhs_at(i0 + i, ka), lhs_at(i0 + i, ka + 1u));
      var j: u32;
      var kr: u32;
      if (p.b_col == 1u) {
        j = e % TILE;
        kr = e / TILE;
      } else {
        kr = e % TILE_KP;
        j = e / TILE_KP;
      }
      let kb = k0 + 2u * kr;
      tile_r[kr * TILE + j] = vec2h(rhs_at(kb, j0 + j), rhs_at(kb + 1u, j0 + j));
    }
    workgroupBarrier();
    for (var kp = 0u; kp < TILE_KP; kp++) {
      let l0 = vec2f(tile_l[kp * TILE + lid.y]);
      let l1 = vec2f(tile_l[kp * TILE + lid.y + 16u]);
      let l2 = vec2f(tile_l[kp * TILE + lid.y + 32u]);
      let l3 = vec2f(tile_l[kp * TILE + lid.y + 48u]);
      let r0 = vec2f(tile_r[kp * TILE + lid.x]);
      let r1 = vec2f(tile_r[kp * TILE + lid.x + 16u]);
      let r2 = vec2f(tile_r[kp * TILE + lid.x + 32u]);
      let r3 = vec2f(tile_r[kp * TILE + lid.x + 48u]);
      let re = vec4f(r0.x, r1.x, r2.x, r3.x);
      let ro = vec4f(r0.y, r1.y, r2.y, r3.y);
      acc[0] += l0.x * re + l0.y * ro;
      acc[1] += l1.x * re + l1.y * ro;
      acc[2] += l2.x * re + l2.y * ro;
      acc[3] += l3.x * re + l3.y * ro;
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    for (var q = 0u; q < 4u; q++) {
      store_c(i0 + lid.y + 16u * r, j0 + lid.x + 16u * q, acc[r][q]);
    }
  }
}
