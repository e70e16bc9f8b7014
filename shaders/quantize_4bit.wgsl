// bitsandbytes 4-bit blockwise quantization (NF4/FP4) and the 8-bit double quantization of the
// absmax, bit-exact with the CPU reference in src/quant/ (blockwise.ts, double_quant.ts, codes.ts).
//
// Exactness: the scale fround(1 / absmax) and the scaled value fround(x * scale) are computed
// in integer arithmetic (round to nearest, ties to even, denormals kept), and every comparison
// is made on ordered integer keys of the float32 bits, so no result depends on the adapter's
// division accuracy, denormal flushing or NaN handling. The one float operation is the
// subtraction absmax - offset of the double quantization (correctly rounded in WGSL; only a
// result below 2^-126, i.e. absmax values that small, could be flushed).
//
// Entry points (template BLOCKSIZE, FP4 true/false):
//   block_scales: one invocation per 4-bit block: absmax = max |x|, scale = fround(1 / absmax).
//   codes: one invocation per packed u32 word (8 elements, one block).
//   double_quant: one invocation per 256 absmax values: nested absmax and 8-bit codes.

struct Params {
  // Elements (block_scales, codes) or absmax values (double_quant) in this dispatch.
  n: u32,
  // Invocations needed: blocks, packed words, or nested blocks.
  count: u32,
  groups_x: u32,
  // double_quant: the float32 offset (mean absmax), as bits.
  offset_bits: u32,
}

const BLOCKSIZE: u32 = {{BLOCKSIZE}}u;
const IS_FP4: bool = {{FP4}};
const NESTED: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;

// ---------------------------------------------------------------------------------------------
// Float32 helpers on bits.

const SIGN: u32 = 0x80000000u;
const ABS: u32 = 0x7fffffffu;
const INF: u32 = 0x7f800000u;
const QNAN: u32 = 0x7fc00000u;

fn is_nan(b: u32) -> bool {
  return (b & ABS) > INF;
}

// Ordered integer key of a non-NaN float32: a < b as floats iff key(a) < key(b); -0 == +0.
fn f32_key(b: u32) -> i32 {
  let mag = i32(b & ABS);
  return select(mag, -mag, (b & SIGN) != 0u);
}

// Full 64-bit product of two u32 as (hi, lo).
fn mul_wide(a: u32, b: u32) -> vec2u {
  let a0 = a & 0xffffu;
  let a1 = a >> 16u;
  let b0 = b & 0xffffu;
  let b1 = b >> 16u;
  let p00 = a0 * b0;
  let p01 = a0 * b1;
  let p10 = a1 * b0;
  let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
  let lo = (p00 & 0xffffu) | (mid << 16u);
  let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
  return vec2u(hi, lo);
}

// Low 32 bits of (hi, lo) >> s, 1 <= s <= 48.
fn shr64(v: vec2u, s: u32) -> u32 {
  if (s >= 32u) {
    return v.x >> (s - 32u);
  }
  return (v.y >> s) | (v.x << (32u - s));
}

fn bit64(v: vec2u, i: u32) -> bool {
  if (i >= 32u) {
    return ((v.x >> (i - 32u)) & 1u) == 1u;
  }
  return ((v.y >> i) & 1u) == 1u;
}

// Any of bits 0..i-1 set (i <= 63).
fn low_bits_set(v: vec2u, i: u32) -> bool {
  if (i == 0u) {
    return false;
  }
  if (i < 32u) {
    return (v.y & ((1u << i) - 1u)) != 0u;
  }
  if (i == 32u) {
    return v.y != 0u;
  }
  return v.y != 0u || (v.x & ((1u << (i - 32u)) - 1u)) != 0u;
}

