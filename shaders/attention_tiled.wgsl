{{ENABLE}}
// The workgroup-tiled variant of shaders/attention.wgsl (same layout, formulas and entry
// points; backward_prep comes from there), for GPUs: a workgroup per (batch row, head, block of
// WG queries) or, in backward_key, per (batch row, kv head, block of WG keys); each invocation
// owns one row and keeps it in registers, and the rows that the whole block reads (K and V, or Q
// and dout) are staged KB at a time in workgroup memory, so each is loaded once per block. The
// online softmax rescales the running output once per tile (scores of the tile wait in
// workgroup memory).
//
// Rows are handled as vec4s (HD4 of them, the last zero-padded when head_dim is not a multiple
// of 4). T is the element type of q, k, v in registers and tiles: f32, or f16 ("tiled_f16":
// half the workgroup memory, bandwidth and registers for them). Arithmetic is f32 throughout:
// products, dot products, the softmax statistics, the output and the gradients. dout stays f32,
// because gradients are small enough to lose most of their bits (or vanish) in f16.

//!include attention_params.wgsl

alias T = {{TILE_T}};
alias T4 = vec4<T>;
const WG: u32 = 64u;
const HD: u32 = {{HEAD_DIM}}u;
const HD4: u32 = (HD + 3u) / 4u;
// Rows per staged tile (host-sized to the adapter's workgroup storage).
const KB: u32 = {{KEY_TILE}}u;

@group(0) @binding(0) var<storage, read> q_in: array<f32>;
@group(0) @binding(1) var<storage, read> k_in: array<f32>;
@group(0) @binding(2) var<storage, read> v_in: array<f32>;
@group(0) @binding(3) var<storage, read> seg_in: array<u32>;

// forward
@group(0) @binding(4) var<storage, read_write> f_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_lse: array<f32>;
@group(0) @binding(6) var<uniform> f_params: Params;

// backward_query and backward_key
@group(0) @binding(4) var<storage, read> b_stats: array<f32>;
@group(0) @binding(5) var<storage, read> b_dout: array<f32>;
// dq (backward_query) or dk (backward_key)
@group(0) @binding(6) var<storage, read_write> b_dqk: array<f32>;
@group(0) @binding(7) var<uniform> bq_params: Params;
@group(0) @binding(7) var<storage, read_write> bk_dv: array<f32>;
@group(0) @binding(8) var<uniform> bk_params: Params;

// K (forward, backward_query) or scale * Q (backward_key) rows.
var<workgroup> tile_a: array<T4, KB * HD4>;
// V rows (forward, backward_query).
var<workgroup> tile_b: array<T4, KB * HD4>;
// dout rows (backward_key).
var<workgroup> tile_d: array<vec4f, KB * HD4>;
var<workgroup> tile_seg: array<u32, KB>;
// The scores of each query against the staged keys, [KB][WG] (forward).
var<workgroup> tile_s: array<f32, KB * WG>;
// lse and delta of the staged queries (backward_key).
var<workgroup> tile_lse: array<f32, KB>;
var<workgroup> tile_delta: array<f32, KB>;

// Elements 4c .. 4c+3 of the head_dim-long row at `base`, zero past head_dim.
fn q4(base: u32, c: u32) -> vec4f {
  var r = vec4f(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (4u * c + e < HD) {
      r[e] = q_in[base + 4u * c + e];
    }
  }
  return r;
}

fn k4(base: u32, c: u32) -> vec4f {
  var r = vec4f(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (4u * c + e < HD) {
      r[e] = k_in[base + 4u * c + e];
    }
  }
  return r;
}

fn v4(base: u32, c: u32) -> vec4f {
  var r = vec4f(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (4u * c + e < HD) {
      r[e] = v_in[base + 4u * c + e];
    }
  }
  return r;
}

fn dout4(base: u32, c: u32) -> vec4f {
  var r = vec4f(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (4u * c + e < HD) {
      r[e] = b_dout[base + 4u * c + e];
    }
  }
  return r;
}

// (batch row, head, first row) of this workgroup; uniform over it, so barriers may follow.
struct Block {
  valid: bool,
  row0: u32,
  h: u32,
  first: u32,
}

