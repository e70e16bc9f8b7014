// Inverted dropout with a counter-based mask: keep element i of (seed, stream) when
// hash(seed, stream, i) >> 8 >= threshold (threshold = round(p * 2^24)); kept elements are
// scaled by 1/(1-p). No state: the backward pass recomputes the mask by calling the same
// kernel on the gradient. src/kernels/dropout.ts (dropoutMaskHost) mirrors the hash exactly.
// `first` is the mask index of element 0, so a slice of a tensor (a chunk of rows) draws the
// same mask as the whole tensor would.
struct Params {
  n: u32,
  threshold: u32,
  seed: u32,
  stream: u32,
  scale: f32,
  groups_x: u32,
  first: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

// In-place variant: one buffer read and written.
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@group(0) @binding(1) var<uniform> params_inplace: Params;

// lowbias32 (Chris Wellons' integer hash).
fn mix32(v: u32) -> u32 {
  var h = v;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

fn keep(p: Params, i: u32) -> bool {
  let k1 = mix32(mix32(p.seed ^ 0x9e3779b9u) ^ p.stream);
  let k2 = mix32(k1 ^ 0x85ebca6bu);
  let u = mix32(mix32(p.first + i + k1) ^ k2);
  return (u >> 8u) >= p.threshold;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * params.groups_x + wg.x) * 256u + li;
  if (i < params.n) {
    out[i] = x[i] * select(0.0, params.scale, keep(params, i));
  }
}

@compute @workgroup_size(256)
fn main_inplace(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * params_inplace.groups_x + wg.x) * 256u + li;
  if (i < params_inplace.n) {
    data[i] = data[i] * select(0.0, params_inplace.scale, keep(params_inplace, i));
  }
}
