// Bench-only: a plain device-memory copy, the bandwidth yardstick beside which the 4-bit GEMV's
// GB/s is read (scripts/bench/copy_kernel.ts). One 16-byte word per invocation, so every load and
// store is a full vec4 and nothing but memory traffic is measured.
struct Params {
  // 16-byte words to copy.
  count: u32,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> src: array<vec4u>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4u>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * p.groups_x + wg.x) * 256u + li;
  if (i < p.count) {
    dst[i] = src[i];
  }
}
