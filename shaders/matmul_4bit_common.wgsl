// Shared by the 4-bit matmul shaders (matmul_4bit.wgsl, matmul_4bit_f16.wgsl,
// matmul_4bit_subgroup.wgsl, matmul_4bit_subgroup_matrix.wgsl): the weight's dequantization
// (dequant_4bit.wgsl, bindings 0..2), the activation and output bindings 3..4, the shape uniform
// at 5, and the element helpers. Template: the dequant_4bit.wgsl parameters and ALIGNED
// (in % 8 == 0: every row of W starts on a packed word).
//!include dequant_4bit.wgsl

struct Params {
  m: u32,
  n_in: u32,
  n_out: u32,
  accumulate: u32,
  // 1-D grids (any, tiled): workgroups along x.
  groups_x: u32,
  // 1-D grids: tiles along the fast output dimension (out forward, in backward).
  tiles: u32,
  // Double-quant offset, f32 bits.
  offset_bits: u32,
  // log2 of the blocksize.
  block_shift: u32,
}

// X (forward) or dY (backward), row-major; one of these three views per entry point.
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> x4: array<vec4f>;
@group(0) @binding(3) var<storage, read> dy4: array<vec4f>;
// Y (forward) or dX (backward), row-major.
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

const ALIGNED: bool = {{ALIGNED}};

fn q_nested_offset() -> f32 {
  return bitcast<f32>(p.offset_bits);
}

fn q_block_shift() -> u32 {
  return p.block_shift;
}

fn store(idx: u32, v: f32) {
  if (p.accumulate != 0u) {
    dst[idx] = dst[idx] + v;
  } else {
    dst[idx] = v;
  }
}

// Weights of W's row starting at flattened element `row`, columns k..k+7. Unaligned rows:
// columns past `in` read column in-1 and must meet zero activations or be left unstored. The
// eight span at most two blocks; two absmax lookups keep the generated code small.
fn weights8(row: u32, k: u32) -> QWeights8 {
  if (ALIGNED) {
    return q_weights8(row + k);
  }
  let last = p.n_in - 1u;
  let b0 = (row + min(k, last)) >> p.block_shift;
  let s0 = q_block_absmax(b0);
  let s1 = q_block_absmax((row + min(k + 7u, last)) >> p.block_shift);
  var v: array<f32, 8>;
  for (var c = 0u; c < 8u; c++) {
    let e = row + min(k + c, last);
    v[c] = q_code_value(e) * select(s1, s0, (e >> p.block_shift) == b0);
  }
  return QWeights8(vec4f(v[0], v[1], v[2], v[3]), vec4f(v[4], v[5], v[6], v[7]));
}

fn src_or_zero(row: u32, k: u32) -> f32 {
  return select(0.0, src[row + min(k, p.n_in - 1u)], k < p.n_in);
}
