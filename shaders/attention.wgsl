// Causal self-attention with grouped-query heads and packed segments, softmax materialized.
// Layout, token-major: q/out/dq [batch*seq, heads*head_dim], k/v/dk/dv [batch*seq,
// kv_heads*head_dim], segments u32 [batch*seq], probs/ds [rows, heads, seq, seq] for the `rows`
// batch rows of this dispatch, starting at batch row `row0`. Query i sees key j iff j <= i and
// segments match; masked probabilities are exactly 0, which the backward pass uses as the mask.
// One invocation per output row, so every output element has exactly one writer: `forward` and
// `backward_query` per (row, head, query), `backward_key` per (row, kv head, key), the latter
// summing over the query heads that share its kv head. Each invocation keeps its head_dim-long
// row accumulators in private arrays (HD = head_dim, a template parameter, so loops over it have
// a constant trip count), and reads every probability once.
//
// Two variants of each entry point, which visit keys (queries) in the same order and so give
// the same bits:
// - `forward`, `backward_query`, `backward_key` ("row"): one invocation per row, reading K/V (or
//   Q/dout) straight from storage; no workgroup memory, no barriers (llvmpipe).
// - `*_tiled` ("tiled"): a workgroup per (batch row, head, block of WG queries or keys); the
//   K or V rows (Q and dout rows in backward_key) that the whole block reads are staged KB rows
//   at a time in workgroup memory, so each is loaded once per block, not once per row (GPUs).
const WG: u32 = 64u;
const HD: u32 = {{HEAD_DIM}}u;
// Tiled variants: rows staged per tile (host-sized to the adapter's workgroup storage).
const KB: u32 = {{KEY_TILE}}u;
const LOWEST: f32 = -3.0e38;

struct Params {
  seq: u32,
  heads: u32,
  kv_heads: u32,
  head_dim: u32,
  rows: u32,
  row0: u32,
  group: u32,
  groups_x: u32,
  scale: f32,
  // Tiled variants: blocks of WG queries (keys) per sequence.
  blocks: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> f_q: array<f32>;
@group(0) @binding(1) var<storage, read> f_k: array<f32>;
@group(0) @binding(2) var<storage, read> f_v: array<f32>;
@group(0) @binding(3) var<storage, read> f_segments: array<u32>;
@group(0) @binding(4) var<storage, read_write> f_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_probs: array<f32>;

@group(0) @binding(0) var<storage, read> a_k: array<f32>;
@group(0) @binding(1) var<storage, read> a_v: array<f32>;
@group(0) @binding(2) var<storage, read> a_probs: array<f32>;
@group(0) @binding(3) var<storage, read> a_dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> a_ds: array<f32>;
@group(0) @binding(5) var<storage, read_write> a_dq: array<f32>;

@group(0) @binding(0) var<storage, read> b_q: array<f32>;
@group(0) @binding(1) var<storage, read> b_probs: array<f32>;
@group(0) @binding(2) var<storage, read> b_ds: array<f32>;
@group(0) @binding(3) var<storage, read> b_dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> b_dk: array<f32>;
@group(0) @binding(5) var<storage, read_write> b_dv: array<f32>;

@group(0) @binding(6) var<uniform> params: Params;

fn invocation(wg: vec3u, li: u32) -> u32 {
  return (wg.y * params.groups_x + wg.x) * WG + li;
}

fn kv_base(b: u32, j: u32, g: u32) -> u32 {
  return ((b * params.seq + j) * params.kv_heads + g) * HD;
}

// P = softmax(scale * q k^T) over visible keys; out = P v.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = invocation(wg, li);
  let seq = params.seq;
  if (t >= params.rows * params.heads * seq) {
    return;
  }
  let i = t % seq;
  let h = (t / seq) % params.heads;
  let b = params.row0 + t / (seq * params.heads);
  let g = h / params.group;
  let prow = t * seq;
  let qbase = ((b * seq + i) * params.heads + h) * HD;
  let seg = f_segments[b * seq + i];
  var qv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    qv[d] = f_q[qbase + d];
  }

  var mx = LOWEST;
  for (var j = 0u; j <= i; j++) {
    if (f_segments[b * seq + j] == seg) {
      let kb = kv_base(b, j, g);
      var dot = 0.0;
      for (var d = 0u; d < HD; d++) {
        dot = dot + qv[d] * f_k[kb + d];
      }
      let s = dot * params.scale;
      f_probs[prow + j] = s;
      mx = max(mx, s);
    }
  }
  var sum = 0.0;
  for (var j = 0u; j < seq; j++) {
    var e = 0.0;
    if (j <= i && f_segments[b * seq + j] == seg) {
      e = exp(f_probs[prow + j] - mx);
      sum = sum + e;
    }
    f_probs[prow + j] = e;
  }
  let inv = 1.0 / sum;
  var acc: array<f32, HD>;
  for (var j = 0u; j <= i; j++) {
    let p = f_probs[prow + j] * inv;
    f_probs[prow + j] = p;
    if (p != 0.0) {
      let vb = kv_base(b, j, g);
      for (var d = 0u; d < HD; d++) {
        acc[d] = acc[d] + p * f_v[vb + d];
      }
    }
  }
  for (var d = 0u; d < HD; d++) {
    f_out[qbase + d] = acc[d];
  }
}

