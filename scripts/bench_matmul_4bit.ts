/**
 * Quick ratio check (not a test): GFLOP/s of each 4-bit matmul variant, forward and backward,
 * next to dense f32 matmuls of the same shape on this adapter: a naive one-output-per-invocation
 * kernel and register-blocked ones built like the 4-bit regblock kernel (vec4 loads, TM rows x 4
 * outputs per invocation). Kernels are timed in interleaved rounds and the best round is kept,
 * since other work on a shared machine slows single runs.
 *   deno run -A scripts/bench_matmul_4bit.ts [m=128] [in=1024] [out=1024] [rounds=3]
 */
import { type DispatchBatch, type GpuContext, grid } from "../src/gpu/context.ts";
import { GpuContext as Gpu } from "../src/gpu/context.ts";
import {
  availableMatmul4bitVariants,
  encodeMatmul4bit,
  encodeMatmul4bitT,
} from "../src/kernels/matmul_4bit.ts";
import { uploadQuantWeight } from "../src/kernels/quant_weight.ts";
import { quantizeWeight } from "../src/quant/quant_state.ts";
import { Rng } from "../src/util/random.ts";

const [m, nIn, nOut, rounds] = [128, 1024, 1024, 3].map((d, i) => Number(Deno.args[i] ?? d));
if (nIn % 4 || nOut % 64) throw new Error("the dense kernels here need in % 4 == 0, out % 64 == 0");
const flops = 2 * m * nIn * nOut;

const DENSE_NAIVE = `
struct P { m: u32, n_in: u32, n_out: u32, gx: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let t = (wg.y * p.gx + wg.x) * 64u + li;
  if (t >= p.m * p.n_out) { return; }
  let i = t / p.n_out;
  let o = t % p.n_out;
  var s = 0.0;
  for (var k = 0u; k < p.n_in; k++) { s += x[i * p.n_in + k] * w[o * p.n_in + k]; }
  y[t] = s;
}`;

// Workgroup (x, y): outputs [x*256, +256), rows [y*TM, +TM); TM rows x 4 outputs per invocation.
const DENSE_REGBLOCK = (tm: number) => `
struct P { m: u32, n_in: u32, n_out: u32, gx: u32 }
@group(0) @binding(0) var<storage, read> x: array<vec4f>;
@group(0) @binding(1) var<storage, read> w: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
const TM = ${tm}u;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let o0 = (wg.x * 64u + li) * 4u;
  let i0 = wg.y * TM;
  let k4 = p.n_in / 4u;
  var acc: array<vec4f, TM>;
  for (var k = 0u; k < k4; k++) {
    let w0 = w[o0 * k4 + k];
    let w1 = w[(o0 + 1u) * k4 + k];
    let w2 = w[(o0 + 2u) * k4 + k];
    let w3 = w[(o0 + 3u) * k4 + k];
    for (var i = 0u; i < TM; i++) {
      let xv = x[min(i0 + i, p.m - 1u) * k4 + k];
      acc[i] += vec4f(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
    }
  }
  for (var i = 0u; i < TM; i++) {
    if (i0 + i < p.m) {
      for (var j = 0u; j < 4u; j++) { y[(i0 + i) * p.n_out + o0 + j] = acc[i][j]; }
    }
  }
}`;

type Encode = (b: DispatchBatch) => Promise<void> | void;

/** GFLOP/s of `reps` back-to-back dispatches in one submit, after a warm-up. */
async function gflops(ctx: GpuContext, encode: Encode, reps = 4): Promise<number> {
  const t0 = performance.now();
  const b = ctx.batch("bench");
  for (let r = 0; r < reps; r++) await encode(b);
  b.submit();
  await ctx.sync();
  return (flops * reps) / ((performance.now() - t0) / 1000) / 1e9;
}

const ctx = await Gpu.open({ log: (l) => console.log(l) });
const rng = new Rng(1);
const wHost = rng.normals(nOut * nIn, 0.02);
const x = ctx.upload("x", "scratch", rng.normals(m * nIn));
const y = ctx.createBuffer({ label: "y", category: "scratch", size: m * nOut * 4 });
const dy = ctx.upload("dy", "scratch", rng.normals(m * nOut));
const dx = ctx.createBuffer({ label: "dx", category: "scratch", size: m * nIn * 4 });
const wDense = ctx.upload("w", "scratch", wHost);

const kernels: Array<[string, Encode]> = [];
const dense = async (name: string, code: string, workgroups: [number, number]) => {
  const pipe = await ctx.pipelineFromCode(name, code);
  const u = ctx.uniform(new Uint32Array([m, nIn, nOut, workgroups[0]]));
  kernels.push([name, (b) => void b.dispatch(pipe, [x, wDense, y, u], workgroups)]);
};
await dense("dense f32 naive", DENSE_NAIVE, grid(Math.ceil((m * nOut) / 64)));
for (const tm of [8, 16]) {
  await dense(`dense f32 regblock ${tm}x4`, DENSE_REGBLOCK(tm), [nOut / 256, Math.ceil(m / tm)]);
}
for (const doubleQuant of [false, true]) {
  const q = quantizeWeight(wHost, [nOut, nIn], {
    quantType: "nf4",
    blocksize: 64,
    doubleQuant,
    dtype: "float32",
  });
  const w = uploadQuantWeight(ctx, q, doubleQuant ? "w_nf4_dq" : "w_nf4");
  for (const variant of availableMatmul4bitVariants(ctx)) {
    const tag = `nf4${doubleQuant ? "+dq" : ""} ${variant}`;
    kernels.push([`${tag} forward`, (b) => encodeMatmul4bit(ctx, b, { x, w, y, m, variant })]);
    kernels.push([
      `${tag} backward`,
      (b) => encodeMatmul4bitT(ctx, b, { dy, w, dx, m, variant }),
    ]);
  }
}

const best = new Map<string, number>();
for (const [, encode] of kernels) await gflops(ctx, encode, 1); // compile, warm up
for (let r = 0; r < rounds; r++) {
  for (const [name, encode] of kernels) {
    best.set(name, Math.max(best.get(name) ?? 0, await gflops(ctx, encode)));
  }
}
const denseBest = Math.max(...[...best].filter(([n]) => n.startsWith("dense")).map(([, g]) => g));
console.log(`m=${m} in=${nIn} out=${nOut}, best of ${rounds} rounds, on ${ctx.adapterKey}`);
console.log("kernel".padEnd(30) + "GFLOP/s".padStart(9) + "   vs best dense f32");
for (const [name, g] of best) {
  console.log(
    name.padEnd(30) + g.toFixed(2).padStart(9) + (g / denseBest).toFixed(2).padStart(8) + "x",
  );
}
ctx.destroy();
