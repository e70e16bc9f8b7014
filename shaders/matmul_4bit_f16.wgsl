// 4-bit matmuls (see matmul_4bit.wgsl) with f16 workgroup tiles:
//   forward_tiled_f16:  Y[m, out] (=|+=) X[m, in] . W^T
//   backward_tiled_f16: dX[m, in] (=|+=) dY[m, out] . W
// The structure of matmul_4bit.wgsl's *_tiled kernels (16x16 invocations, a 64x64 output tile,
// 4x4 outputs per invocation strided by 16, W dequantized once per workgroup), but the tiles hold
// f16 pairs along the reduction: one vec2<f16> load brings two reduction steps, halving the
// workgroup-memory loads of the f32 tiles. Activations and weights are rounded to f16 once, when
// staged; products and sums are f32. Template: as matmul_4bit_common.wgsl.
enable f16;

//!include matmul_4bit_common.wgsl

const T_DIM: u32 = 64u;
// Reduction pairs per staged tile (32 steps).
const T_KP: u32 = 16u;
// Staged tiles, pair-major: a_tile[kp * 64 + row], b_tile[kp * 64 + col].
var<workgroup> a_tile: array<vec2h, 1024>;
var<workgroup> b_tile: array<vec2h, 1024>;

//!include matmul_4bit_tiled_store.wgsl

fn tiled_accumulate(acc: ptr<function, array<vec4f, 4>>, lx: u32, ly: u32) {
  for (var kp = 0u; kp < T_KP; kp++) {
    let a0 = vec2f(a_tile[kp * T_DIM + ly]);
    let a1 = vec2f(a_tile[kp * T_DIM + ly + 16u]);
    let a2 = vec2f(a_tile[kp * T_DIM + ly + 32u]);
    let a3 = vec2f(a_tile[kp * T_DIM + ly + 48u]);
    let b0 = vec2f(b_tile[kp * T_DIM + lx]);
    let b1 = vec2f(b_tile[kp * T_DIM + lx + 16u]);
    let b2 = vec2f(b_tile[kp * T_DIM + lx + 32u]);
    let b3 = vec2f(b_tile[kp * T_DIM + lx + 48u]);
    let be = vec4f(b0.x, b1.x, b2.x, b3.x);
    let bo = vec4f(b0.y, b1.y, b2.y, b3.y);
    (*acc)[0] += a0.x * be + a0.y * bo;
    (*acc)[1] += a1.x * be + a1.y * bo;
    (*acc)[2] += a2.x * be + a2.y * bo;
    (*acc)[3] += a3.x * be + a3.y * bo;
  }
}

@compute @workgroup_size(16, 16)
fn forward_tiled_f16(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let tile = wg.y * p.groups_x + wg.x;
  let c0 = (tile % p.tiles) * T_DIM; // outputs (rows of W)
  let i0 = (tile / p.tiles) * T_DIM; // rows of X
  // Staging: X tile row li/4, columns (li%4)*8..+7 (four pairs); W tile row li/4, the same.
  let sr = li / 4u;
  let sk = (li % 4u) * 8u;
  let x_ok = i0 + sr < p.m;
  let x_row = min(i0 + sr, p.m - 1u) * p.n_in;
  let w_ok = c0 + sr < p.n_out;
  let w_row = min(c0 + sr, p.n_out - 1u) * p.n_in;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < p.n_in; k0 += 2u * T_KP) {
    let k = k0 + sk;
    var w = QWeights8(vec4f(0.0), vec4f(0.0));
    if (w_ok && k < p.n_in) {
      w = weights8(w_row, k);
    }
    var x: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
      x[c] = select(0.0, src[x_row + min(k + c, p.n_in - 1u)], x_ok && k + c < p.n_in);
    }
    // Columns past `in` meet zero activations; W there is finite, so the products are zero.
    let kp = sk / 2u;
    b_tile[kp * T_DIM + sr] = vec2h(vec2f(w.lo.x, w.lo.y));
    b_tile[(kp + 1u) * T_DIM + sr] = vec2h(vec2f(w.lo.z, w.lo.w));
    b_tile[(kp + 2u) * T_DIM + sr] = vec2h(vec2f(w.hi.x, w.hi.y));
    b_tile[(kp + 3u) * T_DIM + sr] = vec2h(vec2f(w.hi.z, w.hi.w));
    for (var c = 0u; c < 4u; c++) {
      a_tile[(kp + c) * T_DIM + sr] = vec2h(vec2f(x[2u * c], x[2u * c + 1u]));
    }
    workgroupBarrier();
    tiled_accumulate(&acc, lid.x, lid.y);
    workgroupBarrier();
  }
  tiled_store(i0, c0, lid.x, lid.y, p.n_out, acc);
}

@compute @workgroup_size(16, 16)
fn backward_tiled_f16(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let tile = wg.y * p.groups_x + wg.x;
  let c0 = (tile % p.tiles) * T_DIM; // columns of dX (and of W)
  let i0 = (tile / p.tiles) * T_DIM; // rows of dY
  // Staging: dY tile row li/4, W rows (li%4)*8..+7 (four pairs); W tile row li/8, word li%8,
  // written as one half of each of its eight columns' pairs.
  let sr = li / 4u;
  let so = (li % 4u) * 8u;
  let d_ok = i0 + sr < p.m;
  let d_row = min(i0 + sr, p.m - 1u) * p.n_out;
  let wr = li / 8u;
  let wk = c0 + (li % 8u) * 8u;
  var acc: array<vec4f, 4>;
  for (var o0 = 0u; o0 < p.n_out; o0 += 2u * T_KP) {
    let o = o0 + wr;
    var w = QWeights8(vec4f(0.0), vec4f(0.0));
    if (o < p.n_out && wk < p.n_in) {
      w = weights8(o * p.n_in, wk);
    }
    let wb = (wr / 2u) * T_DIM + (li % 8u) * 8u;
    let half = wr % 2u;
    for (var c = 0u; c < 4u; c++) {
      b_tile[wb + c][half] = f16(w.lo[c]);
      b_tile[wb + c + 4u][half] = f16(w.hi[c]);
    }
    var d: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
      let o = o0 + so + c;
      d[c] = select(0.0, src[d_row + min(o, p.n_out - 1u)], d_ok && o < p.n_out);
    }
    let kp = so / 2u;
    for (var c = 0u; c < 4u; c++) {
      a_tile[(kp + c) * T_DIM + sr] = vec2h(vec2f(d[2u * c], d[2u * c + 1u]));
    }
    workgroupBarrier();
    tiled_accumulate(&acc, lid.x, lid.y);
    workgroupBarrier();
  }
  tiled_store(i0, c0, lid.x, lid.y, p.n_in, acc);
}
