// Shared by the dense matmul shaders (matmul.wgsl, matmul_f16.wgsl, matmul_subgroup.wgsl,
// matmul_subgroup_matrix.wgsl): the shape uniform, the output binding and the epilogue. Each
// including shader declares its operands `lhs` (binding 0) and `rhs` (binding 1) with the element
// type it reads. C[i, j] is out[i * c_row + j * c_col]; see src/kernels/matmul.ts for the strides.

struct Params {
  m: u32,
  n: u32,
  k: u32,
  accumulate: u32,
  a_row: u32,
  a_k: u32,
  b_k: u32,
  b_col: u32,
  c_row: u32,
  c_col: u32,
  tiles_n: u32,
  groups_x: u32,
  alpha: f32,
  tiles: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

fn store_c(i: u32, j: u32, v: f32) {
  if (i < p.m && j < p.n) {
    let o = i * p.c_row + j * p.c_col;
    if (p.accumulate != 0u) {
      out[o] = out[o] + p.alpha * v;
    } else {
      out[o] = p.alpha * v;
    }
  }
}
