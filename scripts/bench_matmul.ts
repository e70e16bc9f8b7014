/**
 * GFLOP/s of each dense matmul variant on this adapter at a few shapes: a square-ish block
 * (m=128, n=k=512), the projections of a Llama-7B layer scaled down 8x (hidden 512,
 * intermediate 1376, weights [out, in] so B is transposed), and the skinny LoRA products
 * (r=16). A quick measurement, not a test: best of a few repetitions, one submit each.
 *
 *   deno run -A scripts/bench_matmul.ts [--reps 5]
 */
import { GpuContext } from "../src/gpu/context.ts";
import {
  availableMatmulVariants,
  chooseMatmulVariant,
  encodeMatmul,
  type MatmulVariant,
} from "../src/kernels/matmul.ts";
import { Rng } from "../src/util/random.ts";

interface Shape {
  name: string;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
}

const SHAPES: Shape[] = [
  { name: "128x512x512", m: 128, n: 512, k: 512 },
  { name: "7B/8 q_proj  X·Wᵀ", m: 128, n: 512, k: 512, transB: true },
  { name: "7B/8 gate    X·Wᵀ", m: 128, n: 1376, k: 512, transB: true },
  { name: "7B/8 down    H·Wᵀ", m: 128, n: 512, k: 1376, transB: true },
  { name: "7B/8 dX      dY·W", m: 128, n: 512, k: 1376 },
  { name: "LoRA X·Aᵀ   r=16", m: 128, n: 16, k: 512, transB: true },
  { name: "LoRA dA = dHᵀ·X", m: 16, n: 512, k: 128, transA: true },
];

const repsArg = Deno.args.indexOf("--reps");
const reps = repsArg >= 0 ? Number(Deno.args[repsArg + 1]) : 5;

const ctx = await GpuContext.open();
const rng = new Rng(7);
const best = chooseMatmulVariant(ctx);
const VARIANTS = availableMatmulVariants(ctx);
console.log(`adapter: ${ctx.adapterKey}; chosen variant: ${best}`);
console.log(
  ["shape".padEnd(20), "m", "n", "k", ...VARIANTS.map((v) => `${v} GFLOP/s`)].join("\t"),
);

async function timeOne(shape: Shape, variant: MatmulVariant): Promise<number> {
  const { m, n, k } = shape;
  const a = ctx.upload("bench.a", "scratch", rng.normals(m * k));
  const b = ctx.upload("bench.b", "scratch", rng.normals(k * n));
  const c = ctx.createBuffer({ label: "bench.c", category: "scratch", size: m * n * 4 });
  const run = async (count: number) => {
    const batch = ctx.batch("bench");
    for (let i = 0; i < count; i++) {
      await encodeMatmul(ctx, batch, { ...shape, a, b, c, variant });
    }
    batch.submit();
    await ctx.sync();
  };
  await run(1); // compile and warm up
  // Enough dispatches per submit that one submit takes ~50 ms on the slowest variant.
  const t0 = performance.now();
  await run(1);
  const once = Math.max(performance.now() - t0, 0.05);
  const count = Math.max(1, Math.min(200, Math.round(50 / once)));
  let bestMs = Infinity;
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    await run(count);
    bestMs = Math.min(bestMs, (performance.now() - t) / count);
  }
  a.destroy();
  b.destroy();
  c.destroy();
  return (2 * m * n * k) / (bestMs * 1e6);
}

for (const shape of SHAPES) {
  const cols: string[] = [];
  for (const v of VARIANTS) cols.push((await timeOne(shape, v)).toFixed(2));
  console.log([shape.name.padEnd(20), shape.m, shape.n, shape.k, ...cols].join("\t"));
}
ctx.destroy();
