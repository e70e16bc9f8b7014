// Rounds f32 values to f16 (round to nearest even): the operands of the f16-input GEMM
// (src/kernels/matmul_f16.ts), e.g. for the benchmark. One element per invocation.
enable f16;

struct Params {
  n: u32,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f16>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let e = (wg.y * p.groups_x + wg.x) * 64u + li;
  if (e < p.n) {
    dst[e] = f16(src[e]);
  }
}
