// bitsandbytes 32-bit AdamW (kOptimizer32bit2State, case ADAM), elementwise in float32:
//   g = grad * gnorm_scale
//   m = m*b1 + (1-b1)*g ;  v = v*b2 + (1-b2)*(g*g)
//   p = p + step_size * (m / (sqrt(v) + eps*c2))     step_size = -lr*c2/c1
//   p = p * (1 - lr*wd)                              only when wd > 0
// The host folds the per-step scalars (c1 = 1-b1^t, c2 = sqrt(1-b2^t)) into step_size and
// eps_c2. Each element has one writer, so any slice (a page of optimizer state) can be updated
// on its own and gives the same bits as the whole tensor.
// Two layouts of the same arithmetic: `main*` updates elements first..n-1, one per
// invocation; `main_vec4*` updates four per invocation with 16-byte loads and stores (the host
// runs `main*` over the last n % 4 elements). The operations and their order are the same,
// component by component, so both give the same bits.
struct Params {
  n: u32,
  groups_x: u32,
  scale_index: u32,
  decay_on: u32,
  beta1: f32,
  beta2: f32,
  one_minus_beta1: f32,
  one_minus_beta2: f32,
  step_size: f32,
  eps_c2: f32,
  decay: f32,
  first: u32, // `main*`: the first element to update; `main_vec4*`: 0, and n counts vec4s
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;
@group(0) @binding(5) var<storage, read> grad_scale: array<f32>;

@group(0) @binding(0) var<storage, read_write> param4: array<vec4f>;
@group(0) @binding(1) var<storage, read> grad4: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> m4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> v4: array<vec4f>;

fn update(i: u32, g: f32) {
  let m1 = m[i] * params.beta1 + params.one_minus_beta1 * g;
  let v1 = v[i] * params.beta2 + params.one_minus_beta2 * (g * g);
  var p = param[i] + params.step_size * (m1 / (sqrt(v1) + params.eps_c2));
  if (params.decay_on != 0u) {
    p = p * params.decay;
  }
  m[i] = m1;
  v[i] = v1;
  param[i] = p;
}

fn update4(i: u32, g: vec4f) {
  let m1 = m4[i] * params.beta1 + params.one_minus_beta1 * g;
  let v1 = v4[i] * params.beta2 + params.one_minus_beta2 * (g * g);
  var p = param4[i] + params.step_size * (m1 / (sqrt(v1) + params.eps_c2));
  if (params.decay_on != 0u) {
    p = p * params.decay;
  }
  m4[i] = m1;
  v4[i] = v1;
  param4[i] = p;
}

fn index_of(wg: vec3u, li: u32) -> u32 {
  return params.first + (wg.y * params.groups_x + wg.x) * 256u + li;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index_of(wg, li);
  if (i < params.n) {
    update(i, grad[i]);
  }
}

// grad multiplied by grad_scale[scale_index] (the clip scale from grad_norm.wgsl).
@compute @workgroup_size(256)
fn main_scaled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index_of(wg, li);
  if (i < params.n) {
    update(i, grad_scale[params.scale_index] * grad[i]);
  }
}

@compute @workgroup_size(256)
fn main_vec4(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index_of(wg, li);
  if (i < params.n) {
    update4(i, grad4[i]);
  }
}

@compute @workgroup_size(256)
fn main_vec4_scaled(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = index_of(wg, li);
  if (i < params.n) {
    update4(i, grad_scale[params.scale_index] * grad4[i]);
  }
}
