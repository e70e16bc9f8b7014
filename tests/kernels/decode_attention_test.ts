/**
 * Decode attention (src/kernels/decode_attention.ts) against a float64 softmax written from the
 * definition: queries at absolute positions pos0.. over a cache, causal by absolute position, GQA.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import { encodeDecodeAttention } from "../../src/kernels/decode_attention.ts";
import { UnexpectedShapeError } from "../../src/kernels/shape_checks.ts";
import { Rng } from "../../src/util/random.ts";

interface Case {
  n: number;
  pos0: number;
  capacity: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

function reference(c: Case, q: Float32Array, k: Float32Array, v: Float32Array): Float64Array {
  const out = new Float64Array(c.n * c.heads * c.headDim);
  const group = c.heads / c.kvHeads;
  for (let i = 0; i < c.n; i++) {
    for (let h = 0; h < c.heads; h++) {
      const g = Math.floor(h / group);
      const qb = (i * c.heads + h) * c.headDim;
      const scores: number[] = [];
      for (let j = 0; j <= c.pos0 + i; j++) {
        let s = 0;
        const kb = (j * c.kvHeads + g) * c.headDim;
        for (let d = 0; d < c.headDim; d++) s += q[qb + d] * k[kb + d];
        scores.push(s / Math.sqrt(c.headDim));
      }
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let j = 0; j < e.length; j++) {
        const vb = (j * c.kvHeads + g) * c.headDim;
        for (let d = 0; d < c.headDim; d++) out[qb + d] += (e[j] / z) * v[vb + d];
      }
    }
  }
  return out;
}

// f32 against float64: the softmax sums at most ~40 terms and each output one weighted sum, so
// the relative error stays within a few hundred f32 ulps (2^-24 each); 2e-5 leaves room.
const TOL = 2e-5;

for (
  const c of [
    // Prefill: several queries from position 0, more keys than one 16-key chunk.
    { n: 19, pos0: 0, capacity: 23, heads: 4, kvHeads: 2, headDim: 12 },
    // Decode: one query deep into the cache, plain multi-head.
    { n: 1, pos0: 37, capacity: 41, heads: 3, kvHeads: 3, headDim: 8 },
    // A chunk of queries after cached tokens, GQA 4:1.
    { n: 5, pos0: 9, capacity: 17, heads: 4, kvHeads: 1, headDim: 20 },
  ] satisfies Case[]
) {
  gpuTest(
    `decode attention: n ${c.n} at pos0 ${c.pos0}, ${c.heads}/${c.kvHeads} heads`,
    async (ctx) => {
      const rng = new Rng(c.n * 31 + c.pos0);
      const q = rng.normals(c.n * c.heads * c.headDim);
      // Rows past pos0+n-1 are garbage a correct kernel never reads: large values would show.
      const kvn = c.capacity * c.kvHeads * c.headDim;
      const k = rng.normals(kvn);
      const v = rng.normals(kvn);
      const used = (c.pos0 + c.n) * c.kvHeads * c.headDim;
      for (let i = used; i < kvn; i++) k[i] = v[i] = 1e4;
      const qb = ctx.upload("q", "scratch", q);
      const kb = ctx.upload("k", "scratch", k);
      const vb = ctx.upload("v", "scratch", v);
      const out = await poisonedF32(ctx, "out", c.n * c.heads * c.headDim);
      const batch = ctx.batch("decode attention test");
      await encodeDecodeAttention(ctx, batch, { ...c, q: qb, kCache: kb, vCache: vb, out });
      batch.submit();
      const got = await ctx.readF32(out, 0, c.n * c.heads * c.headDim);
      const err = maxRelError(got, reference(c, q, k, v));
      assert.ok(err < TOL, `max rel error ${err}`);
      for (const b of [qb, kb, vb, out]) b.destroy();
    },
  );
}

gpuTest("decode attention: queries past the cache's capacity are refused", async (ctx) => {
  const buf = ctx.createBuffer({ label: "x", category: "scratch", size: 4096 });
  const batch = ctx.batch("refused");
  await assert.rejects(
    encodeDecodeAttention(ctx, batch, {
      q: buf,
      kCache: buf,
      vCache: buf,
      out: buf,
      n: 2,
      pos0: 7,
      capacity: 8,
      heads: 2,
      kvHeads: 1,
      headDim: 4,
    }),
    (e) => e instanceof UnexpectedShapeError && /pos0 \+ n/.test(e.message),
  );
  batch.submit();
  buf.destroy();
});

closeGpuAfterTests();
