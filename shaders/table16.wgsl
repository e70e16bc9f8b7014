// 16-bit table elements packed two per u32 (element 2i in the low half), decoded to f32 without
// `shader-f16`: bf16 is the top half of an f32, so a shift; f16 through unpack2x16float.
// TABLE_F16 is a template parameter: 1 for f16 tables, 0 for bf16 (src/kernels/row_chunks.ts).
const TABLE_F16: bool = {{TABLE_F16}} != 0;

// Element e of a table whose word e / 2 is `word`.
fn table16_value(word: u32, e: u32) -> f32 {
  if (TABLE_F16) {
    return unpack2x16float(word)[e & 1u];
  }
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
}

// Both elements of one word: (element 2i, element 2i + 1).
fn table16_pair(word: u32) -> vec2f {
  if (TABLE_F16) {
    return unpack2x16float(word);
  }
  return vec2f(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}
