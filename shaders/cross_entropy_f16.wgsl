// The logits product of the lm_head cross-entropy (cross_entropy.wgsl) with f16 tiles: h and
// W are staged in workgroup memory as f16 (half the bytes of f32 tiles) and multiplied in f16,
// each 4-wide product added to f32 accumulators. Used for the logits (forward and its
// recomputation) only: dh multiplies by dlogits = (softmax - onehot) * grad_scale, whose
// small entries (a flat softmax over 128k words times 1/tokens is ~1e-9) underflow in f16, so
// dh keeps f32 tiles. Needs `shader-f16`; h must stay within f16's range (|h| < 65504), as a
// final-normed hidden state does.
enable f16;
//!include cross_entropy_common.wgsl

const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a16: array<f16, 1024>;
var<workgroup> tile_b16: array<f16, 1024>;

@compute @workgroup_size(16, 16)
fn logits_tiled_f16(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let j0 = wg.x * TILE;
  let r0 = wg.y * TILE;
  let cols = params.cols;
  let hid = params.hidden;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < hid; k0 += TK) {
    for (var q = 0u; q < 4u; q++) {
      let e = li + q * 256u;
      let i = e / TK;
      let kk = e % TK;
      var a = 0.0;
      if (r0 + i < params.rows && k0 + kk < hid) {
        a = lg_h[(params.r0 + r0 + i) * hid + k0 + kk];
      }
      tile_a16[kk * TILE + i] = f16(a);
      var b = 0.0;
      if (j0 + i < cols && k0 + kk < hid) {
        b = lg_weight(j0 + i, k0 + kk);
      }
      tile_b16[kk * TILE + i] = f16(b);
    }
    workgroupBarrier();
    let ty = lid.y * 4u;
    let tx = lid.x * 4u;
    for (var kk = 0u; kk < TK; kk++) {
      let a = vec4h(
        tile_a16[kk * TILE + ty],
        tile_a16[kk * TILE + ty + 1u],
        tile_a16[kk * TILE + ty + 2u],
        tile_a16[kk * TILE + ty + 3u],
      );
      let b = vec4h(
        tile_b16[kk * TILE + tx],
        tile_b16[kk * TILE + tx + 1u],
        tile_b16[kk * TILE + tx + 2u],
        tile_b16[kk * TILE + tx + 3u],
      );
      acc[0] = acc[0] + vec4f(a.x * b);
      acc[1] = acc[1] + vec4f(a.y * b);
      acc[2] = acc[2] + vec4f(a.z * b);
      acc[3] = acc[3] + vec4f(a.w * b);
    }
    workgroupBarrier();
  }
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + lid.y * 4u + a;
    for (var b = 0u; b < 4u; b++) {
      let j = j0 + lid.x * 4u + b;
      if (r < params.rows && j < cols) {
        lg_out[r * params.out_stride + params.out_col0 + j] = acc[a][b];
      }
    }
  }
}
