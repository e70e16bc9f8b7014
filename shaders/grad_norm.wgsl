// The global gradient norm (grad_norm_common.wgsl) in core WebGPU: workgroups of 256 with a
// tree reduction in workgroup memory.
const WG: u32 = 256u;

//!include grad_norm_common.wgsl
//!include workgroup_sum.wgsl

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  partial_sum(wg, li);
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) li: u32) {
  finish_norm(li);
}
