// The softmax-stats pass of the lm_head cross-entropy (cross_entropy.wgsl) with subgroup
// reductions: a whole subgroup takes a row, each lane walks the columns lane, lane + size, ...,
// and subgroupMax / subgroupAdd / subgroupMin combine the lanes (max, rescaled sum of exp, first
// argmax). Workgroup-to-subgroup layout is implementation-defined, so subgroups claim the
// workgroup's rows through a workgroup atomic; a row's result does not depend on which subgroup
// took it. Needs `subgroups` with subgroups of at most 64 invocations (src/kernels/
// cross_entropy.ts checks). The loop's exit depends on the claimed row, uniform within a
// subgroup but not provably so to the compiler, hence the diagnostic.
enable subgroups;
diagnostic(off, subgroup_uniformity);
//!include cross_entropy_common.wgsl

/** Rows per workgroup of 64 invocations (one per subgroup for subgroups of 8). */
const SG_ROWS: u32 = 8u;
var<workgroup> next_row: atomic<u32>;

@compute @workgroup_size(64)
fn stats_subgroup(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) sg_size: u32,
) {
  let base = (wg.y * st_params.stats_groups_x + wg.x) * SG_ROWS;
  let cols = st_params.cols;
  loop {
    var claimed = 0u;
    if (subgroupElect()) {
      claimed = atomicAdd(&next_row, 1u);
    }
    let slot = subgroupMax(claimed);
    let r = base + slot;
    if (slot >= SG_ROWS || r >= st_params.rows) {
      break;
    }
    let label = st_labels[st_params.r0 + r];
    var mx = LOWEST;
    var sum = 0.0;
    var arg = 0u;
    var label_logit = 0.0;
    for (var j = lane; j < cols; j += sg_size) {
      let l = st_logits[r * cols + j];
      if (l > mx) {
        sum = sum * exp(mx - l) + 1.0;
        mx = l;
        arg = j;
      } else {
        sum = sum + exp(l - mx);
      }
      if (i32(st_params.c0 + j) == label) {
        label_logit = l;
      }
    }
    let block_max = subgroupMax(mx);
    let block_sum = subgroupAdd(sum * exp(mx - block_max));
    // First maximum: lanes hold their own first maximum, the smallest column among equals wins.
    let block_arg = subgroupMin(select(0xffffffffu, arg, mx == block_max));
    // At most one lane saw the label's column.
    let block_label = subgroupAdd(label_logit);
    if (lane == 0u) {
      var m = block_max;
      var s = block_sum;
      var a = st_params.c0 + block_arg;
      var ll = block_label;
      if (st_params.first == 0u) {
        let pm = st_stats[r * 4u];
        let ps = st_stats[r * 4u + 1u];
        if (block_max > pm) {
          s = ps * exp(pm - block_max) + block_sum;
        } else {
          m = pm;
          s = ps + block_sum * exp(block_max - pm);
          a = bitcast<u32>(st_stats[r * 4u + 2u]);
        }
        let in_block = label >= i32(st_params.c0) && label < i32(st_params.c0 + cols);
        if (!in_block) {
          ll = st_stats[r * 4u + 3u];
        }
      }
      store_stats(r, m, s, a, ll);
    }
  }
}
