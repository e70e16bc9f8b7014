// Attention of a few new query tokens over a KV cache (generation): the queries sit at absolute
// positions pos0, pos0+1, ..., and query i sees the cached keys 0..pos0+i (causal relative to its
// absolute position). Split over the keys ("flash decoding"), so one decode query still spreads
// over many invocations: `partial` gives one invocation per (query, head, split of SPLIT_KEYS
// keys) an online softmax over its keys in chunks of C, saving its running max m, its sum l and
// its unnormalized output; `combine` gives one invocation per (query, head) the merge
//   M = max_s m_s,  out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s.
// No barriers, so it runs the same on CPU adapters and GPUs.
//
// Layout: q/out [n, heads*HD]; k/v cache [capacity, kv_heads*HD] (row t = the token at position t,
// after RoPE for k); query head h reads kv head h / group (GQA); partials [n*heads*splits, HD+2]
// as (m, l, acc). The cache holds f32, or with KV_F16 halves packed two per word (element 2i in
// the low bits, as convert_f16.wgsl writes them), read with unpack2x16float, so it needs no
// shader-f16; the arithmetic is f32 either way.

struct Params {
  // Query tokens.
  n: u32,
  heads: u32,
  kv_heads: u32,
  // Query heads per kv head.
  group: u32,
  // Absolute position of the first query.
  pos0: u32,
  groups_x: u32,
  // Key splits per (query, head): ceil((pos0 + n) / split_keys).
  splits: u32,
  split_keys: u32,
  // 1 / sqrt(head_dim).
  scale: f32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

const WG: u32 = 64u;
const HD: u32 = {{HEAD_DIM}}u;
const C: u32 = 16u;
const KV_F16: bool = {{KV_F16}};
// Below every score: marks a key past the query, and starts the running maximum.
const LOWEST: f32 = -3.0e38;

@group(0) @binding(0) var<storage, read> q_in: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<u32>;
@group(0) @binding(2) var<storage, read> v_cache: array<u32>;
@group(0) @binding(3) var<storage, read_write> p_part: array<f32>;
@group(0) @binding(4) var<uniform> p_params: Params;

@group(0) @binding(0) var<storage, read> c_part: array<f32>;
@group(0) @binding(1) var<storage, read_write> c_out: array<f32>;
@group(0) @binding(2) var<uniform> c_params: Params;

fn load_k(i: u32) -> f32 {
  if (KV_F16) {
    return unpack2x16float(k_cache[i >> 1u])[i & 1u];
  }
  return bitcast<f32>(k_cache[i]);
}

fn load_v(i: u32) -> f32 {
  if (KV_F16) {
    return unpack2x16float(v_cache[i >> 1u])[i & 1u];
  }
  return bitcast<f32>(v_cache[i]);
}

@compute @workgroup_size(64)
fn partial(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = p_params;
  let t = (wg.y * p.groups_x + wg.x) * WG + li;
  if (t >= p.n * p.heads * p.splits) {
    return;
  }
  let split = t % p.splits;
  let qh = t / p.splits;
  let i = qh / p.heads;
  let h = qh % p.heads;
  let g = h / p.group;
  let last = p.pos0 + i;
  let first = split * p.split_keys;
  let end = min(first + p.split_keys, last + 1u);
  let qb = qh * HD;
  var m = LOWEST;
  var l = 0.0;
  var acc: array<f32, HD>;
  // A split past the query's last key leaves (LOWEST, 0, 0): it adds nothing in combine.
  if (first < end) {
    var qv: array<f32, HD>;
    for (var d = 0u; d < HD; d++) {
      qv[d] = q_in[qb + d] * p.scale;
    }
    var sc: array<f32, C>;
    for (var j0 = first; j0 < end; j0 += C) {
      var cmax = LOWEST;
      for (var c = 0u; c < C; c++) {
        let j = j0 + c;
        var s = LOWEST;
        if (j < end) {
          let kb = (j * p.kv_heads + g) * HD;
          var dot = 0.0;
          for (var d = 0u; d < HD; d++) {
            dot = dot + qv[d] * load_k(kb + d);
          }
          s = dot;
          cmax = max(cmax, s);
        }
        sc[c] = s;
      }
      if (cmax > m) {
        // exp(LOWEST - cmax) is 0: the first chunk starts the sums afresh.
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
          let vb = ((j0 + c) * p.kv_heads + g) * HD;
          for (var d = 0u; d < HD; d++) {
            acc[d] = acc[d] + e * load_v(vb + d);
          }
        }
      }
    }
  }
  let ob = t * (HD + 2u);
  p_part[ob] = m;
  p_part[ob + 1u] = l;
  for (var d = 0u; d < HD; d++) {
    p_part[ob + 2u + d] = acc[d];
  }
}

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = c_params;
  let qh = (wg.y * p.groups_x + wg.x) * WG + li;
  if (qh >= p.n * p.heads) {
    return;
  }
  let base = qh * p.splits;
  var big = LOWEST;
  for (var s = 0u; s < p.splits; s++) {
    big = max(big, c_part[(base + s) * (HD + 2u)]);
  }
  var l = 0.0;
  var acc: array<f32, HD>;
  for (var s = 0u; s < p.splits; s++) {
    let b = (base + s) * (HD + 2u);
    // Split 0 always holds key 0, so big is a real score and empty splits weigh exp(-huge) = 0.
    let w = exp(c_part[b] - big);
    l = l + w * c_part[b + 1u];
    for (var d = 0u; d < HD; d++) {
      acc[d] = acc[d] + w * c_part[b + 2u + d];
    }
  }
  // l >= 1: the query sees its own key, and the maximum's term is exp(0).
  let inv = 1.0 / l;
  for (var d = 0u; d < HD; d++) {
    c_out[qh * HD + d] = acc[d] * inv;
  }
}
