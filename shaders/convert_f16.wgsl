// f32 <-> IEEE half conversion for 16-bit activation checkpoints (src/kernels/convert_f16.ts).
// Halves are stored two per u32, element 2i in the low 16 bits (the layout of array<f16>), and
// the conversion is done on the bits with integer ops: WGSL leaves the rounding direction of
// f32 -> f16 and the result of an out-of-range one to the implementation, these are exact.
//   to_f16:   round to nearest, ties to even; subnormal halves kept (down to 2^-24); a magnitude
//             of 65520 or more (past 65504 by half an ulp) becomes +-inf; NaN stays a quiet NaN.
//   from_f16: exact (every half is an f32).
// Inputs are read as u32, never as f32, so no NaN payload or subnormal is touched on the way.
// Needs no `enable f16;`: the kernel runs on any adapter (the graph's "auto" takes f16 checkpoints
// only where the adapter has shader-f16).

struct Params {
  // Elements to convert.
  n: u32,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
}

// to_f16: src f32 [n], dst packed halves [ceil(n / 2)], params
// from_f16: src packed halves [ceil(n / 2)], dst f32 [n], params
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

fn f32_to_half_bits(b: u32) -> u32 {
  let sign = (b >> 16u) & 0x8000u;
  let a = b & 0x7fffffffu;
  if (a > 0x7f800000u) {
    // NaN: quiet, with the top of the payload.
    return sign | 0x7e00u | ((a >> 13u) & 0x3ffu);
  }
  if (a >= 0x47800000u) {
    // 2^16 or more (and inf): past the largest half, 65504.
    return sign | 0x7c00u;
  }
  if (a >= 0x38800000u) {
    // Normal half (2^-14 <= |x| < 2^16): rebias the exponent by 127 - 15 and round the 13
    // dropped bits to nearest even. A carry runs into the exponent, and from 65520 up into inf.
    let v = a - 0x38000000u;
    return sign | ((v + 0xfffu + ((v >> 13u) & 1u)) >> 13u);
  }
  if (a < 0x33000000u) {
    // Under 2^-25 (half the smallest subnormal): rounds to zero.
    return sign;
  }
  // Subnormal half: the value in units of 2^-24 is m 2^(e - 126), m the 24-bit significand and
  // e in 102..112, so shift right by 14..24 and round what falls off to nearest even.
  let e = a >> 23u;
  let m = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e;
  let q = m >> shift;
  let rest = m & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  let up = select(0u, 1u, rest > half || (rest == half && (q & 1u) == 1u));
  return sign | (q + up);
}

fn half_bits_to_f32(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0x1fu) {
    // inf or NaN.
    return sign | 0x7f800000u | (m << 13u);
  }
  if (e != 0u) {
    return sign | ((e + 112u) << 23u) | (m << 13u);
  }
  if (m == 0u) {
    return sign;
  }
  // Subnormal half m 2^-24 (m in 1..1023): 2^(lead - 24) times m / 2^lead, so the f32
  // exponent is lead - 24 + 127 and the bits under the leading one move up to the top.
  let lead = firstLeadingBit(m);
  return sign | ((103u + lead) << 23u) | ((m << (23u - lead)) & 0x7fffffu);
}

@compute @workgroup_size(256)
fn to_f16(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let w = (wg.y * p.groups_x + wg.x) * 256u + li;
  let i = 2u * w;
  if (i < p.n) {
    var pair = f32_to_half_bits(src[i]);
    if (i + 1u < p.n) {
      pair = pair | (f32_to_half_bits(src[i + 1u]) << 16u);
    }
    dst[w] = pair;
  }
}

@compute @workgroup_size(256)
fn from_f16(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let w = (wg.y * p.groups_x + wg.x) * 256u + li;
  let i = 2u * w;
  if (i < p.n) {
    let pair = src[w];
    dst[i] = half_bits_to_f32(pair & 0xffffu);
    if (i + 1u < p.n) {
      dst[i + 1u] = half_bits_to_f32(pair >> 16u);
    }
  }
}
