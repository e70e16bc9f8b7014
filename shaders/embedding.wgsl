// Embedding lookup from a 16-bit table in row chunks (src/kernels/row_chunks.ts), one dispatch
// per chunk: out[r, :] = chunk[tokens[r] - row0, :] for the tokens whose row the chunk holds;
// other rows are left to the other chunks' dispatches. A token id >= vocab reads nothing: the
// last chunk's dispatch writes its row of out as 0 and, in `gather_flagged`, sets error[0] = 1
// (the host checks it after the step). One invocation per output element.
//!include table16.wgsl

struct Params {
  total: u32, // rows * dim
  dim: u32,
  row0: u32, // first table row of this chunk
  rows: u32, // table rows in this chunk
  vocab: u32,
  last: u32, // 1 for the last chunk: it zeroes the rows of out-of-range ids
  groups_x: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> table: array<u32>;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// gather_flagged: table, tokens, out, error, params
@group(0) @binding(3) var<storage, read_write> error: array<u32>;
@group(0) @binding(4) var<uniform> pf: Params;

// Returns false for an out-of-range token (seen by the last chunk only).
fn lookup(idx: u32, q: Params) -> bool {
  let row = idx / q.dim;
  let col = idx % q.dim;
  let tok = tokens[row];
  if (tok >= q.row0 && tok - q.row0 < q.rows) {
    let e = (tok - q.row0) * q.dim + col;
    out[idx] = table16_value(table[e >> 1u], e);
  } else if (tok >= q.vocab && q.last != 0u) {
    out[idx] = 0.0;
    return false;
  }
  return true;
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
