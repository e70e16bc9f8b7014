// A workgroup-wide sum as a tree in workgroup memory (core WebGPU, no subgroups), for kernels
// whose includer defines `const WG: u32`, a power of two. Every invocation gets the total.
var<workgroup> tree_sums: array<f32, WG>;

fn workgroup_sum(v: f32, li: u32) -> f32 {
  tree_sums[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      tree_sums[li] += tree_sums[li + s];
    }
    workgroupBarrier();
  }
  let total = tree_sums[0];
  // The slots may be written again by a next call.
  workgroupBarrier();
  return total;
}
