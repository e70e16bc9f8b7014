/**
 * Attention without the score matrix, every variant this device can run (row, tiled, and
 * tiled_f16 where it has shader-f16) against the float64 reference (tests/reference/attn_ce_f64.ts):
 * output, log-sum-exp, dq, dk, dv on odd shapes (seq off every tile size, GQA 3 query heads over 1
 * kv head, head_dim off a multiple of 4, packed segments with padding as src/model/graph.ts writes
 * it), and at 4,096 tokens. Plus: packing equals each segment alone, the float64 backward against
 * finite differences, and bad arguments.
 *
 * Tolerances, as max |gpu - f64| / max |f64| per tensor (the scale floored as `check` says):
 * - f32 variants (row, tiled), 5e-5: f32 rounds by 6e-8 per operation; the sums run over up to
 *   ~3,000 terms (dk, dv at 4,096 tokens) and ds = p·(dout·v − delta) cancels to a tenth of its
 *   terms or less (peaky softmax), which multiplies the relative error. Measured: at most 8e-6
 *   (dk of the peaky case), 3e-6 at 4,096 tokens.
 * - tiled_f16, 1e-2: q, k and v are rounded to f16 (relative 4.9e-4 each), so each score moves by
 *   ~1e-3·|q||k|·scale, which moves probabilities, outputs and gradients by ~1e-3 relative.
 *   Measured: at most 1.8e-3 (dk at 4,096 tokens), 5e-4 for out.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import {
  ATTENTION_VARIANTS,
  attentionLseBytes,
  attentionScratchBytes,
  type AttentionShape,
  type AttentionVariant,
  attentionVariantAvailable,
  encodeAttention,
  encodeAttentionBackward,
} from "../../src/kernels/attention.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { attentionBackwardF64, attentionForwardF64 } from "../reference/attn_ce_f64.ts";

/** The segment id src/model/graph.ts gives padding tokens. */
const PAD = 0xffffffff;

interface Case extends AttentionShape {
  segments: number[];
  /** Scale of q (larger: peakier softmax). Default 1. */
  qScale?: number;
}

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dout: Float32Array;
}

function randomInputs(c: Case, seed: number): Inputs {
  const rng = new Rng(seed);
  const tokens = c.batchSize * c.seq;
  return {
    q: rng.normals(tokens * c.heads * c.headDim, c.qScale ?? 1),
    k: rng.normals(tokens * c.kvHeads * c.headDim),
    v: rng.normals(tokens * c.kvHeads * c.headDim),
    dout: rng.normals(tokens * c.heads * c.headDim),
  };
}

interface GpuResult {
  out: Float32Array;
  lse: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
  /** Ledger bytes the two calls allocated themselves (the shared stats scratch, if any). */
  allocated: number;
}

/** Forward and backward in one submit; `ownScratch` false lets the kernel take its shared one. */
async function runGpu(
  ctx: GpuContext,
  c: Case,
  x: Inputs,
  variant: AttentionVariant,
  ownScratch = true,
): Promise<GpuResult> {
  const shape = {
    batchSize: c.batchSize,
    seq: c.seq,
    heads: c.heads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    variant,
  };
  const q = ctx.upload("q", "activations", x.q);
  const k = ctx.upload("k", "activations", x.k);
  const v = ctx.upload("v", "activations", x.v);
  const dout = ctx.upload("dout", "activations", x.dout);
  const segments = ctx.upload("segments", "activations", Uint32Array.from(c.segments));
  const out = await poisonedF32(ctx, "out", x.q.length);
  const lse = await poisonedF32(ctx, "lse", attentionLseBytes(c) / 4);
  const dq = await poisonedF32(ctx, "dq", x.q.length);
  const dk = await poisonedF32(ctx, "dk", x.k.length);
  const dv = await poisonedF32(ctx, "dv", x.v.length);
  const scratch = ownScratch
    ? await poisonedF32(ctx, "scratch", attentionScratchBytes(c) / 4)
    : undefined;
  const before = ctx.memory.total;
  const batch = ctx.batch();
  const io = { ...shape, q, k, v, segments, out, lse };
  await encodeAttention(ctx, batch, io);
  await encodeAttentionBackward(ctx, batch, { ...io, dout, dq, dk, dv, scratch });
  batch.submit();
  const allocated = ctx.memory.total - before;
  const r = {
    out: await ctx.readF32(out),
    lse: await ctx.readF32(lse),
    dq: await ctx.readF32(dq),
    dk: await ctx.readF32(dk),
    dv: await ctx.readF32(dv),
    allocated,
  };
  for (const b of [q, k, v, dout, segments, out, lse, dq, dk, dv, scratch]) b?.destroy();
  return r;
}

