// The frozen lm_head fused with cross-entropy, one vocabulary chunk at a time, so the logits of
// all tokens never exist at once. For chunk [c0, c0+cols):
//   logits   l[r, j] = h[r, :] . W[c0+j, :]                (W bound as the chunk's rows)
//   stats    online softmax per row: running max, sum of exp, first argmax, the label's logit;
//            on the last chunk loss[r] = log(sum) + max - l[label], correct[r] = argmax == label
//   dlogits  l[r, j] <- (softmax - onehot) * grad_scale   (in place; 0 for ignored rows)
//   dh       dh[r, :] (+)= sum_j l[r, j] W[c0+j, :]
// Two variants of the products: `logits` / `dh` register-blocked 4x4 per invocation without
// barriers (CPU adapters such as llvmpipe, where barriers are slow), `logits_tiled` /
// `dh_tiled` staging 64x16 tiles of both operands in workgroup memory (real GPUs).
// `sum_f32` / `sum_u32` reduce a vector to one number in a fixed order (one workgroup).
const LOWEST: f32 = -3.0e38;
const IGNORE: i32 = -100;

struct Params {
  rows: u32,
  hidden: u32,
  vocab: u32,
  c0: u32,
  cols: u32,
  first: u32,
  last: u32,
  accumulate: u32,
  groups_x: u32,
  scale_index: u32,
  grad_scale: f32,
  _pad: u32,
}

// logits
@group(0) @binding(0) var<storage, read> lg_h: array<f32>;
@group(0) @binding(1) var<storage, read> lg_w: array<f32>;
@group(0) @binding(2) var<storage, read_write> lg_out: array<f32>;
// stats
@group(0) @binding(0) var<storage, read_write> st_logits: array<f32>; // read_write: shares a buffer with the stats
@group(0) @binding(1) var<storage, read> st_labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> st_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_loss: array<u32>;
@group(0) @binding(4) var<storage, read_write> st_correct: array<u32>;
// dlogits
@group(0) @binding(0) var<storage, read_write> dl_logits: array<f32>;
@group(0) @binding(1) var<storage, read> dl_labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> dl_stats: array<f32>; // read_write: shares a buffer with the logits
@group(0) @binding(4) var<storage, read> dl_scale: array<f32>;
// dh
@group(0) @binding(0) var<storage, read> dh_dl: array<f32>;
@group(0) @binding(1) var<storage, read> dh_w: array<f32>;
@group(0) @binding(2) var<storage, read_write> dh_out: array<f32>;

@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(5) var<uniform> st_params: Params;

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
  let h0 = min(r0, rows - 1u) * hid;
  let h1 = min(r0 + 1u, rows - 1u) * hid;
  let h2 = min(r0 + 2u, rows - 1u) * hid;
  let h3 = min(r0 + 3u, rows - 1u) * hid;
  let w0 = min(j0, cols - 1u) * hid;
  let w1 = min(j0 + 1u, cols - 1u) * hid;
  let w2 = min(j0 + 2u, cols - 1u) * hid;
  let w3 = min(j0 + 3u, cols - 1u) * hid;
  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  for (var k = 0u; k < hid; k++) {
    let w = vec4f(lg_w[w0 + k], lg_w[w1 + k], lg_w[w2 + k], lg_w[w3 + k]);
    a0 = a0 + lg_h[h0 + k] * w;
    a1 = a1 + lg_h[h1 + k] * w;
    a2 = a2 + lg_h[h2 + k] * w;
    a3 = a3 + lg_h[h3 + k] * w;
  }
  let acc = array<vec4f, 4>(a0, a1, a2, a3);
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + a;
    if (r < rows) {
      for (var b = 0u; b < 4u; b++) {
        if (j0 + b < cols) {
          lg_out[r * cols + j0 + b] = acc[a][b];
        }
      }
    }
  }
}