// The positive float32 nearest (ties to even) to v * 2^e2, for 0 < v < 2^48; overflow gives inf,
// underflow a denormal or 0.
fn round_pack(v: vec2u, e2: i32) -> u32 {
  var top: i32;
  if (v.x != 0u) {
    top = 63 - i32(countLeadingZeros(v.x));
  } else {
    top = 31 - i32(countLeadingZeros(v.y));
  }
  let biased = top + e2 + 127;
  if (biased >= 255) {
    return INF;
  }
  var s = top - 23;
  if (biased < 1) {
    s += 1 - biased;
  }
  if (s >= 49) {
    return 0u; // below half the smallest denormal
  }
  // Callers pass at least 25 significant bits, so s >= 1.
  let q = shr64(v, u32(s));
  var r = q;
  if (bit64(v, u32(s - 1)) && (low_bits_set(v, u32(s - 1)) || (q & 1u) == 1u)) {
    r += 1u;
  }
  if (biased >= 1) {
    // r in [2^23, 2^24]: a carry to 2^24 moves into the exponent, as it should.
    return min((u32(biased - 1) << 23u) + r, INF);
  }
  return r; // denormal; 2^23 here is the smallest normal
}

// A finite nonzero magnitude as m * 2^(e - 150) with bit 23 of m set (e <= 0 for denormals).
struct Unpacked {
  m: u32,
  e: i32,
}

fn unpack(mag: u32) -> Unpacked {
  let e = i32(mag >> 23u);
  let f = mag & 0x7fffffu;
  if (e == 0) {
    let sh = countLeadingZeros(f) - 8u;
    return Unpacked(f << sh, 1 - i32(sh));
  }
  return Unpacked(f | 0x800000u, e);
}

// fround(a * b), as JavaScript's Math.fround(a * b) gives it (the double product is exact).
fn f32_mul(a: u32, b: u32) -> u32 {
  let sign = (a ^ b) & SIGN;
  let ma = a & ABS;
  let mb = b & ABS;
  if (ma > INF || mb > INF) {
    return QNAN;
  }
  if (ma == INF || mb == INF) {
    if (ma == 0u || mb == 0u) {
      return QNAN;
    }
    return sign | INF;
  }
  if (ma == 0u || mb == 0u) {
    return sign;
  }
  let ua = unpack(ma);
  let ub = unpack(mb);
  return sign | round_pack(mul_wide(ua.m, ub.m), ua.e + ub.e - 300);
}

// fround(1 / m) for a positive finite m (bits), by long division: 2^48 / M with M the 24-bit
// mantissa, the remainder kept as a sticky bit.
fn f32_recip(m: u32) -> u32 {
  let u = unpack(m);
  var q = (1u << 24u) / u.m;
  var r = (1u << 24u) % u.m;
  for (var i = 0u; i < 24u; i++) {
    r = r << 1u;
    q = q << 1u;
    if (r >= u.m) {
      r -= u.m;
      q |= 1u;
    }
  }
  let v = (q << 1u) | select(0u, 1u, r != 0u);
  return round_pack(vec2u(0u, v), 101 - u.e);
}

// ---------------------------------------------------------------------------------------------
// 4-bit step.

// Bindings: block_scales (params, x, scales, absmax); codes (params, x, scales, thresholds,
// packed). Entry points of one module may reuse a binding number for different variables.
@group(0) @binding(1) var<storage, read> x_bits: array<u32>;
// Per block: the scale fround(1 / absmax) (0 for an all-zero block), float32 bits.
@group(0) @binding(2) var<storage, read_write> scales: array<u32>;
// Per block: absmax float32 bits.
@group(0) @binding(3) var<storage, read_write> absmax_out: array<u32>;
// NF4: the 15 midpoints; FP4: the 7 magnitude thresholds (float32 bits, ascending).
@group(0) @binding(3) var<storage, read> thresholds: array<u32>;
@group(0) @binding(4) var<storage, read_write> packed_out: array<u32>;

@compute @workgroup_size(64)
fn block_scales(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let b = (wg.y * p.groups_x + wg.x) * 64u + li;
  if (b >= p.count) {
    return;
  }
  let start = b * BLOCKSIZE;
  let end = min(start + BLOCKSIZE, p.n);
  // max |x| on magnitude bits (monotone for non-negative floats, denormals included).
  var m = 0u;
  for (var i = start; i < end; i++) {
    m = max(m, x_bits[i] & ABS);
  }
  absmax_out[b] = m;
  scales[b] = select(0u, f32_recip(m), m != 0u);
}

