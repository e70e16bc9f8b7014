// Attention of a few new query tokens over a KV cache (generation): the queries sit at absolute
// positions pos0, pos0+1, ..., and query i sees the cached keys 0..pos0+i (causal relative to its
// absolute position). One invocation per (query, head), K/V read straight from storage, online
// softmax over chunks of C keys as in shaders/attention.wgsl's forward; no barriers, so it runs
// the same on CPU adapters and GPUs.
//
// Layout: q/out [n, heads*HD]; k/v cache [capacity, kv_heads*HD] (row t = the token at position t,
// after RoPE for k); query head h reads kv head h / group (GQA). The cache holds f32, or with
// KV_F16 halves packed two per word (element 2i in the low bits, as convert_f16.wgsl writes them),
// read with unpack2x16float, so it needs no shader-f16; the arithmetic is f32 either way.

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
  // 1 / sqrt(head_dim).
  scale: f32,
  _pad0: u32,
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
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

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
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let p = params;
  let t = (wg.y * p.groups_x + wg.x) * WG + li;
  if (t >= p.n * p.heads) {
    return;
  }
  let i = t / p.heads;
  let h = t % p.heads;
  let g = h / p.group;
  let last = p.pos0 + i;
  let qb = t * HD;
  var qv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    qv[d] = q_in[qb + d] * p.scale;
  }
  var m = LOWEST;
  var l = 0.0;
  var acc: array<f32, HD>;
  var sc: array<f32, C>;
  for (var j0 = 0u; j0 <= last; j0 += C) {
    var cmax = LOWEST;
    for (var c = 0u; c < C; c++) {
      let j = j0 + c;
      var s = LOWEST;
      if (j <= last) {
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
  // l >= 1: the query sees its own key, and the maximum's term is exp(0).
  let inv = 1.0 / l;
  for (var d = 0u; d < HD; d++) {
    out[qb + d] = acc[d] * inv;
  }
}
