// The uniform parameters that every attention entry point takes (shaders/attention.wgsl and
// shaders/attention_tiled.wgsl include this), so the wrapper fills one struct for all of them.
struct Params {
  seq: u32,
  heads: u32,
  kv_heads: u32,
  // Query heads per kv head (GQA).
  group: u32,
  // Batch rows (sequences of `seq` tokens).
  rows: u32,
  // Workgroups along x of the dispatch grid (the grid is 2-D above 65535 workgroups).
  groups_x: u32,
  // Tiled variants: blocks of WG queries (keys) per sequence.
  blocks: u32,
  _pad0: u32,
  // 1 / sqrt(head_dim).
  scale: f32,
  _pad1: u32,
  _pad2: u32,
  _pad3: u32,
}

// Below every score: marks a masked key, and starts the running maximum.
const LOWEST: f32 = -3.0e38;
