// Bench-only: fills f32 values center + scale * u with u uniform in [-1, 1), u a hash of
// (seed, base + index), so random models of any size are made on the GPU: nothing is generated
// on the host or uploaded (scripts/bench/gpu_random.ts). The same (seed, global index) gives the
// same value whichever chunk it is written in.
struct Params {
  count: u32,
  seed: u32,
  groups_x: u32,
  // Global index of element 0 of this dispatch (chunks of a large buffer).
  base: u32,
  center: f32,
  scale: f32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

// PCG output permutation of one LCG step: a cheap hash with well-spread low and high bits.
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * p.groups_x + wg.x) * 256u + li;
  if (i >= p.count) {
    return;
  }
  let h = pcg((p.base + i) ^ pcg(p.seed));
  // 24 bits: every value is exact in f32, u in [-1, 1).
  let u = f32(h >> 8u) / 8388608.0 - 1.0;
  out[i] = p.center + p.scale * u;
}
