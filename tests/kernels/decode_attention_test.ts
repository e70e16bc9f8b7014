/**
 * Decode attention (src/kernels/decode_attention.ts) against a float64 softmax written from the
 * definition: queries at absolute positions pos0.. over a cache, causal by absolute position, GQA.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import {
  DECODE_SPLIT_KEYS,
  decodeSplitKeys,
  encodeDecodeAttention,
} from "../../src/kernels/decode_attention.ts";
import { UnexpectedShapeError } from "../../src/kernels/shape_checks.ts";
import { encodeToF16, halfBufferBytes } from "../../src/kernels/convert_f16.ts";
import { Rng } from "../../src/util/random.ts";
import { roundF16Array } from "../reference/float16_f64.ts";

interface Case {
  /** What the cache holds (default f32). */
  kvPrecision?: "f32" | "f16";
  /** Keys per split (default the wrapper's: one split at these sizes). */
  splitKeys?: number;
  n: number;
  pos0: number;
  capacity: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

function reference(
  c: Case,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
): Float64Array {
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
// the relative error stays within a few hundred f32 ulps (2^-24 each); 2e-5 leaves room. An f16
// cache is compared with a reference given the same halves (rounded on the host), so the bound
// is the same: the kernel's arithmetic is f32 either way.
const TOL = 2e-5;

for (
  const c of [
    // Prefill: several queries from position 0, more keys than one 16-key chunk.
    { n: 19, pos0: 0, capacity: 23, heads: 4, kvHeads: 2, headDim: 12 },
    // Decode: one query deep into the cache, plain multi-head; one split, then splits of 7 keys
    // (the last one short), then of 16 (a split of exactly one online-softmax chunk).
    { n: 1, pos0: 37, capacity: 41, heads: 3, kvHeads: 3, headDim: 8 },
    { n: 1, pos0: 37, capacity: 41, heads: 3, kvHeads: 3, headDim: 8, splitKeys: 7 },
    { n: 1, pos0: 47, capacity: 48, heads: 2, kvHeads: 1, headDim: 6, splitKeys: 16 },
    // A chunk of queries after cached tokens, GQA 4:1, with splits that some queries end inside
    // and later ones cover (a split past a query's last key must add nothing).
    { n: 5, pos0: 9, capacity: 17, heads: 4, kvHeads: 1, headDim: 20 },
    { n: 5, pos0: 9, capacity: 17, heads: 4, kvHeads: 1, headDim: 20, splitKeys: 4 },
    // Halves in the cache: a decode step and a prefill chunk, split.
    {
      kvPrecision: "f16",
      n: 1,
      pos0: 37,
      capacity: 41,
      heads: 3,
      kvHeads: 3,
      headDim: 8,
      splitKeys: 7,
    },
    {
      kvPrecision: "f16",
      n: 5,
      pos0: 9,
      capacity: 17,
      heads: 4,
      kvHeads: 1,
      headDim: 20,
      splitKeys: 4,
    },
  ] satisfies Case[]
) {
  const name = `decode attention (${c.kvPrecision ?? "f32"} cache): n ${c.n} at pos0 ${c.pos0}, ` +
    `${c.heads}/${c.kvHeads} heads, splits of ${c.splitKeys ?? "default"} keys`;
  gpuTest(name, async (ctx) => {
    const rng = new Rng(c.n * 31 + c.pos0);
    const q = rng.normals(c.n * c.heads * c.headDim);
    // Rows past pos0+n-1 are garbage a correct kernel never reads: large values would show.
    const kvn = c.capacity * c.kvHeads * c.headDim;
    const k = rng.normals(kvn);
    const v = rng.normals(kvn);
    const used = (c.pos0 + c.n) * c.kvHeads * c.headDim;
    for (let i = used; i < kvn; i++) k[i] = v[i] = 1e4;
    const qb = ctx.upload("q", "scratch", q);
    const k32 = ctx.upload("k", "scratch", k);
    const v32 = ctx.upload("v", "scratch", v);
    const f16 = c.kvPrecision === "f16";
    const out = await poisonedF32(ctx, "out", c.n * c.heads * c.headDim);
    const batch = ctx.batch("decode attention test");
    let [kb, vb] = [k32, v32];
    if (f16) {
      // The cache as the decoder writes it: halves packed by the conversion kernel.
      const size = halfBufferBytes(kvn);
      kb = ctx.createBuffer({ label: "k16", category: "scratch", size });
      vb = ctx.createBuffer({ label: "v16", category: "scratch", size });
      await encodeToF16(ctx, batch, { src: k32, dst: kb, n: kvn });
      await encodeToF16(ctx, batch, { src: v32, dst: vb, n: kvn });
    }
    await encodeDecodeAttention(ctx, batch, { ...c, q: qb, kCache: kb, vCache: vb, out });
    batch.submit();
    const got = await ctx.readF32(out, 0, c.n * c.heads * c.headDim);
    const want = f16 ? reference(c, q, roundF16Array(k), roundF16Array(v)) : reference(c, q, k, v);
    const err = maxRelError(got, want);
    assert.ok(err < TOL, `max rel error ${err}`);
    for (const b of new Set([qb, k32, v32, kb, vb, out])) b.destroy();
  });
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

Deno.test("decode attention: a decode query gets short splits, a prefill chunk long ones", () => {
  // One query, 32 heads, a 4096-token context: 64 splits of 64 keys (2048 invocations).
  assert.equal(decodeSplitKeys(1, 32, 4096), DECODE_SPLIT_KEYS);
  // 64 queries x 32 heads already make 2048 invocations: at most 8 splits, of 1024 keys.
  assert.equal(decodeSplitKeys(64, 32, 8192), 1024);
  // More query-heads than the cap: one split covering every key.
  assert.equal(decodeSplitKeys(64, 512, 300), 300);
});

closeGpuAfterTests();
