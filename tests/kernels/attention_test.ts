import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import {
  ATTENTION_VARIANTS,
  attentionScratchBytes,
  type AttentionShape,
  type AttentionVariant,
  encodeAttention,
  encodeAttentionBackward,
} from "../../src/kernels/attention.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { attentionBackwardF64, attentionForwardF64 } from "../reference/attn_ce_f64.ts";

interface Case extends AttentionShape {
  segments: number[];
}

interface Inputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dout: Float32Array;
}

function randomInputs(s: AttentionShape, seed: number): Inputs {
  const rng = new Rng(seed);
  const tokens = s.batchSize * s.seq;
  return {
    q: rng.normals(tokens * s.heads * s.headDim),
    k: rng.normals(tokens * s.kvHeads * s.headDim),
    v: rng.normals(tokens * s.kvHeads * s.headDim),
    dout: rng.normals(tokens * s.heads * s.headDim),
  };
}

interface GpuResult {
  out: Float32Array;
  probs: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
}

async function runGpu(
  ctx: GpuContext,
  c: Case,
  x: Inputs,
  variant: AttentionVariant,
  maxBindingBytes?: number,
): Promise<GpuResult> {
  const tokens = c.batchSize * c.seq;
  const shape = {
    batchSize: c.batchSize,
    seq: c.seq,
    heads: c.heads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    maxBindingBytes,
    variant,
  };
  const q = ctx.upload("q", "activations", x.q);
  const k = ctx.upload("k", "activations", x.k);
  const v = ctx.upload("v", "activations", x.v);
  const dout = ctx.upload("dout", "activations", x.dout);
  const segments = ctx.upload("segments", "activations", Uint32Array.from(c.segments));
  const out = await poisonedF32(ctx, "out", tokens * c.heads * c.headDim);
  const probs = await poisonedF32(ctx, "probs", c.batchSize * c.heads * c.seq * c.seq);
  const dq = await poisonedF32(ctx, "dq", x.q.length);
  const dk = await poisonedF32(ctx, "dk", x.k.length);
  const dv = await poisonedF32(ctx, "dv", x.v.length);
  const scratch = await poisonedF32(ctx, "scratch", attentionScratchBytes(shape) / 4);
  const batch = ctx.batch();
  await encodeAttention(ctx, batch, { ...shape, q, k, v, segments, out, probs });
  await encodeAttentionBackward(ctx, batch, {
    ...shape,
    q,
    k,
    v,
    segments,
    probs,
    dout,
    dq,
    dk,
    dv,
    scratch,
  });
  batch.submit();
  const r = {
    out: await ctx.readF32(out),
    probs: await ctx.readF32(probs),
    dq: await ctx.readF32(dq),
    dk: await ctx.readF32(dk),
    dv: await ctx.readF32(dv),
  };
  for (const b of [q, k, v, dout, segments, out, probs, dq, dk, dv, scratch]) b.destroy();
  return r;
}

function check(name: string, got: Float32Array, want: Float64Array, tol: number): void {
  const err = maxRelError(got, want);
  assert.ok(err <= tol, `${name}: relative error ${err} > ${tol}`);
}

