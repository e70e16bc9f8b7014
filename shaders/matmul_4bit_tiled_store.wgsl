// The output store of the workgroup-tiled 4-bit matmuls (matmul_4bit.wgsl's *_tiled and
// matmul_4bit_f16.wgsl's *_tiled_f16): both hold a 64x64 output tile as 4x4 f32 outputs per
// invocation strided by 16, whatever their staged tiles' type. Needs matmul_4bit_common.wgsl.

fn tiled_store(i0: u32, c0: u32, lx: u32, ly: u32, n_cols: u32, acc: array<vec4f, 4>) {
  for (var a = 0u; a < 4u; a++) {
    let i = i0 + ly + 16u * a;
    if (i < p.m) {
      for (var b = 0u; b < 4u; b++) {
        let c = c0 + lx + 16u * b;
        if (c < n_cols) {
          store(i * n_cols + c, acc[a][b]);
        }
      }
    }
  }
}
