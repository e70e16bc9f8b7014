// The frozen lm_head fused with cross-entropy, one block of token rows x vocabulary columns at a
// time, so the logits of all tokens never exist at once (src/kernels/cross_entropy.ts). For
// rows [r0, r0+rows) and columns [c0, c0+cols) (Params in cross_entropy_common.wgsl):
//   logits   l[r, j] = h[r0+r, :] . W[c0+j, :]             (W: a bf16/f16 table chunk)
//   stats    online softmax per row: running max, sum of exp, first argmax, the label's logit;
//            on the last column block loss = log(sum) + max - l[label], correct = argmax == label
//   dlogits  l[r, j] <- (softmax - onehot) * grad_scale   (in place; 0 for ignored rows)
//   dh       dh[r0+r, :] (+)= sum_j l[r, j] W[c0+j, :]
// Two variants of the products: `logits` / `dh` register-blocked 4x4 per invocation without
// barriers (CPU adapters such as llvmpipe, where barriers are slow), `logits_tiled` /
// `dh_tiled` staging 64x16 tiles of both operands in workgroup memory (real GPUs); f16 tiles
// and subgroup stats live in cross_entropy_f16.wgsl and cross_entropy_subgroup.wgsl.
// `sum_f32` / `sum_u32` reduce a vector to one number in a fixed order (one workgroup).
//!include cross_entropy_common.wgsl

@compute @workgroup_size(8, 8)
fn logits(@builtin(global_invocation_id) gid: vec3u) {
  let j0 = gid.x * 4u;
  let r0 = gid.y * 4u;
  let rows = params.rows;
  let cols = params.cols;
  let hid = params.hidden;
  if (j0 >= cols || r0 >= rows) {
    return;
  }
  // Out-of-range rows and columns read the last valid one and are not stored.
  let hb = params.r0 * hid;
  let h0 = hb + min(r0, rows - 1u) * hid;
  let h1 = hb + min(r0 + 1u, rows - 1u) * hid;
  let h2 = hb + min(r0 + 2u, rows - 1u) * hid;
  let h3 = hb + min(r0 + 3u, rows - 1u) * hid;
  let w0 = min(j0, cols - 1u);
  let w1 = min(j0 + 1u, cols - 1u);
  let w2 = min(j0 + 2u, cols - 1u);
  let w3 = min(j0 + 3u, cols - 1u);
  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  if ((hid & 1u) == 0u) {
    // Even rows start on a word: one u32 load gives two k of a row.
    let words = hid / 2u;
    let b0 = (params.w_row0 + w0) * words;
    let b1 = (params.w_row0 + w1) * words;
    let b2 = (params.w_row0 + w2) * words;
    let b3 = (params.w_row0 + w3) * words;
    for (var q = 0u; q < words; q++) {
      let p0 = table16_pair(lg_w[b0 + q]);
      let p1 = table16_pair(lg_w[b1 + q]);
      let p2 = table16_pair(lg_w[b2 + q]);
      let p3 = table16_pair(lg_w[b3 + q]);
      let wa = vec4f(p0.x, p1.x, p2.x, p3.x);
      let wb = vec4f(p0.y, p1.y, p2.y, p3.y);
      let k = 2u * q;
      a0 = a0 + lg_h[h0 + k] * wa + lg_h[h0 + k + 1u] * wb;
      a1 = a1 + lg_h[h1 + k] * wa + lg_h[h1 + k + 1u] * wb;
      a2 = a2 + lg_h[h2 + k] * wa + lg_h[h2 + k + 1u] * wb;
      a3 = a3 + lg_h[h3 + k] * wa + lg_h[h3 + k + 1u] * wb;
    }
  } else {
    for (var k = 0u; k < hid; k++) {
      let w = vec4f(lg_weight(w0, k), lg_weight(w1, k), lg_weight(w2, k), lg_weight(w3, k));
      a0 = a0 + lg_h[h0 + k] * w;
      a1 = a1 + lg_h[h1 + k] * w;
      a2 = a2 + lg_h[h2 + k] * w;
      a3 = a3 + lg_h[h3 + k] * w;
    }
  }
  let acc = array<vec4f, 4>(a0, a1, a2, a3);
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + a;
    if (r < rows) {
      for (var b = 0u; b < 4u; b++) {
        if (j0 + b < cols) {
          lg_out[r * params.out_stride + params.out_col0 + j0 + b] = acc[a][b];
        }
      }
    }
  }
}

