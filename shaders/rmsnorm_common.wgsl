// RMSNorm over the last dimension (transformers LlamaRMSNorm, in f32):
//   rstd = 1 / sqrt(mean(x^2) + eps),  y = x * rstd * weight
// and its gradient with respect to x (the weight is frozen):
//   dx = rstd * weight * dy - x * rstd^3 / dim * sum_j(dy_j * weight_j * x_j)
// Shared by rmsnorm.wgsl and rmsnorm_subgroups.wgsl: the parameters, the bindings and the
// workgroup-per-row math. The includer defines `const WG: u32` and
// `fn workgroup_sum(v: f32, li: u32) -> f32`, which gives every invocation the same total.

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
  accumulate: u32,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

// forward: x, weight, y, rstd, params
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// backward: x, weight, rstd, dy, dx, params
@group(0) @binding(2) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<uniform> pb: Params;

fn row_of(wg: vec3u, groups_x: u32) -> u32 {
  return wg.y * groups_x + wg.x;
}

fn write_dx(i: u32, v: f32) {
  if (pb.accumulate != 0u) {
    dx[i] = dx[i] + v;
  } else {
    dx[i] = v;
  }
}

// One workgroup normalizes one row; invocation li takes elements li, li + WG, ...
fn forward_workgroup_row(wg: vec3u, li: u32) {
  let row = row_of(wg, p.groups_x);
  if (row >= p.rows) {
    return;
  }
  let base = row * p.dim;
  var ss = 0.0;
  for (var j = li; j < p.dim; j += WG) {
    let v = x[base + j];
    ss += v * v;
  }
  let r = inverseSqrt(workgroup_sum(ss, li) / f32(p.dim) + p.eps);
  if (li == 0u) {
    rstd_out[row] = r;
  }
  for (var j = li; j < p.dim; j += WG) {
    y[base + j] = x[base + j] * r * weight[j];
  }
}

fn backward_workgroup_row(wg: vec3u, li: u32) {
  let row = row_of(wg, pb.groups_x);
  if (row >= pb.rows) {
    return;
  }
  let base = row * pb.dim;
  var dot = 0.0;
  for (var j = li; j < pb.dim; j += WG) {
    dot += dy[base + j] * weight[j] * x[base + j];
  }
  let r = rstd_in[row];
  let c = workgroup_sum(dot, li) * r * r * r / f32(pb.dim);
  for (var j = li; j < pb.dim; j += WG) {
    write_dx(base + j, r * weight[j] * dy[base + j] - x[base + j] * c);
  }
}