// dP_ij = dout_i . v_j ; dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij) (stored for backward_key) ;
// dq_i = scale * sum_j dS_ij k_j. Only entries j <= i of dS are written (and later read).
@compute @workgroup_size(64)
fn backward_query(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = invocation(wg, li);
  let seq = params.seq;
  if (t >= params.rows * params.heads * seq) {
    return;
  }
  let i = t % seq;
  let h = (t / seq) % params.heads;
  let b = params.row0 + t / (seq * params.heads);
  let g = h / params.group;
  let prow = t * seq;
  let qbase = ((b * seq + i) * params.heads + h) * HD;
  var dov: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    dov[d] = a_dout[qbase + d];
  }

  var row_dot = 0.0;
  for (var j = 0u; j <= i; j++) {
    let p = a_probs[prow + j];
    var dp = 0.0;
    if (p != 0.0) {
      let vb = kv_base(b, j, g);
      for (var d = 0u; d < HD; d++) {
        dp = dp + dov[d] * a_v[vb + d];
      }
    }
    a_ds[prow + j] = dp;
    row_dot = row_dot + p * dp;
  }
  var acc: array<f32, HD>;
  for (var j = 0u; j <= i; j++) {
    let p = a_probs[prow + j];
    let ds = p * (a_ds[prow + j] - row_dot);
    a_ds[prow + j] = ds;
    if (p != 0.0) {
      let kb = kv_base(b, j, g);
      for (var d = 0u; d < HD; d++) {
        acc[d] = acc[d] + ds * a_k[kb + d];
      }
    }
  }
  for (var d = 0u; d < HD; d++) {
    a_dq[qbase + d] = acc[d] * params.scale;
  }
}

// dv_j = sum over the group's heads h and queries i >= j of P_ij dout_i ;
// dk_j = scale * the same sum of dS_ij q_i.
@compute @workgroup_size(64)
fn backward_key(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = invocation(wg, li);
  let seq = params.seq;
  if (t >= params.rows * params.kv_heads * seq) {
    return;
  }
  let j = t % seq;
  let g = (t / seq) % params.kv_heads;
  let bl = t / (seq * params.kv_heads);
  let b = params.row0 + bl;
  var acc_v: array<f32, HD>;
  var acc_k: array<f32, HD>;
  for (var hh = 0u; hh < params.group; hh++) {
    let h = g * params.group + hh;
    let col = (bl * params.heads + h) * seq * seq + j;
    for (var i = j; i < seq; i++) {
      let p = b_probs[col + i * seq];
      if (p != 0.0) {
        let ds = b_ds[col + i * seq];
        let qb = ((b * seq + i) * params.heads + h) * HD;
        for (var d = 0u; d < HD; d++) {
          acc_v[d] = acc_v[d] + p * b_dout[qb + d];
          acc_k[d] = acc_k[d] + ds * b_q[qb + d];
        }
      }
    }
  }
  let kb = kv_base(b, j, g);
  for (var d = 0u; d < HD; d++) {
    b_dv[kb + d] = acc_v[d];
    b_dk[kb + d] = acc_k[d] * params.scale;
  }
}

