// Elementwise vector ops on f32 [n], one invocation per element:
//   add:  y += x          (residuals, gradient sums)
//   axpy: y += alpha * x
//   copy: y = x
//   scale: x *= alpha     (in place)
//   add_rows: y[r, c] += x[c] for y [n / cols, cols] (a bias broadcast over rows)

struct Params {
  n: u32,
  alpha: f32,
  groups_x: u32,
  // add_rows only: the row length (x holds one row).
  cols: u32,
}

// add, axpy, copy, add_rows: x, y, params
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

// scale: data, params
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@group(0) @binding(1) var<uniform> ps: Params;

fn index(wg: vec3u, li: u32, groups_x: u32) -> u32 {
  return (wg.y * groups_x + wg.x) * 256u + li;
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wg, li, p.groups_x);
  if (i < p.n) {
    y[i] = y[i] + x[i];
  }
}

@compute @workgroup_size(256)
fn axpy(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wg, li, p.groups_x);
  if (i < p.n) {
    y[i] = y[i] + p.alpha * x[i];
  }
}

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wg, li, p.groups_x);
  if (i < p.n) {
    y[i] = x[i];
  }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wg, li, ps.groups_x);
  if (i < ps.n) {
    data[i] = ps.alpha * data[i];
  }
}

@compute @workgroup_size(256)
fn add_rows(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index(wg, li, p.groups_x);
  if (i < p.n) {
    y[i] = y[i] + x[i % p.cols];
  }
}