const CASES: Array<[string, Case]> = [
  ["seq 5, heads 4 / kv 2, two rows, one causal segment each", {
    batchSize: 2,
    seq: 5,
    heads: 4,
    kvHeads: 2,
    headDim: 20,
    segments: [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
  }],
  ["seq 17, heads 3 / kv 3, packed: segments of 6 and 8, 3 padding tokens", {
    batchSize: 1,
    seq: 17,
    heads: 3,
    kvHeads: 3,
    headDim: 20,
    segments: [...Array(6).fill(4), ...Array(8).fill(9), 100, 101, 102],
  }],
  ["seq 17, heads 4 / kv 2, two packed rows", {
    batchSize: 2,
    seq: 17,
    heads: 4,
    kvHeads: 2,
    headDim: 20,
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
    headDim: 20,
    segments: [5, 6, 7],
  }],
];

// The tiled variant's blocks are 64 rows: seq 70 spans two, with a short second block.
CASES.push(["seq 70, heads 4 / kv 2, packed: segments of 40 and 30 (tiled: two blocks)", {
  batchSize: 1,
  seq: 70,
  heads: 4,
  kvHeads: 2,
  headDim: 12,
  segments: [...Array(40).fill(0), ...Array(30).fill(1)],
}]);

for (const variant of ATTENTION_VARIANTS) {
  CASES.forEach(([name, c], n) => {
    gpuTest(`attention ${variant} forward and backward vs float64: ${name}`, async (ctx) => {
      const x = randomInputs(c, 100 + n);
      const gpu = await runGpu(ctx, c, x, variant);
      const fwd = attentionForwardF64(x.q, x.k, x.v, c.segments, c);
      const bwd = attentionBackwardF64(x.q, x.k, x.v, c.segments, x.dout, c);
      check("out", gpu.out, fwd.out, 1e-5);
      check("probs", gpu.probs, fwd.probs, 1e-5);
      // Masked entries are exact zeros (the backward pass relies on it).
      fwd.probs.forEach((p, i) => p === 0 && assert.equal(gpu.probs[i], 0, `probs[${i}]`));
      check("dq", gpu.dq, bwd.dq, 1e-5);
      check("dk", gpu.dk, bwd.dk, 1e-5);
      check("dv", gpu.dv, bwd.dv, 1e-5);
    });
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

for (const variant of ATTENTION_VARIANTS) {
  gpuTest(`attention ${variant} over packed segments equals each segment alone`, async (ctx) => {
    const lengths = [6, 8, 3];
    const packed: Case = {
      batchSize: 1,
      seq: 17,
      heads: 4,
      kvHeads: 2,
      headDim: 20,
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
      const tol = 1e-6;
      const region = (a: Float32Array, w: number) => a.slice(start * w, (start + len) * w);
      assert.ok(maxRelError(region(whole.out, qw), part.out) <= tol, `out of segment at ${start}`);
      assert.ok(maxRelError(region(whole.dq, qw), part.dq) <= tol, `dq of segment at ${start}`);
      assert.ok(maxRelError(region(whole.dk, kw), part.dk) <= tol, `dk of segment at ${start}`);
      assert.ok(maxRelError(region(whole.dv, kw), part.dv) <= tol, `dv of segment at ${start}`);
      start += len;
    }
  });

  gpuTest(
    `attention ${variant} split by batch rows (binding limit) gives the same bits`,
    async (ctx) => {
      const c: Case = {
        batchSize: 3,
        seq: 8,
        heads: 4,
        kvHeads: 2,
        headDim: 20,
        segments: [...Array(8).fill(0), ...Array(5).fill(1), 2, 3, 4, ...Array(8).fill(5)],
      };
      const x = randomInputs(c, 33);
      const whole = await runGpu(ctx, c, x, variant);
      // rows [0, 2), [2, 3)
      const split = await runGpu(ctx, c, x, variant, 2 * c.heads * c.seq * c.seq * 4);
      for (const key of ["out", "probs", "dq", "dk", "dv"] as const) {
        assert.deepEqual(split[key], whole[key], key);
      }
    },
  );
}

gpuTest(
  "attention row and tiled variants give the same bits (same visiting order)",
  async (ctx) => {
    const c = CASES.at(-1)![1];
    const x = randomInputs(c, 55);
    const row = await runGpu(ctx, c, x, "row");
    const tiled = await runGpu(ctx, c, x, "tiled");
    for (const key of ["out", "probs", "dq", "dk", "dv"] as const) {
      assert.deepEqual(tiled[key], row[key], key);
    }
  },
);

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
      probs: b,
      batchSize: 1,
      seq: 2,
      heads: 3,
      kvHeads: 2,
      headDim: 4,
    }),
    /heads 3 is not a multiple of kvHeads 2/,
  );
  b.destroy();
});

closeGpuAfterTests();
