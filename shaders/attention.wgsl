// Causal self-attention with grouped-query heads and packed segments, softmax materialized.
// Layout, token-major: q/out/dq [batch*seq, heads*head_dim], k/v/dk/dv [batch*seq,
// kv_heads*head_dim], segments u32 [batch*seq], probs/ds [rows, heads, seq, seq] for the `rows`
// batch rows of this dispatch, starting at batch row `row0`. Query i sees key j iff j <= i and
// segments match; masked probabilities are exactly 0, which the backward pass uses as the mask.
// One invocation per output row, so every output element has exactly one writer: `forward` and
// `backward_query` per (row, head, query), `backward_key` per (row, kv head, key), the latter
// summing over the query heads that share its kv head. No workgroup memory, no barriers; each
// invocation keeps its head_dim-long row accumulators in private arrays (HD = head_dim, a
// template parameter, so loops over it have a constant trip count), and reads every probability
// once.
const WG: u32 = 64u;
const HD: u32 = {{HEAD_DIM}}u;
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
  _pad0: u32,
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
