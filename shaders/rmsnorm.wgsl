// RMSNorm forward and backward in core WebGPU (the math: rmsnorm_common.wgsl). Two layouts:
// `*_row` runs one invocation per row with serial loops (no barriers, for CPU adapters); `*_wg`
// runs one workgroup of 64 per row with a tree reduction in workgroup memory (GPUs without
// subgroups; rmsnorm_subgroups.wgsl is the same layout with subgroupAdd).
const WG: u32 = 64u;

//!include rmsnorm_common.wgsl
//!include workgroup_sum.wgsl

// ---- one invocation per row ---------------------------------------------------------------

@compute @workgroup_size(WG)
fn forward_row(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = row_of(wg, p.groups_x) * WG + li;
  if (row >= p.rows) {
    return;
  }
  let base = row * p.dim;
  var ss = 0.0;
  for (var j = 0u; j < p.dim; j++) {
    let v = x[base + j];
    ss += v * v;
  }
  let r = inverseSqrt(ss / f32(p.dim) + p.eps);
  rstd_out[row] = r;
  for (var j = 0u; j < p.dim; j++) {
    y[base + j] = x[base + j] * r * weight[j];
  }
}

@compute @workgroup_size(WG)
fn backward_row(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = row_of(wg, pb.groups_x) * WG + li;
  if (row >= pb.rows) {
    return;
  }
  let base = row * pb.dim;
  var dot = 0.0;
  for (var j = 0u; j < pb.dim; j++) {
    dot += dy[base + j] * weight[j] * x[base + j];
  }
  let r = rstd_in[row];
  let c = dot * r * r * r / f32(pb.dim);
  for (var j = 0u; j < pb.dim; j++) {
    write_dx(base + j, r * weight[j] * dy[base + j] - x[base + j] * c);
  }
}

// ---- one workgroup per row ----------------------------------------------------------------

@compute @workgroup_size(WG)
fn forward_wg(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  forward_workgroup_row(wg, li);
}

@compute @workgroup_size(WG)
fn backward_wg(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  backward_workgroup_row(wg, li);
}