// One invocation per row, walking the block's columns in order.
@compute @workgroup_size(64)
fn stats(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = (wg.y * st_params.stats_groups_x + wg.x) * 64u + li;
  if (r >= st_params.rows) {
    return;
  }
  var mx = LOWEST;
  var sum = 0.0;
  var arg = 0u;
  var label_logit = 0.0;
  if (st_params.first == 0u) {
    mx = st_stats[r * 4u];
    sum = st_stats[r * 4u + 1u];
    arg = bitcast<u32>(st_stats[r * 4u + 2u]);
    label_logit = st_stats[r * 4u + 3u];
  }
  let label = st_labels[st_params.r0 + r];
  let cols = st_params.cols;
  for (var j = 0u; j < cols; j++) {
    let l = st_logits[r * cols + j];
    if (l > mx) {
      sum = sum * exp(mx - l) + 1.0;
      mx = l;
      arg = st_params.c0 + j;
    } else {
      sum = sum + exp(l - mx);
    }
    if (i32(st_params.c0 + j) == label) {
      label_logit = l;
    }
  }
  store_stats(r, mx, sum, arg, label_logit);
}

fn dlogit(t: u32, scale: f32) {
  let cols = params.cols;
  let r = t / cols;
  let j = t % cols;
  let label = dl_labels[params.r0 + r];
  var g = 0.0;
  if (label != IGNORE) {
    let p = exp(dl_logits[t] - dl_stats[r * 4u]) / dl_stats[r * 4u + 1u];
    g = (p - select(0.0, 1.0, i32(params.c0 + j) == label)) * scale;
  }
  dl_logits[t] = g;
}

@compute @workgroup_size(256)
fn dlogits(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wg.y * params.dl_groups_x + wg.x) * 256u + li;
  if (t < params.rows * params.cols) {
    dlogit(t, params.grad_scale);
  }
}

@compute @workgroup_size(256)
fn dlogits_scaled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wg.y * params.dl_groups_x + wg.x) * 256u + li;
  if (t < params.rows * params.cols) {
    dlogit(t, dl_scale[params.scale_index]);
  }
}

fn store_dh(r: u32, x: u32, v: f32) {
  let i = (params.r0 + r) * params.hidden + x;
  if (params.accumulate != 0u) {
    dh_out[i] = dh_out[i] + v;
  } else {
    dh_out[i] = v;
  }
}

@compute @workgroup_size(8, 8)
fn dh(@builtin(global_invocation_id) gid: vec3u) {
  let x0 = gid.x * 4u;
  let r0 = gid.y * 4u;
  let rows = params.rows;
  let cols = params.cols;
  let hid = params.hidden;
  if (x0 >= hid || r0 >= rows) {
    return;
  }
  let d0 = min(r0, rows - 1u) * cols;
  let d1 = min(r0 + 1u, rows - 1u) * cols;
  let d2 = min(r0 + 2u, rows - 1u) * cols;
  let d3 = min(r0 + 3u, rows - 1u) * cols;
  let x1 = min(x0 + 1u, hid - 1u);
  let x2 = min(x0 + 2u, hid - 1u);
  let x3 = min(x0 + 3u, hid - 1u);
  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  // With an even hidden and all four columns in the row, x0 (a multiple of 4) starts a word:
  // two u32 loads give the four weights.
  let paired = (hid & 1u) == 0u && x0 + 3u < hid;
  for (var j = 0u; j < cols; j++) {
    var w: vec4f;
    if (paired) {
      let e = ((params.w_row0 + j) * hid + x0) / 2u;
      w = vec4f(table16_pair(dh_w[e]), table16_pair(dh_w[e + 1u]));
    } else {
      w = vec4f(dh_weight(j, x0), dh_weight(j, x1), dh_weight(j, x2), dh_weight(j, x3));
    }
    a0 = a0 + dh_dl[d0 + j] * w;
    a1 = a1 + dh_dl[d1 + j] * w;
    a2 = a2 + dh_dl[d2 + j] * w;
    a3 = a3 + dh_dl[d3 + j] * w;
  }
  let acc = array<vec4f, 4>(a0, a1, a2, a3);
  for (var a = 0u; a < 4u; a++) {
    if (r0 + a < rows) {
      for (var b = 0u; b < 4u; b++) {
        if (x0 + b < hid) {
          store_dh(r0 + a, x0 + b, acc[a][b]);
        }
      }
    }
  }
}

// ---- workgroup-tiled products: 16x16 invocations, 4x4 outputs each, a 64x64 output tile,
// K staged 16 at a time. Tiles are stored k-major: tile_a[kk * 64 + row], tile_b[kk * 64 + col].
const TILE: u32 = 64u;
const TK: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>;
var<workgroup> tile_b: array<f32, 1024>;

