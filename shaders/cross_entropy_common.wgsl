// Shared by the cross-entropy shaders (cross_entropy.wgsl, and the f16 and subgroup variants,
// which need their own files for their `enable` lines): the per-pass parameters, the bindings of
// each entry point, and lm_head element reads. lm_head is a 16-bit table in row chunks
// (src/kernels/row_chunks.ts): a pass binds one chunk whole and reads its rows from w_row0.
//!include table16.wgsl
const LOWEST: f32 = -3.0e38;
const IGNORE: i32 = -100;

// One pass: a chunk of rows [r0, r0 + rows) of the token rows, against vocabulary columns
// [c0, c0 + cols), which are rows [w_row0, w_row0 + cols) of the bound lm_head chunk.
struct Params {
  rows: u32,
  hidden: u32,
  vocab: u32,
  c0: u32,
  cols: u32,
  first: u32, // the first vocabulary pass of this row chunk: the softmax stats start afresh
  last: u32, // the last: stats writes loss and correct
  accumulate: u32, // dh += (every backward pass but the first written)
  stats_groups_x: u32,
  scale_index: u32,
  grad_scale: f32,
  r0: u32,
  w_row0: u32,
  out_stride: u32, // logits: row stride of the output (cols for the scratch, vocab for full logits)
  out_col0: u32, // logits: output column of column 0
  dl_groups_x: u32,
}

// logits
@group(0) @binding(0) var<storage, read> lg_h: array<f32>;
@group(0) @binding(1) var<storage, read> lg_w: array<u32>;
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
@group(0) @binding(1) var<storage, read> dh_w: array<u32>;
@group(0) @binding(2) var<storage, read_write> dh_out: array<f32>;

@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(5) var<uniform> st_params: Params;

// lm_head[w_row0 + j, k] of the bound chunk, for the logits and the dh products.
fn lg_weight(j: u32, k: u32) -> f32 {
  let e = (params.w_row0 + j) * params.hidden + k;
  return table16_value(lg_w[e >> 1u], e);
}

fn dh_weight(j: u32, x: u32) -> f32 {
  let e = (params.w_row0 + j) * params.hidden + x;
  return table16_value(dh_w[e >> 1u], e);
}

// Running softmax stats of a row after a pass: (max, sum of exp(l - max), argmax, label logit).
fn store_stats(r: u32, mx: f32, sum: f32, arg: u32, label_logit: f32) {
  st_stats[r * 4u] = mx;
  st_stats[r * 4u + 1u] = sum;
  st_stats[r * 4u + 2u] = bitcast<f32>(arg);
  st_stats[r * 4u + 3u] = label_logit;
  if (st_params.last != 0u) {
    let row = st_params.r0 + r;
    let label = st_labels[row];
    if (label == IGNORE) {
      st_loss[row] = 0u;
      st_correct[row] = 0u;
    } else if (label < 0 || u32(label) >= st_params.vocab) {
      st_loss[row] = 0x7fc00000u; // NaN: a label outside the vocabulary
      st_correct[row] = 0u;
    } else {
      st_loss[row] = bitcast<u32>(log(sum) + mx - label_logit);
      st_correct[row] = select(0u, 1u, arg == u32(label));
    }
  }
}
