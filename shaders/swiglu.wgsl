// SwiGLU of the Llama MLP: out = silu(gate) * up, silu(g) = g * sigmoid(g), and its gradients:
//   dup   = dout * silu(g)
//   dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g)))
// One invocation per element.

struct Params {
  n: u32,
  groups_x: u32,
  _pad0: u32,
  _pad1: u32,
}

// forward: gate, up, out, params
@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// backward: gate, up, dout, dgate, dup, params
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(4) var<storage, read_write> dup: array<f32>;
@group(0) @binding(5) var<uniform> pb: Params;

// 1 / (1 + e^-g): exp overflows to +inf for g < -88, giving 0, the right limit.
fn sigmoid(g: f32) -> f32 {
  return 1.0 / (1.0 + exp(-g));
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * p.groups_x + wg.x) * 256u + li;
  if (i >= p.n) {
    return;
  }
  let g = gate[i];
  out[i] = g * sigmoid(g) * up[i];
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * pb.groups_x + wg.x) * 256u + li;
  if (i >= pb.n) {
    return;
  }
  let g = gate[i];
  let s = sigmoid(g);
  let d = dout[i];
  dup[i] = d * g * s;
  dgate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
}
