// Rotary position embedding, split halves (transformers `rotate_half`, not interleaved), in
// place on x [rows, heads * head_dim]. For pair (i, i + half) of each head:
//   angle = f32(position) * inv_freq[i]            (the f32 product, as torch computes freqs)
//   x'[i]        = x[i] * cos - x[i + half] * sin
//   x'[i + half] = x[i + half] * cos + x[i] * sin
// `sign` = -1 rotates by -angle: the inverse, which is also the backward pass (R^T = R(-angle)).
// One invocation per pair.

struct Params {
  total: u32, // rows * heads * half
  heads: u32,
  head_dim: u32,
  half: u32,
  sign: f32,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// angle - n * 2pi for the nearest integer n, with 2pi split in three parts (Cody-Waite) so that
// n * C1 is exact: GPU sin/cos lose accuracy on large arguments (positions in the thousands).
fn reduce_angle(a: f32) -> f32 {
  let n = round(a * 0.15915494309189535);
  return ((a - n * 6.28125) - n * 1.9350051879882812e-3) - n * 3.0199159795074593e-7;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let idx = (wg.y * p.groups_x + wg.x) * 256u + li;
  if (idx >= p.total) {
    return;
  }
  let i = idx % p.half;
  let row_head = idx / p.half; // row * heads + head
  let row = row_head / p.heads;
  let lo = row_head * p.head_dim + i;
  let hi = lo + p.half;
  let angle = reduce_angle(f32(positions[row]) * inv_freq[i]);
  let c = cos(angle);
  let s = p.sign * sin(angle);
  let x1 = x[lo];
  let x2 = x[hi];
  x[lo] = x1 * c - x2 * s;
  x[hi] = x2 * c + x1 * s;
}