fn multiply_tiles(tx: u32, ty: u32, acc: ptr<function, array<vec4f, 4>>) {
  for (var kk = 0u; kk < TK; kk++) {
    let a = vec4f(
      tile_a[kk * TILE + ty * 4u],
      tile_a[kk * TILE + ty * 4u + 1u],
      tile_a[kk * TILE + ty * 4u + 2u],
      tile_a[kk * TILE + ty * 4u + 3u],
    );
    let b = vec4f(
      tile_b[kk * TILE + tx * 4u],
      tile_b[kk * TILE + tx * 4u + 1u],
      tile_b[kk * TILE + tx * 4u + 2u],
      tile_b[kk * TILE + tx * 4u + 3u],
    );
    (*acc)[0] = (*acc)[0] + a.x * b;
    (*acc)[1] = (*acc)[1] + a.y * b;
    (*acc)[2] = (*acc)[2] + a.z * b;
    (*acc)[3] = (*acc)[3] + a.w * b;
  }
}

@compute @workgroup_size(16, 16)
fn logits_tiled(
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
      tile_a[kk * TILE + i] = a;
      var b = 0.0;
      if (j0 + i < cols && k0 + kk < hid) {
        b = lg_weight(j0 + i, k0 + kk);
      }
      tile_b[kk * TILE + i] = b;
    }
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y, &acc);
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

@compute @workgroup_size(16, 16)
fn dh_tiled(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_id) lid: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let x0 = wg.x * TILE;
  let r0 = wg.y * TILE;
  let rows = params.rows;
  let cols = params.cols;
  let hid = params.hidden;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < cols; k0 += TK) {
    for (var q = 0u; q < 4u; q++) {
      let e = li + q * 256u;
      let r = e / TK;
      let kk = e % TK;
      var a = 0.0;
      if (r0 + r < rows && k0 + kk < cols) {
        a = dh_dl[(r0 + r) * cols + k0 + kk];
      }
      tile_a[kk * TILE + r] = a;
      let kb = e / TILE;
      let x = e % TILE;
      var b = 0.0;
      if (k0 + kb < cols && x0 + x < hid) {
        b = dh_weight(k0 + kb, x0 + x);
      }
      tile_b[kb * TILE + x] = b;
    }
    workgroupBarrier();
    multiply_tiles(lid.x, lid.y, &acc);
    workgroupBarrier();
  }
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + lid.y * 4u + a;
    for (var b = 0u; b < 4u; b++) {
      let x = x0 + lid.x * 4u + b;
      if (r < rows && x < hid) {
        store_dh(r, x, acc[a][b]);
      }
    }
  }
}

// ---- sum of a vector into out[out_index], fixed order: invocation i adds i, i+256, ...; then
// a tree over the workgroup.
struct SumParams {
  n: u32,
  accumulate: u32,
  out_index: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> sum_in_f32: array<f32>;
@group(0) @binding(1) var<storage, read_write> sum_out_f32: array<f32>;
@group(0) @binding(0) var<storage, read> sum_in_u32: array<u32>;
@group(0) @binding(1) var<storage, read_write> sum_out_u32: array<u32>;
@group(0) @binding(2) var<uniform> sum_params: SumParams;

var<workgroup> partial_f32: array<f32, 256>;
var<workgroup> partial_u32: array<u32, 256>;

@compute @workgroup_size(256)
fn sum_f32(@builtin(local_invocation_index) li: u32) {
  var acc = 0.0;
  for (var i = li; i < sum_params.n; i += 256u) {
    acc = acc + sum_in_f32[i];
  }
  partial_f32[li] = acc;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride / 2u) {
    if (li < stride) {
      partial_f32[li] = partial_f32[li] + partial_f32[li + stride];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let o = sum_params.out_index;
    if (sum_params.accumulate != 0u) {
      sum_out_f32[o] = sum_out_f32[o] + partial_f32[0];
    } else {
      sum_out_f32[o] = partial_f32[0];
    }
  }
}

@compute @workgroup_size(256)
fn sum_u32(@builtin(local_invocation_index) li: u32) {
  var acc = 0u;
  for (var i = li; i < sum_params.n; i += 256u) {
    acc = acc + sum_in_u32[i];
  }
  partial_u32[li] = acc;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride / 2u) {
    if (li < stride) {
      partial_u32[li] = partial_u32[li] + partial_u32[li + stride];
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    let o = sum_params.out_index;
    if (sum_params.accumulate != 0u) {
      sum_out_u32[o] = sum_out_u32[o] + partial_u32[0];
    } else {
      sum_out_u32[o] = partial_u32[0];
    }
  }
}
