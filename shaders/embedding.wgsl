// Embedding lookup: out[r, :] = table[tokens[r], :]. A token id >= vocab reads nothing: its row
// of out is 0 and, in `gather_flagged`, error[0] is set to 1 (the host checks it after the step).
// One invocation per output element.

struct Params {
  total: u32, // rows * dim
  dim: u32,
  vocab: u32,
  groups_x: u32,
}

@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// gather_flagged: table, tokens, out, error, params
@group(0) @binding(3) var<storage, read_write> error: array<u32>;
@group(0) @binding(4) var<uniform> pf: Params;

// Returns whether the token was in range.
fn lookup(idx: u32, q: Params) -> bool {
  let row = idx / q.dim;
  let col = idx % q.dim;
  let tok = tokens[row];
  if (tok < q.vocab) {
    out[idx] = table[tok * q.dim + col];
    return true;
  }
  out[idx] = 0.0;
  return false;
}

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let idx = (wg.y * p.groups_x + wg.x) * 256u + li;
  if (idx < p.total) {
    _ = lookup(idx, p);
  }
}

@compute @workgroup_size(256)
fn gather_flagged(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let idx = (wg.y * pf.groups_x + wg.x) * 256u + li;
  if (idx < pf.total && !lookup(idx, pf)) {
    error[0] = 1u;
  }
}