@compute @workgroup_size(64)
fn stats(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = (wg.y * st_params.groups_x + wg.x) * 64u + li;
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
  let label = st_labels[r];
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
  st_stats[r * 4u] = mx;
  st_stats[r * 4u + 1u] = sum;
  st_stats[r * 4u + 2u] = bitcast<f32>(arg);
  st_stats[r * 4u + 3u] = label_logit;
  if (st_params.last != 0u) {
    if (label == IGNORE) {
      st_loss[r] = 0u;
      st_correct[r] = 0u;
    } else if (label < 0 || u32(label) >= st_params.vocab) {
      st_loss[r] = 0x7fc00000u; // NaN: a label outside the vocabulary
      st_correct[r] = 0u;
    } else {
      st_loss[r] = bitcast<u32>(log(sum) + mx - label_logit);
      st_correct[r] = select(0u, 1u, arg == u32(label));
    }
  }
}

fn dlogit(t: u32, scale: f32) {
  let cols = params.cols;
  let r = t / cols;
  let j = t % cols;
  let label = dl_labels[r];
  var g = 0.0;
  if (label != IGNORE) {
    let p = exp(dl_logits[t] - dl_stats[r * 4u]) / dl_stats[r * 4u + 1u];
    g = (p - select(0.0, 1.0, i32(params.c0 + j) == label)) * scale;
  }
  dl_logits[t] = g;
}

@compute @workgroup_size(256)
fn dlogits(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wg.y * params.groups_x + wg.x) * 256u + li;
  if (t < params.rows * params.cols) {
    dlogit(t, params.grad_scale);
  }
}

@compute @workgroup_size(256)
fn dlogits_scaled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wg.y * params.groups_x + wg.x) * 256u + li;
  if (t < params.rows * params.cols) {
    dlogit(t, dl_scale[params.scale_index]);
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
  for (var j = 0u; j < cols; j++) {
    let wb = j * hid;
    let w = vec4f(dh_w[wb + x0], dh_w[wb + x1], dh_w[wb + x2], dh_w[wb + x3]);
    a0 = a0 + dh_dl[d0 + j] * w;
    a1 = a1 + dh_dl[d1 + j] * w;
    a2 = a2 + dh_dl[d2 + j] * w;
    a3 = a3 + dh_dl[d3 + j] * w;
  }
  let acc = array<vec4f, 4>(a0, a1, a2, a3);
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + a;
    if (r < rows) {
      for (var b = 0u; b < 4u; b++) {
        let x = x0 + b;
        if (x < hid) {
          let i = r * hid + x;
          if (params.accumulate != 0u) {
            dh_out[i] = dh_out[i] + acc[a][b];
          } else {
            dh_out[i] = acc[a][b];
          }
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

// Rows [r0, r0+64) x k [k0, k0+16) of a row-major [rows, ld] matrix, zeros outside.
fn stage_a_h(li: u32, r0: u32, k0: u32) {
  for (var q = 0u; q < 4u; q++) {
    let e = li + q * 256u;
    let r = e / TK;
    let kk = e % TK;
    var x = 0.0;
    if (r0 + r < params.rows && k0 + kk < params.hidden) {
      x = lg_h[(r0 + r) * params.hidden + k0 + kk];
    }
    tile_a[kk * TILE + r] = x;
  }
}

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
    stage_a_h(li, r0, k0);
    for (var q = 0u; q < 4u; q++) {
      let e = li + q * 256u;
      let j = e / TK;
      let kk = e % TK;
      var x = 0.0;
      if (j0 + j < cols && k0 + kk < hid) {
        x = lg_w[(j0 + j) * hid + k0 + kk];
      }
      tile_b[kk * TILE + j] = x;
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
        lg_out[r * cols + j] = acc[a][b];
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
        b = dh_w[(k0 + kb) * hid + x0 + x];
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
        let i = r * hid + x;
        if (params.accumulate != 0u) {
          dh_out[i] = dh_out[i] + acc[a][b];
        } else {
          dh_out[i] = acc[a][b];
        }
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
