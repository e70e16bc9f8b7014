// RMSNorm forward and backward, one workgroup of {{WG}} per row (the math and layout:
// rmsnorm_common.wgsl), reducing with subgroupAdd (subgroup_sum.wgsl): 2 barriers per row
// instead of the tree's 8. Only for devices with the `subgroups` feature.
enable subgroups;

const WG: u32 = {{WG}}u;

//!include rmsnorm_common.wgsl
//!include subgroup_sum.wgsl

@compute @workgroup_size(WG)
fn forward_sg(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  forward_workgroup_row(wg, li);
}

@compute @workgroup_size(WG)
fn backward_sg(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  backward_workgroup_row(wg, li);
}
