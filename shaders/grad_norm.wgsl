// Global L2 norm of many gradient tensors and torch's clip scale, deterministically:
// `partial` (one dispatch per tensor) writes one sum of squares per workgroup of 2048 elements
// into scratch[base + group]; `finish` (one workgroup) adds all partials in a fixed order and
// writes out = [norm, clipScale]. No atomics, so the same inputs always give the same bits.
const WG: u32 = 256u;
const ITEMS: u32 = 8u;

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

var<workgroup> sums: array<f32, WG>;

fn reduce_workgroup(li: u32, value: f32) -> f32 {
  sums[li] = value;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    if (li < stride) {
      sums[li] = sums[li] + sums[li + stride];
    }
    workgroupBarrier();
  }
  return sums[0];
}

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let group = wg.y * pp.groups_x + wg.x;
  let start = group * WG * ITEMS;
  var acc = 0.0;
  for (var t = 0u; t < ITEMS; t++) {
    let i = start + t * WG + li;
    if (i < pp.n) {
      let x = data[pp.offset + i];
      acc = acc + x * x;
    }
  }
  let total = reduce_workgroup(li, acc);
  if (li == 0u && start < pp.n) {
    partials[pp.base + group] = total;
  }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_index) li: u32) {
  var acc = 0.0;
  for (var i = li; i < fp.count; i += WG) {
    acc = acc + partials_in[i];
  }
  let total = reduce_workgroup(li, acc);
  if (li == 0u) {
    let norm = sqrt(total);
    out[0] = norm;
    out[1] = select(1.0, min(1.0, fp.max_norm / (norm + 1e-6)), fp.clip != 0u);
  }
}
