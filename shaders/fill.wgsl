// Fills a u32 buffer with one bit pattern: zeroing gradients, poisoning outputs in tests.
struct Params { count: u32, value: u32, groups_x: u32, _pad: u32 }

@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * params.groups_x + wg.x) * 256u + li;
  if (i < params.count) {
    data[i] = params.value;
  }
}
