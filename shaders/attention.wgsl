// Causal self-attention with grouped-query heads and packed segments, without the score matrix:
// online softmax (flash-attention style) in the forward, scores recomputed in the backward.
// This file is the barrier-free "row" variant (CPU adapters: one invocation per row, K/V or Q/dout
// read straight from storage, no workgroup memory) and the small backward_prep pass that every
// variant shares; shaders/attention_tiled.wgsl is the workgroup-tiled variant.
//
// Layout, token-major: q/out/dout/dq [batch*seq, heads*HD], k/v/dk/dv [batch*seq, kv_heads*HD],
// segments u32 [batch*seq], lse [batch*seq, heads], stats [batch*seq, heads, 2] = (lse, delta).
// Query i of a batch row sees key j of the same row iff j <= i and their segments are equal (so
// it always sees itself). With s_ij = scale * q_i.k_j and lse_i = log sum_j exp(s_ij):
//   out_i = sum_j exp(s_ij - lse_i) v_j                                 (forward)
//   delta_i = dout_i . out_i                                            (backward_prep)
//   ds_ij = p_ij (dout_i . v_j - delta_i),  p_ij = exp(s_ij - lse_i)
//   dq_i = scale sum_j ds_ij k_j                                        (backward_query)
//   dk_j = scale sum_{h in group, i} ds_ij q_i ; dv_j = sum p_ij dout_i (backward_key)
// Every output element has one writer (no float atomics in WGSL): backward_query owns a query
// row, backward_key a key row, summing over the query heads of its kv head. Rows are in private
// arrays of HD = head_dim floats (a template parameter, so loops over it have a constant count).

//!include attention_params.wgsl

const WG: u32 = 64u;
const HD: u32 = {{HEAD_DIM}}u;
// Keys scored per online-softmax step: the running output is rescaled once per C keys.
const C: u32 = 16u;

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

// backward_prep
@group(0) @binding(0) var<storage, read> p_out: array<f32>;
@group(0) @binding(1) var<storage, read> p_dout: array<f32>;
@group(0) @binding(2) var<storage, read> p_lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> p_stats: array<f32>;
@group(0) @binding(4) var<uniform> p_params: Params;

fn invocation(p: Params, wg: vec3u, li: u32) -> u32 {
  return (wg.y * p.groups_x + wg.x) * WG + li;
}

// One invocation per (batch row, head, query); neighbours in a workgroup share (row, head) and
// so read the same key rows.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = f_params;
  let t = invocation(p, wg, li);
  if (t >= p.rows * p.heads * p.seq) {
    return;
  }
  let i = t % p.seq;
  let h = (t / p.seq) % p.heads;
  let row0 = (t / (p.seq * p.heads)) * p.seq;
  let g = h / p.group;
  let tok = row0 + i;
  let qb = (tok * p.heads + h) * HD;
  let seg = seg_in[tok];
  var qv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    qv[d] = q_in[qb + d] * p.scale;
  }

  var m = LOWEST;
  var l = 0.0;
  var acc: array<f32, HD>;
  var sc: array<f32, C>;
  for (var j0 = 0u; j0 <= i; j0 += C) {
    var cmax = LOWEST;
    for (var c = 0u; c < C; c++) {
      let j = j0 + c;
      var s = LOWEST;
      if (j <= i && seg_in[row0 + j] == seg) {
        let kb = ((row0 + j) * p.kv_heads + g) * HD;
        var dot = 0.0;
        for (var d = 0u; d < HD; d++) {
          dot = dot + qv[d] * k_in[kb + d];
        }
        s = dot;
        cmax = max(cmax, s);
      }
      sc[c] = s;
    }
    if (cmax > LOWEST) {
      if (cmax > m) {
        // exp(LOWEST - cmax) is 0: the first visible chunk starts the sums afresh.
        let corr = exp(m - cmax);
        l = l * corr;
        for (var d = 0u; d < HD; d++) {
          acc[d] = acc[d] * corr;
        }
        m = cmax;
      }
      for (var c = 0u; c < C; c++) {
        if (sc[c] > LOWEST) {
          let e = exp(sc[c] - m);
          l = l + e;
          let vb = ((row0 + j0 + c) * p.kv_heads + g) * HD;
          for (var d = 0u; d < HD; d++) {
            acc[d] = acc[d] + e * v_in[vb + d];
          }
        }
      }
    }
  }
  // l >= 1: the query sees itself, and the maximum's term is exp(0).
  let inv = 1.0 / l;
  for (var d = 0u; d < HD; d++) {
    f_out[qb + d] = acc[d] * inv;
  }
  f_lse[tok * p.heads + h] = m + log(l);
}

