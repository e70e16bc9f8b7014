// Global L2 norm of many gradient tensors and torch's clip scale, deterministically:
// `partial` (one dispatch per tensor) writes one sum of squares per workgroup of PER_GROUP
// elements into scratch[base + group]; `finish` (one workgroup) adds all partials in a fixed
// order and writes out = [norm, clipScale]. No atomics, so the same inputs always give the same
// bits. Shared by grad_norm.wgsl and grad_norm_subgroups.wgsl; the includer defines
// `const WG: u32` and `fn workgroup_sum(v: f32, li: u32) -> f32`.

// Elements per workgroup of `partial`, whatever WG is (the host sizes scratch by it).
const PER_GROUP: u32 = 2048u;

struct PartialParams {
  n: u32,
  base: u32,
  groups_x: u32,
  offset: u32, // first element of the tensor in `data`
}

struct FinishParams {
  count: u32,
  clip: u32,
  max_norm: f32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> data: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> pp: PartialParams;

@group(0) @binding(0) var<storage, read> partials_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> fp: FinishParams;

fn partial_sum(wg: vec3u, li: u32) {
  let group = wg.y * pp.groups_x + wg.x;
  let start = group * PER_GROUP;
  let end = min(start + PER_GROUP, pp.n);
  var acc = 0.0;
  for (var i = start + li; i < end; i += WG) {
    let x = data[pp.offset + i];
    acc = acc + x * x;
  }
  let total = workgroup_sum(acc, li);
  if (li == 0u && start < pp.n) {
    partials[pp.base + group] = total;
  }
}

fn finish_norm(li: u32) {
  var acc = 0.0;
  for (var i = li; i < fp.count; i += WG) {
    acc = acc + partials_in[i];
  }
  let total = workgroup_sum(acc, li);
  if (li == 0u) {
    let norm = sqrt(total);
    out[0] = norm;
    out[1] = select(1.0, min(1.0, fp.max_norm / (norm + 1e-6)), fp.clip != 0u);
  }
}
