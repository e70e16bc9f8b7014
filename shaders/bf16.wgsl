// bf16 <-> f32 for the LoRA parameters' 16-bit compute copy (src/kernels/bf16.ts). bf16 is the
// top 16 bits of an f32, stored two per u32, element 2i in the low 16 bits. Integer arithmetic
// on the bits, so the result is exact and the same on every adapter (no f16 or bf16 type needed):
//   expand: bf16 -> f32 is a shift; src elements first..first+n-1 to dst 0..n-1.
//   pack:   f32 -> bf16 rounds to nearest, ties to even (overflow becomes +-inf); NaN stays a
//           quiet NaN. src 0..n-1 to dst elements first..first+n-1.
// `first` is even (slots and pages are 64-element aligned), so every word of the packed side
// belongs to one range; a range of odd length leaves the high half of its last word as it was.

struct Params {
  // Elements to convert.
  n: u32,
  // The packed side's first element (even).
  first: u32,
  groups_x: u32,
  _pad0: u32,
}

// expand: src packed bf16 [*], dst f32 [n], params
// pack:   src f32 [n], dst packed bf16 [*], params
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

fn bf16_bits(b: u32) -> u32 {
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    // NaN: sign and top payload kept, quiet bit set so it cannot turn into an infinity.
    return (b >> 16u) | 0x40u;
  }
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

@compute @workgroup_size(256)
fn expand(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  // One invocation per packed word: two elements.
  let w = (wg.y * p.groups_x + wg.x) * 256u + li;
  let i = 2u * w;
  if (i < p.n) {
    let pair = src[p.first / 2u + w];
    dst[i] = pair << 16u;
    if (i + 1u < p.n) {
      dst[i + 1u] = pair & 0xffff0000u;
    }
  }
}

@compute @workgroup_size(256)
fn pack(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let w = (wg.y * p.groups_x + wg.x) * 256u + li;
  let i = 2u * w;
  if (i < p.n) {
    let at = p.first / 2u + w;
    var hi = dst[at] & 0xffff0000u;
    if (i + 1u < p.n) {
      hi = bf16_bits(src[i + 1u]) << 16u;
    }
    dst[at] = hi | bf16_bits(src[i]);
  }
}