/**
 * maxRelError with a floor for the scale: dq and dk are sums of p·(dout·v − dout·out), differences
 * of terms of size |dout||v| ≈ 3 here; where they cancel exactly (a query that sees only itself
 * has dq = 0 and dk = 0) what is left is the rounding of those terms, which a relative measure
 * must not divide by ~0. f32: ~1e-7·|k|, floor 0.1. f16: the rounding of v to f16 (the compiler
 * may keep a register copy unrounded in one pass and round it in another, which WGSL allows),
 * ~5e-4·3·|q|·scale, floor 1.
 */
function check(
  name: string,
  got: Float32Array,
  want: Float64Array,
  tol: number,
  variant: AttentionVariant,
): number {
  const err = maxRelError(got, want, variant === "tiled_f16" ? 1 : 0.1);
  assert.ok(err <= tol, `${name}: relative error ${err} > ${tol}`);
  return err;
}

/** Per-precision tolerance on the small shapes (see the header). */
function tolerance(variant: AttentionVariant): number {
  return variant === "tiled_f16" ? 1e-2 : 5e-5;
}

const CASES: Array<[string, Case]> = [
  ["seq 5, heads 4 / kv 2, two rows, one causal segment each", {
    batchSize: 2,
    seq: 5,
    heads: 4,
    kvHeads: 2,
    headDim: 10,
    segments: [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
  }],
  ["seq 17, heads 3 / kv 3, packed: segments of 6 and 8, 3 padding tokens", {
    batchSize: 1,
    seq: 17,
    heads: 3,
    kvHeads: 3,
    headDim: 10,
    segments: [...Array(6).fill(4), ...Array(8).fill(9), PAD, PAD, PAD],
  }],
  ["seq 17, heads 4 / kv 2, two packed rows, peaky softmax (q x 3)", {
    batchSize: 2,
    seq: 17,
    heads: 4,
    kvHeads: 2,
    headDim: 10,
    qScale: 3,
    segments: [
      ...Array(17).fill(1),
      ...Array(3).fill(2),
      ...Array(10).fill(3),
      ...Array(4).fill(7),
    ],
  }],
  ["seq 1, heads 4 / kv 2, three rows", {
    batchSize: 3,
    seq: 1,
    heads: 4,
    kvHeads: 2,
    headDim: 10,
    segments: [5, 6, 7],
  }],
  // Tiled blocks are 64 rows and key tiles up to 32: 70 spans two blocks (the second short),
  // the row variant's 16-key steps straddle the segment boundary at 40.
  ["seq 70, GQA 3 heads / kv 1, packed: segments of 40 and 27, 3 padding tokens", {
    batchSize: 1,
    seq: 70,
    heads: 3,
    kvHeads: 1,
    headDim: 10,
    segments: [...Array(40).fill(0), ...Array(27).fill(1), PAD, PAD, PAD],
  }],
  ["seq 131, heads 6 / kv 2 of 8, two rows: one causal, one packed 50 + 77 + 4 padding", {
    batchSize: 2,
    seq: 131,
    heads: 6,
    kvHeads: 2,
    headDim: 8,
    segments: [
      ...Array(131).fill(0),
      ...Array(50).fill(1),
      ...Array(77).fill(2),
      ...Array(4).fill(PAD),
    ],
  }],
];

for (const variant of ATTENTION_VARIANTS) {
  CASES.forEach(([name, c], n) => {
    gpuTest(`attention ${variant} forward and backward vs float64: ${name}`, async (ctx) => {
      if (!attentionVariantAvailable(ctx, variant)) return; // tiled_f16 without shader-f16
      const x = randomInputs(c, 100 + n);
      const gpu = await runGpu(ctx, c, x, variant);
      const fwd = attentionForwardF64(x.q, x.k, x.v, c.segments, c);
      const bwd = attentionBackwardF64(x.q, x.k, x.v, c.segments, x.dout, c);
      const tol = tolerance(variant);
      check("out", gpu.out, fwd.out, tol, variant);
      check("lse", gpu.lse, fwd.lse, tol, variant);
      check("dq", gpu.dq, bwd.dq, tol, variant);
      check("dk", gpu.dk, bwd.dk, tol, variant);
      check("dv", gpu.dv, bwd.dv, tol, variant);
    });
  });
}

// 4,096 tokens: [4096, 4096] scores would be 64 MiB per head; nothing of that size may appear.
const LONG: Case = {
  batchSize: 1,
  seq: 4096,
  heads: 3,
  kvHeads: 1,
  headDim: 8,
  segments: [...Array(3001).fill(0), ...Array(1000).fill(1), ...Array(95).fill(PAD)],
};
let longReference:
  | {
    x: Inputs;
    fwd: ReturnType<typeof attentionForwardF64>;
    bwd: ReturnType<typeof attentionBackwardF64>;
  }
  | undefined;

for (const variant of ATTENTION_VARIANTS) {
  gpuTest(`attention ${variant} at 4,096 tokens vs float64 (row by row)`, async (ctx) => {
    if (!attentionVariantAvailable(ctx, variant)) return;
    if (!longReference) {
      const x = randomInputs(LONG, 4096);
      longReference = {
        x,
        fwd: attentionForwardF64(x.q, x.k, x.v, LONG.segments, LONG),
        bwd: attentionBackwardF64(x.q, x.k, x.v, LONG.segments, x.dout, LONG),
      };
    }
    const { x, fwd, bwd } = longReference;
    const gpu = await runGpu(ctx, LONG, x, variant, false);
    // The kernels' own allocation is at most the O(tokens·heads) stats scratch.
    assert.ok(
      gpu.allocated <= attentionScratchBytes(LONG),
      `allocated ${gpu.allocated} bytes, more than the stats scratch`,
    );
    const tol = tolerance(variant);
    check("out", gpu.out, fwd.out, tol, variant);
    check("lse", gpu.lse, fwd.lse, tol, variant);
    check("dq", gpu.dq, bwd.dq, tol, variant);
    check("dk", gpu.dk, bwd.dk, tol, variant);
    check("dv", gpu.dv, bwd.dv, tol, variant);
  });
}

Deno.test("attention float64 backward agrees with finite differences of the forward", () => {
  const c = CASES[2][1];
  const x = randomInputs(c, 7);
  const toF64 = (a: Float32Array) => Float64Array.from(a);
  const inputs = { q: toF64(x.q), k: toF64(x.k), v: toF64(x.v) };
  const loss = () => {
    const { out } = attentionForwardF64(inputs.q, inputs.k, inputs.v, c.segments, c);
    let l = 0;
    for (let i = 0; i < out.length; i++) l += out[i] * x.dout[i];
    return l;
  };
  const grads = attentionBackwardF64(inputs.q, inputs.k, inputs.v, c.segments, x.dout, c);
  const rng = new Rng(8);
  const h = 1e-5;
  for (const name of ["q", "k", "v"] as const) {
    const analytic = { q: grads.dq, k: grads.dk, v: grads.dv }[name];
    for (let trial = 0; trial < 6; trial++) {
      const i = rng.int(inputs[name].length);
      const keep = inputs[name][i];
      inputs[name][i] = keep + h;
      const up = loss();
      inputs[name][i] = keep - h;
      const down = loss();
      inputs[name][i] = keep;
      const fd = (up - down) / (2 * h);
      assert.ok(
        Math.abs(fd - analytic[i]) <= 1e-6 + 1e-5 * Math.abs(analytic[i]),
        `d${name}[${i}]: finite difference ${fd} vs analytic ${analytic[i]}`,
      );
    }
  }
});

Deno.test("attention float64 log-sum-exp is log sum exp of the scores (2 tokens by hand)", () => {
  // One head of dim 4, scale 1/2: s00 = q0.k0/2 = 1; s10 = q1.k0/2 = 0.5, s11 = q1.k1/2 = -1.
  const c: Case = { batchSize: 1, seq: 2, heads: 1, kvHeads: 1, headDim: 4, segments: [0, 0] };
  const q = [2, 0, 0, 0, 1, 0, 0, 0];
  const k = [1, 0, 0, 0, -2, 0, 0, 0];
  const v = [1, 2, 3, 4, 5, 6, 7, 8];
  const { out, lse } = attentionForwardF64(q, k, v, c.segments, c);
  assert.ok(Math.abs(lse[0] - 1) < 1e-15);
  const l1 = Math.log(Math.exp(0.5) + Math.exp(-1));
  assert.ok(Math.abs(lse[1] - l1) < 1e-15);
  const p0 = Math.exp(0.5 - l1);
  for (let d = 0; d < 4; d++) {
    assert.ok(Math.abs(out[d] - v[d]) < 1e-15);
    assert.ok(Math.abs(out[4 + d] - (p0 * v[d] + (1 - p0) * v[4 + d])) < 1e-14);
  }
});

for (const variant of ATTENTION_VARIANTS) {
  gpuTest(`attention ${variant} over packed segments equals each segment alone`, async (ctx) => {
    if (!attentionVariantAvailable(ctx, variant)) return;
    const lengths = [6, 8, 3];
    const packed: Case = {
      batchSize: 1,
      seq: 17,
      heads: 4,
      kvHeads: 2,
      headDim: 10,
      segments: lengths.flatMap((len, s) => Array(len).fill(s)),
    };
    const x = randomInputs(packed, 21);
    const whole = await runGpu(ctx, packed, x, variant);
    const qw = packed.heads * packed.headDim;
    const kw = packed.kvHeads * packed.headDim;
    let start = 0;
    for (const len of lengths) {
      const alone: Case = { ...packed, seq: len, segments: Array(len).fill(0) };
      const part = await runGpu(ctx, alone, {
        q: x.q.slice(start * qw, (start + len) * qw),
        k: x.k.slice(start * kw, (start + len) * kw),
        v: x.v.slice(start * kw, (start + len) * kw),
        dout: x.dout.slice(start * qw, (start + len) * qw),
      }, variant);
      // The same roundings in both (f16 too); only the online softmax's rescaling points move.
      const tol = 1e-5;
      const region = (a: Float32Array, w: number) => a.slice(start * w, (start + len) * w);
      assert.ok(maxRelError(region(whole.out, qw), part.out) <= tol, `out of segment at ${start}`);
      assert.ok(maxRelError(region(whole.dq, qw), part.dq) <= tol, `dq of segment at ${start}`);
      assert.ok(maxRelError(region(whole.dk, kw), part.dk) <= tol, `dk of segment at ${start}`);
      assert.ok(maxRelError(region(whole.dv, kw), part.dv) <= tol, `dv of segment at ${start}`);
      start += len;
    }
  });
}

gpuTest("attention refuses heads that are not a multiple of kvHeads", async (ctx) => {
  const b = ctx.createBuffer({ label: "b", category: "scratch", size: 4096 });
  const batch = ctx.batch();
  await assert.rejects(
    encodeAttention(ctx, batch, {
      q: b,
      k: b,
      v: b,
      segments: b,
      out: b,
      lse: b,
      batchSize: 1,
      seq: 2,
      heads: 3,
      kvHeads: 2,
      headDim: 4,
    }),
    /attention: heads: expected a multiple of kvHeads 2, got 3/,
  );
  b.destroy();
});

gpuTest(
  "attention names a too-small lse buffer, and tiled_f16 only where shader-f16 is",
  async (ctx) => {
    const shape = { batchSize: 1, seq: 8, heads: 2, kvHeads: 1, headDim: 4 };
    const big = ctx.createBuffer({ label: "big", category: "scratch", size: 4096 });
    const small = ctx.createBuffer({ label: "small lse", category: "scratch", size: 32 });
    const io = {
      ...shape,
      q: big,
      k: big,
      v: big,
      segments: big,
      out: big,
      variant: "row" as const,
    };
    try {
      await assert.rejects(
        encodeAttention(ctx, ctx.batch(), { ...io, lse: small }),
        /attention: lse: expected at least 16 elements of 4 bytes \(64 bytes\), got 32 bytes \(buffer small lse\)/,
      );
      assert.equal(attentionVariantAvailable(ctx, "tiled_f16"), ctx.capabilities.f16);
      if (!ctx.capabilities.f16) {
        await assert.rejects(
          encodeAttention(ctx, ctx.batch(), { ...io, lse: big, variant: "tiled_f16" }),
          /tiled_f16 needs shader-f16/,
        );
      }
    } finally {
      big.destroy();
      small.destroy();
    }
  },
);

closeGpuAfterTests();