fn block_of(p: Params, wg: vec3u, heads: u32) -> Block {
  let tile = wg.y * p.groups_x + wg.x;
  let blk = tile % p.blocks;
  let h = (tile / p.blocks) % heads;
  let b = tile / (p.blocks * heads);
  return Block(b < p.rows, b * p.seq, h, blk * WG);
}

// K rows j0 .. j0+KB-1 of kv head g into tile_a, V rows into tile_b (`with_v`), their segments
// into tile_seg; rows past the sequence repeat the last one (never visible: j > every query).
fn stage_keys(p: Params, row0: u32, g: u32, j0: u32, li: u32) {
  for (var e = li; e < KB * HD4; e += WG) {
    let j = min(j0 + e / HD4, p.seq - 1u);
    let kb = ((row0 + j) * p.kv_heads + g) * HD;
    tile_a[e] = T4(k4(kb, e % HD4));
    tile_b[e] = T4(v4(kb, e % HD4));
  }
  for (var e = li; e < KB; e += WG) {
    tile_seg[e] = seg_in[row0 + min(j0 + e, p.seq - 1u)];
  }
}

// A row in registers against a staged row, products and sums in f32: the only rounding that
// f16 adds is that of the inputs, the same in every pass, so the backward's recomputed scores
// match the forward's (f16 products would round each score to ~1e-3, differently per pass).
fn dot_rows(a: ptr<function, array<T4, HD4>>, tile_row: u32) -> f32 {
  var s = 0.0;
  for (var c = 0u; c < HD4; c++) {
    s = s + dot(vec4f((*a)[c]), vec4f(tile_a[tile_row * HD4 + c]));
  }
  return s;
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = f_params;
  let blk = block_of(p, wg, p.heads);
  if (!blk.valid) {
    return;
  }
  let h = blk.h;
  let g = h / p.group;
  let i = blk.first + li;
  let live = i < p.seq;
  let tok = blk.row0 + min(i, p.seq - 1u);
  let qb = (tok * p.heads + h) * HD;
  let seg = seg_in[tok];
  var qv: array<T4, HD4>;
  for (var c = 0u; c < HD4; c++) {
    qv[c] = T4(q4(qb, c) * p.scale);
  }

  var m = LOWEST;
  var l = 0.0;
  var acc: array<vec4f, HD4>;
  // Keys up to the block's last query.
  let end = min(blk.first + WG, p.seq);
  for (var j0 = 0u; j0 < end; j0 += KB) {
    stage_keys(p, blk.row0, g, j0, li);
    workgroupBarrier();
    // Scores go to workgroup memory, not a private array: lavapipe (Mesa 25.0.7) hangs on a
    // private score array, and on a branch around the rescale, in this shader with barriers.
    var cmax = LOWEST;
    for (var jj = 0u; jj < KB; jj++) {
      var s = LOWEST;
      if (live && j0 + jj <= i && tile_seg[jj] == seg) {
        s = dot_rows(&qv, jj);
        cmax = max(cmax, s);
      }
      tile_s[jj * WG + li] = s;
    }
    // corr is 1 when the maximum stays, and 0 on the first visible tile (m = LOWEST).
    let mn = max(m, cmax);
    let corr = exp(m - mn);
    l = l * corr;
    for (var c = 0u; c < HD4; c++) {
      acc[c] = acc[c] * corr;
    }
    m = mn;
    for (var jj = 0u; jj < KB; jj++) {
      let s = tile_s[jj * WG + li];
      if (s > LOWEST) {
        let e = exp(s - m);
        l = l + e;
        for (var c = 0u; c < HD4; c++) {
          acc[c] = acc[c] + e * vec4f(tile_b[jj * HD4 + c]);
        }
      }
    }
    workgroupBarrier();
  }
  if (live) {
    let inv = 1.0 / l;
    for (var d = 0u; d < HD; d++) {
      f_out[qb + d] = acc[d / 4u][d % 4u] * inv;
    }
    f_lse[tok * p.heads + h] = m + log(l);
  }
}

