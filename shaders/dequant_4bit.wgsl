// Dequantizes bitsandbytes 4-bit weights (NF4/FP4, optional double quant) in registers.
// Bindings 0..2 are the weight (src/kernels/quant_weight.ts); the including shader numbers its
// own bindings from 3 and defines `fn q_block_shift() -> u32` (log2 blocksize) and
// `fn q_nested_offset() -> f32` (the double-quant offset), both from its uniform.
// Template (quant_weight.ts dequantShaderParams): DOUBLE_QUANT (true/false), QUANT_MAP (16 float
// literals), NESTED_MAP (256 float literals). The maps are shader constants: on llvmpipe a
// constant-table lookup costs far less than a storage or uniform load.
//
// Flattened element e (row-major [out, in]): byte e/2 holds it, element 2j in the HIGH nibble
// of byte j; bytes are packed little-endian into u32 words, so byte j sits at bits 8*(j%4).

@group(0) @binding(0) var<storage, read> q_packed: array<u32>;
// Without double quant: f32 absmax bits per block. With it: four 8-bit codes per word.
@group(0) @binding(1) var<storage, read> q_absmax: array<u32>;
// Double quant only (a dummy otherwise): one f32 scale per 256 blocks.
@group(0) @binding(2) var<storage, read> q_nested: array<f32>;

const Q_DOUBLE_QUANT: bool = {{DOUBLE_QUANT}};
const Q_MAP = array<f32, 16>({{QUANT_MAP}});
const Q_NESTED_MAP = array<f32, 256>({{NESTED_MAP}});

// absmax of block b: nestedMap[code] * nestedAbsmax[b/256] + offset, as bnb computes it.
fn q_block_absmax(b: u32) -> f32 {
  if (Q_DOUBLE_QUANT) {
    let code = (q_absmax[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
    return Q_NESTED_MAP[code] * q_nested[b >> 8u] + q_nested_offset();
  }
  return bitcast<f32>(q_absmax[b]);
}

// The code value (not yet scaled) of element e, anywhere.
fn q_code_value(e: u32) -> f32 {
  let word = q_packed[e >> 3u];
  let shift = ((e >> 1u) & 3u) * 8u + select(4u, 0u, (e & 1u) == 1u);
  return Q_MAP[(word >> shift) & 15u];
}

// One element anywhere (no alignment needed).
fn q_weight(e: u32) -> f32 {
  return q_code_value(e) * q_block_absmax(e >> q_block_shift());
}

// Eight consecutive elements, in element order.
struct QWeights8 {
  lo: vec4f,
  hi: vec4f,
}

// The eight values of packed word w (elements 8i..8i+7) scaled by s.
fn q_unpack8(w: u32, s: f32) -> QWeights8 {
  let lo = vec4f(
    Q_MAP[(w >> 4u) & 15u],
    Q_MAP[w & 15u],
    Q_MAP[(w >> 12u) & 15u],
    Q_MAP[(w >> 8u) & 15u],
  );
  let hi = vec4f(
    Q_MAP[(w >> 20u) & 15u],
    Q_MAP[(w >> 16u) & 15u],
    Q_MAP[w >> 28u],
    Q_MAP[(w >> 24u) & 15u],
  );
  return QWeights8(lo * s, hi * s);
}

// Elements e..e+7 for e a multiple of 8: one packed word, one block (blocks are >= 32).
fn q_weights8(e: u32) -> QWeights8 {
  return q_unpack8(q_packed[e >> 3u], q_block_absmax(e >> q_block_shift()));
}