// stats = (lse, dout . out) per (token, head), one invocation each; the key pass needs delta of
// every query before it starts, so it cannot be computed inside backward_query.
@compute @workgroup_size(64)
fn backward_prep(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = p_params;
  let t = invocation(p, wg, li);
  if (t >= p.rows * p.seq * p.heads) {
    return;
  }
  var dot = 0.0;
  for (var d = 0u; d < HD; d++) {
    dot = dot + p_out[t * HD + d] * p_dout[t * HD + d];
  }
  p_stats[2u * t] = p_lse[t];
  p_stats[2u * t + 1u] = dot;
}

@compute @workgroup_size(64)
fn backward_query(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = bq_params;
  let t = invocation(p, wg, li);
  if (t >= p.rows * p.heads * p.seq) {
    return;
  }
  let i = t % p.seq;
  let h = (t / p.seq) % p.heads;
  let row0 = (t / (p.seq * p.heads)) * p.seq;
  let g = h / p.group;
  let tok = row0 + i;
  let qt = tok * p.heads + h;
  let qb = qt * HD;
  let seg = seg_in[tok];
  let lse = b_stats[2u * qt];
  let delta = b_stats[2u * qt + 1u];
  var qv: array<f32, HD>;
  var dov: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    qv[d] = q_in[qb + d] * p.scale;
    dov[d] = b_dout[qb + d];
  }

  var acc: array<f32, HD>;
  for (var j = 0u; j <= i; j++) {
    if (seg_in[row0 + j] == seg) {
      let kb = ((row0 + j) * p.kv_heads + g) * HD;
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < HD; d++) {
        s = s + qv[d] * k_in[kb + d];
        dp = dp + dov[d] * v_in[kb + d];
      }
      let ds = exp(s - lse) * (dp - delta);
      for (var d = 0u; d < HD; d++) {
        acc[d] = acc[d] + ds * k_in[kb + d];
      }
    }
  }
  for (var d = 0u; d < HD; d++) {
    b_dqk[qb + d] = acc[d] * p.scale;
  }
}

// One invocation per (batch row, kv head, key), over the later queries of every query head of
// its group.
@compute @workgroup_size(64)
fn backward_key(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = bk_params;
  let t = invocation(p, wg, li);
  if (t >= p.rows * p.kv_heads * p.seq) {
    return;
  }
  let j = t % p.seq;
  let g = (t / p.seq) % p.kv_heads;
  let row0 = (t / (p.seq * p.kv_heads)) * p.seq;
  let kb = ((row0 + j) * p.kv_heads + g) * HD;
  let seg = seg_in[row0 + j];
  var kv: array<f32, HD>;
  var vv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    kv[d] = k_in[kb + d];
    vv[d] = v_in[kb + d];
  }

  var dk: array<f32, HD>;
  var dv: array<f32, HD>;
  for (var i = j; i < p.seq; i++) {
    if (seg_in[row0 + i] == seg) {
      for (var hh = 0u; hh < p.group; hh++) {
        let qt = (row0 + i) * p.heads + g * p.group + hh;
        let qb = qt * HD;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < HD; d++) {
          s = s + q_in[qb + d] * p.scale * kv[d];
          dp = dp + b_dout[qb + d] * vv[d];
        }
        let e = exp(s - b_stats[2u * qt]);
        let ds = e * (dp - b_stats[2u * qt + 1u]);
        for (var d = 0u; d < HD; d++) {
          dv[d] = dv[d] + e * b_dout[qb + d];
          dk[d] = dk[d] + ds * q_in[qb + d];
        }
      }
    }
  }
  for (var d = 0u; d < HD; d++) {
    b_dqk[kb + d] = dk[d] * p.scale;
    bk_dv[kb + d] = dv[d];
  }
}