// ---- tiled ---------------------------------------------------------------------------------

var<workgroup> tile_a: array<f32, {{TILE_FLOATS}}>; // [KB][HD]
var<workgroup> tile_b: array<f32, {{TILE_FLOATS}}>; // [KB][HD], backward_key only
var<workgroup> tile_seg: array<u32, KB>;

// (batch row in dispatch, head or kv head, block) of this workgroup; uniform over it.
struct Block {
  valid: bool,
  bl: u32,
  h: u32,
  first: u32,
}

fn block_of(wg: vec3u, heads: u32) -> Block {
  let tile = wg.y * params.groups_x + wg.x;
  let blk = tile % params.blocks;
  let h = (tile / params.blocks) % heads;
  let bl = tile / (params.blocks * heads);
  return Block(bl < params.rows, bl, h, blk * WG);
}

@compute @workgroup_size(64)
fn forward_tiled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let blk = block_of(wg, params.heads);
  if (!blk.valid) {
    return;
  }
  let seq = params.seq;
  let h = blk.h;
  let b = params.row0 + blk.bl;
  let g = h / params.group;
  let i = blk.first + li;
  let live = i < seq;
  let ic = min(i, seq - 1u);
  let prow = ((blk.bl * params.heads + h) * seq + ic) * seq;
  let qbase = ((b * seq + ic) * params.heads + h) * HD;
  let seg = f_segments[b * seq + ic];
  var qv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    qv[d] = f_q[qbase + d];
  }
  // Keys up to the block's last query.
  let end = min(blk.first + WG, seq);

  var mx = LOWEST;
  for (var j0 = 0u; j0 < end; j0 += KB) {
    for (var e = li; e < KB * HD; e += WG) {
      let j = j0 + e / HD;
      tile_a[e] = select(0.0, f_k[kv_base(b, min(j, seq - 1u), g) + e % HD], j < seq);
    }
    for (var e = li; e < KB; e += WG) {
      tile_seg[e] = f_segments[b * seq + min(j0 + e, seq - 1u)];
    }
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < KB; jj++) {
        let j = j0 + jj;
        if (j <= i && tile_seg[jj] == seg) {
          var dot = 0.0;
          for (var d = 0u; d < HD; d++) {
            dot = dot + qv[d] * tile_a[jj * HD + d];
          }
          let s = dot * params.scale;
          f_probs[prow + j] = s;
          mx = max(mx, s);
        }
      }
    }
    workgroupBarrier();
  }
  var sum = 0.0;
  if (live) {
    for (var j = 0u; j < seq; j++) {
      var e = 0.0;
      if (j <= i && f_segments[b * seq + j] == seg) {
        e = exp(f_probs[prow + j] - mx);
        sum = sum + e;
      }
      f_probs[prow + j] = e;
    }
  }
  let inv = 1.0 / sum;
  var acc: array<f32, HD>;
  for (var j0 = 0u; j0 < end; j0 += KB) {
    for (var e = li; e < KB * HD; e += WG) {
      let j = j0 + e / HD;
      tile_a[e] = select(0.0, f_v[kv_base(b, min(j, seq - 1u), g) + e % HD], j < seq);
    }
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < KB; jj++) {
        let j = j0 + jj;
        if (j <= i) {
          let p = f_probs[prow + j] * inv;
          f_probs[prow + j] = p;
          if (p != 0.0) {
            for (var d = 0u; d < HD; d++) {
              acc[d] = acc[d] + p * tile_a[jj * HD + d];
            }
          }
        }
      }
    }
    workgroupBarrier();
  }
  if (live) {
    for (var d = 0u; d < HD; d++) {
      f_out[qbase + d] = acc[d];
    }
  }
}

