// A workgroup-wide sum built on subgroupAdd, for kernels compiled with `enable subgroups;` whose
// includer defines `const WG: u32` (the workgroup size). Two barriers instead of the log2(WG)
// steps of a tree in workgroup memory.
//
// Nothing here assumes how the device groups invocations into subgroups, nor their size
// (4..128 in WebGPU), nor that they are full: each subgroup's sum is posted at the index of its
// elected (first active) invocation, every other slot holds 0, and then every invocation adds
// all WG slots in index order. So every invocation of the workgroup gets the same bits, and a
// device gives the same bits on every run (the order inside subgroupAdd is the hardware's).
const SUM_SLOTS: u32 = ((WG + 3u) / 4u) * 4u;
// Zero-initialized at the start of each workgroup (WGSL); slots from WG up are never written.
var<workgroup> subgroup_sums: array<f32, SUM_SLOTS>;

fn workgroup_sum(v: f32, li: u32) -> f32 {
  let s = subgroupAdd(v);
  subgroup_sums[li] = select(0.0, s, subgroupElect());
  workgroupBarrier();
  // Four chains of adds: a quarter of the dependent-add latency of one chain.
  var acc = vec4f(0.0);
  for (var i = 0u; i < SUM_SLOTS; i += 4u) {
    let s4 = vec4f(subgroup_sums[i], subgroup_sums[i + 1u], subgroup_sums[i + 2u], subgroup_sums[i + 3u]);
    acc += s4;
  }
  // The slots may be written again by a next call.
  workgroupBarrier();
  return (acc.x + acc.y) + (acc.z + acc.w);
}
