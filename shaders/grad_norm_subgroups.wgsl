// The global gradient norm (grad_norm_common.wgsl) reducing with subgroupAdd
// (subgroup_sum.wgsl): 2 barriers per workgroup instead of the tree's 10. Workgroups of {{WG}}.
// Only for devices with the `subgroups` feature.
enable subgroups;

const WG: u32 = {{WG}}u;

//!include grad_norm_common.wgsl
//!include subgroup_sum.wgsl

@compute @workgroup_size(WG)
fn partial(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  partial_sum(wg, li);
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) li: u32) {
  finish_norm(li);
}