@compute @workgroup_size(64)
fn backward_query_tiled(
  @builtin(workgroup_id) wg: vec3u,
  @builtin(local_invocation_index) li: u32,
) {
  let blk = block_of(wg, params.heads);
  if (!blk.valid) {
    return;
  }
  let seq = params.seq;
  let h = blk.h;
  let b = params.row0 + blk.bl;
  let g = h / params.group;
  let i = blk.first + li;
  let live = i < seq;
  let ic = min(i, seq - 1u);
  let prow = ((blk.bl * params.heads + h) * seq + ic) * seq;
  let qbase = ((b * seq + ic) * params.heads + h) * HD;
  var dov: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    dov[d] = a_dout[qbase + d];
  }
  let end = min(blk.first + WG, seq);

  var row_dot = 0.0;
  for (var j0 = 0u; j0 < end; j0 += KB) {
    for (var e = li; e < KB * HD; e += WG) {
      let j = j0 + e / HD;
      tile_a[e] = select(0.0, a_v[kv_base(b, min(j, seq - 1u), g) + e % HD], j < seq);
    }
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < KB; jj++) {
        let j = j0 + jj;
        if (j <= i) {
          let p = a_probs[prow + j];
          var dp = 0.0;
          if (p != 0.0) {
            for (var d = 0u; d < HD; d++) {
              dp = dp + dov[d] * tile_a[jj * HD + d];
            }
          }
          a_ds[prow + j] = dp;
          row_dot = row_dot + p * dp;
        }
      }
    }
    workgroupBarrier();
  }
  var acc: array<f32, HD>;
  for (var j0 = 0u; j0 < end; j0 += KB) {
    for (var e = li; e < KB * HD; e += WG) {
      let j = j0 + e / HD;
      tile_a[e] = select(0.0, a_k[kv_base(b, min(j, seq - 1u), g) + e % HD], j < seq);
    }
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < KB; jj++) {
        let j = j0 + jj;
        if (j <= i) {
          let p = a_probs[prow + j];
          let ds = p * (a_ds[prow + j] - row_dot);
          a_ds[prow + j] = ds;
          if (p != 0.0) {
            for (var d = 0u; d < HD; d++) {
              acc[d] = acc[d] + ds * tile_a[jj * HD + d];
            }
          }
        }
      }
    }
    workgroupBarrier();
  }
  if (live) {
    for (var d = 0u; d < HD; d++) {
      a_dq[qbase + d] = acc[d] * params.scale;
    }
  }
}

@compute @workgroup_size(64)
fn backward_key_tiled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let blk = block_of(wg, params.kv_heads);
  if (!blk.valid) {
    return;
  }
  let seq = params.seq;
  let g = blk.h;
  let b = params.row0 + blk.bl;
  let j = blk.first + li;
  let live = j < seq;
  var acc_v: array<f32, HD>;
  var acc_k: array<f32, HD>;
  for (var hh = 0u; hh < params.group; hh++) {
    let h = g * params.group + hh;
    let col = (blk.bl * params.heads + h) * seq * seq + min(j, seq - 1u);
    // Queries from the block's first key on: the ones any key of the block can see.
    for (var i0 = blk.first; i0 < seq; i0 += KB) {
      for (var e = li; e < KB * HD; e += WG) {
        let i = i0 + e / HD;
        let o = ((b * seq + min(i, seq - 1u)) * params.heads + h) * HD + e % HD;
        tile_a[e] = select(0.0, b_dout[o], i < seq);
        tile_b[e] = select(0.0, b_q[o], i < seq);
      }
      workgroupBarrier();
      if (live) {
        for (var ii = 0u; ii < KB; ii++) {
          let i = i0 + ii;
          if (i >= j && i < seq) {
            let p = b_probs[col + i * seq];
            if (p != 0.0) {
              let ds = b_ds[col + i * seq];
              for (var d = 0u; d < HD; d++) {
                acc_v[d] = acc_v[d] + p * tile_a[ii * HD + d];
                acc_k[d] = acc_k[d] + ds * tile_b[ii * HD + d];
              }
            }
          }
        }
      }
      workgroupBarrier();
    }
  }
  if (live) {
    let kb = kv_base(b, j, g);
    for (var d = 0u; d < HD; d++) {
      b_dv[kb + d] = acc_v[d];
      b_dk[kb + d] = acc_k[d] * params.scale;
    }
  }
}