// FP4 magnitude bits by rank of the magnitude (0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1).
const FP4_RANK_TO_BITS = array<u32, 8>(0u, 1u, 6u, 7u, 4u, 5u, 2u, 3u);

// Code of a scaled value (bits), as codes.ts quantizeNf4 / quantizeFp4: the number of
// thresholds the value is strictly above; NaN gives 0.
fn code4(v: u32) -> u32 {
  if (is_nan(v)) {
    return 0u;
  }
  if (IS_FP4) {
    let mag = v & ABS;
    var rank = 0u;
    for (var t = 0u; t < 7u; t++) {
      rank += select(0u, 1u, mag > thresholds[t]);
    }
    let negative = (v & SIGN) != 0u && mag != 0u;
    return FP4_RANK_TO_BITS[rank] | select(0u, 8u, negative);
  }
  let key = f32_key(v);
  var c = 0u;
  for (var t = 0u; t < 15u; t++) {
    c += select(0u, 1u, key > f32_key(thresholds[t]));
  }
  return c;
}

@compute @workgroup_size(64)
fn codes(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let w = (wg.y * p.groups_x + wg.x) * 64u + li;
  if (w >= p.count) {
    return;
  }
  let e0 = w * 8u;
  let scale = scales[e0 / BLOCKSIZE];
  // Past the end (odd n): the code of 0.0 itself, not 0.0 * scale.
  let pad = code4(0u);
  var word = 0u;
  for (var i = 0u; i < 8u; i++) {
    let e = e0 + i;
    var c = pad;
    if (e < p.n) {
      c = code4(f32_mul(x_bits[e], scale));
    }
    // Element 2j: high nibble of byte j; byte j at bits 8*(j%4) of the word.
    word |= c << ((i >> 1u) * 8u + select(4u, 0u, (i & 1u) == 1u));
  }
  packed_out[w] = word;
}

// ---------------------------------------------------------------------------------------------
// Double quantization: 8-bit codes of absmax - offset in blocks of 256 (signed dynamic map).

@group(0) @binding(1) var<storage, read> dq_absmax: array<f32>;
@group(0) @binding(2) var<storage, read_write> dq_nested_out: array<u32>;
// Four 8-bit codes per word, code i at bits 8*(i%4).
@group(0) @binding(3) var<storage, read_write> dq_codes_out: array<u32>;
// [0, 256) the sorted map, [256, 511) midpoints fround(map[i] + map[i+1]) * 0.5 (float32 bits).
@group(0) @binding(4) var<storage, read> dq_map: array<u32>;

// codes.ts quantizeDynamic8: 7-step bisection from 127 to an even index, then the nearer
// neighbour by the float32 midpoint (an exact midpoint goes to the even index); NaN gives 0.
fn code8(v: u32) -> u32 {
  if (is_nan(v)) {
    return 0u;
  }
  let key = f32_key(v);
  var i = 127i;
  for (var step = 64i; step > 0i; step >>= 1u) {
    i += select(-step, step, key > f32_key(dq_map[i]));
  }
  if (key > f32_key(dq_map[i])) {
    return u32(select(i, i + 1i, key > f32_key(dq_map[256i + i])));
  }
  if (i == 0i) {
    return 0u;
  }
  return u32(select(i, i - 1i, key < f32_key(dq_map[256i + i - 1i])));
}

fn centered(i: u32) -> u32 {
  return bitcast<u32>(dq_absmax[i] - bitcast<f32>(p.offset_bits));
}

@compute @workgroup_size(64)
fn double_quant(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let nb = (wg.y * p.groups_x + wg.x) * 64u + li;
  if (nb >= p.count) {
    return;
  }
  let start = nb * NESTED;
  let end = min(start + NESTED, p.n);
  var m = 0u;
  for (var i = start; i < end; i++) {
    m = max(m, centered(i) & ABS);
  }
  dq_nested_out[nb] = m;
  let scale = select(0u, f32_recip(m), m != 0u);
  for (var w = start / 4u; w < start / 4u + NESTED / 4u; w++) {
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
      let i = w * 4u + k;
      if (i < end) {
        word |= code8(f32_mul(centered(i), scale)) << (8u * k);
      }
    }
    dq_codes_out[w] = word;
  }
}