@compute @workgroup_size(64)
fn backward_query(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = bq_params;
  let blk = block_of(p, wg, p.heads);
  if (!blk.valid) {
    return;
  }
  let h = blk.h;
  let g = h / p.group;
  let i = blk.first + li;
  let live = i < p.seq;
  let tok = blk.row0 + min(i, p.seq - 1u);
  let qt = tok * p.heads + h;
  let qb = qt * HD;
  let seg = seg_in[tok];
  let lse = b_stats[2u * qt];
  let delta = b_stats[2u * qt + 1u];
  var qv: array<T4, HD4>;
  var dov: array<vec4f, HD4>;
  for (var c = 0u; c < HD4; c++) {
    qv[c] = T4(q4(qb, c) * p.scale);
    dov[c] = dout4(qb, c);
  }

  var acc: array<vec4f, HD4>;
  let end = min(blk.first + WG, p.seq);
  for (var j0 = 0u; j0 < end; j0 += KB) {
    stage_keys(p, blk.row0, g, j0, li);
    workgroupBarrier();
    for (var jj = 0u; jj < KB; jj++) {
      if (live && j0 + jj <= i && tile_seg[jj] == seg) {
        let s = dot_rows(&qv, jj);
        var dp = 0.0;
        for (var c = 0u; c < HD4; c++) {
          dp = dp + dot(dov[c], vec4f(tile_b[jj * HD4 + c]));
        }
        let ds = exp(s - lse) * (dp - delta);
        for (var c = 0u; c < HD4; c++) {
          acc[c] = acc[c] + ds * vec4f(tile_a[jj * HD4 + c]);
        }
      }
    }
    workgroupBarrier();
  }
  if (live) {
    for (var d = 0u; d < HD; d++) {
      b_dqk[qb + d] = acc[d / 4u][d % 4u] * p.scale;
    }
  }
}

@compute @workgroup_size(64)
fn backward_key(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = bk_params;
  let blk = block_of(p, wg, p.kv_heads);
  if (!blk.valid) {
    return;
  }
  let g = blk.h;
  let j = blk.first + li;
  let live = j < p.seq;
  let kb = ((blk.row0 + min(j, p.seq - 1u)) * p.kv_heads + g) * HD;
  let seg = seg_in[blk.row0 + min(j, p.seq - 1u)];
  var kv: array<T4, HD4>;
  var vv: array<vec4f, HD4>;
  for (var c = 0u; c < HD4; c++) {
    kv[c] = T4(k4(kb, c));
    // Rounded like the tiles of the forward pass, so dp sees the same V.
    vv[c] = vec4f(T4(v4(kb, c)));
  }

  var dk: array<vec4f, HD4>;
  var dv: array<vec4f, HD4>;
  for (var hh = 0u; hh < p.group; hh++) {
    let h = g * p.group + hh;
    // Queries from the block's first key on: the ones any key of the block can see.
    for (var i0 = blk.first; i0 < p.seq; i0 += KB) {
      for (var e = li; e < KB * HD4; e += WG) {
        let i = min(i0 + e / HD4, p.seq - 1u);
        let qb = ((blk.row0 + i) * p.heads + h) * HD;
        tile_a[e] = T4(q4(qb, e % HD4) * p.scale);
        tile_d[e] = dout4(qb, e % HD4);
      }
      for (var e = li; e < KB; e += WG) {
        let qt = (blk.row0 + min(i0 + e, p.seq - 1u)) * p.heads + h;
        tile_seg[e] = seg_in[blk.row0 + min(i0 + e, p.seq - 1u)];
        tile_lse[e] = b_stats[2u * qt];
        tile_delta[e] = b_stats[2u * qt + 1u];
      }
      workgroupBarrier();
      for (var ii = 0u; ii < KB; ii++) {
        let i = i0 + ii;
        if (live && i < p.seq && i >= j && tile_seg[ii] == seg) {
          let s = dot_rows(&kv, ii);
          var dp = 0.0;
          for (var c = 0u; c < HD4; c++) {
            dp = dp + dot(tile_d[ii * HD4 + c], vv[c]);
          }
          let e = exp(s - tile_lse[ii]);
          let ds = e * (dp - tile_delta[ii]);
          for (var c = 0u; c < HD4; c++) {
            dv[c] = dv[c] + e * tile_d[ii * HD4 + c];
            dk[c] = dk[c] + ds * vec4f(tile_a[ii * HD4 + c]);
          }
        }
      }
      workgroupBarrier();
    }
  }
  if (live) {
    for (var d = 0u; d < HD; d++) {
      // dk sums ds * (scale q): the scale is already in.
      b_dqk[kb + d] = dk[d / 4u][d % 4u];
      bk_dv[kb + d] = dv[d / 4u][d % 4u];
    }
  }
}
