/**
 * lm_head + cross-entropy against float64 (tests/reference/attn_ce_f64.ts) on 16-bit tables:
 * every variant this device can run, odd rows / hidden / vocabulary, masked labels, vocabularies
 * not a multiple of the block, row chunks, and tables split into 3+ row chunks by a forced
 * binding limit with chunk boundaries off the vocabulary blocks. The reference gets the table
 * values rounded independently (tests/reference/float16_f64.ts), so f32 variants match to f32
 * tolerance.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import {
  CROSS_ENTROPY_VARIANTS,
  crossEntropyChunks,
  crossEntropyScratchBytes,
  type CrossEntropyVariant,
  crossEntropyVariantAvailable,
  encodeLmHeadCrossEntropy,
  encodeLmHeadLogits,
  encodeSumRows,
} from "../../src/kernels/cross_entropy.ts";
import { type Table16Dtype, uploadTable16 } from "../../src/kernels/row_chunks.ts";
import { f32ArrayToBf16, f32ArrayToF16 } from "../../src/io/dtype.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { lmHeadCrossEntropyF64 } from "../reference/attn_ce_f64.ts";
import { roundBf16Array, roundF16Array } from "../reference/float16_f64.ts";

interface Problem {
  rows: number;
  hidden: number;
  vocab: number;
  h: Float32Array;
  dtype: Table16Dtype;
  /** The table's values as stored (rounded in float64 arithmetic). */
  weight: Float64Array;
  bits: Uint16Array;
  labels: Int32Array;
}

/** Random problem; rows listed in `ignored` get -100, rows in `hit` get the true argmax label. */
function problem(
  rows: number,
  hidden: number,
  vocab: number,
  seed: number,
  ignored: number[],
  hit: number[],
  dtype: Table16Dtype = "bf16",
): Problem {
  const rng = new Rng(seed);
  const h = rng.normals(rows * hidden);
  const raw = rng.normals(vocab * hidden, 0.3);
  const weight = dtype === "bf16" ? roundBf16Array(raw) : roundF16Array(raw);
  const bits = dtype === "bf16" ? f32ArrayToBf16(raw) : f32ArrayToF16(raw);
  const labels = Int32Array.from({ length: rows }, () => rng.int(vocab));
  for (const r of ignored) labels[r] = -100;
  const { logits } = lmHeadCrossEntropyF64(h, weight, labels, rows, hidden, vocab);
  for (const r of hit) {
    let best = 0;
    for (let c = 1; c < vocab; c++) if (logits[r * vocab + c] > logits[r * vocab + best]) best = c;
    labels[r] = best;
  }
  return { rows, hidden, vocab, h, dtype, weight, bits, labels };
}

interface GpuOut {
  loss: Float32Array;
  correct: Uint32Array;
  dh?: Float32Array;
  tableChunks: number;
}

interface RunOpts {
  chunk: number;
  rowChunk?: number;
  /** Forced binding limit for the table upload: splits it into row chunks. */
  maxBindingBytes?: number;
  dh?: boolean;
  gradScale?: number;
  scaleInBuffer?: boolean;
  scratch?: boolean;
  variant?: CrossEntropyVariant;
}

function uploadWeight(ctx: GpuContext, p: Problem, maxBindingBytes?: number) {
  return uploadTable16(ctx, {
    label: "lm_head",
    category: "base_weights",
    dtype: p.dtype,
    rows: p.vocab,
    cols: p.hidden,
    bits: p.bits,
    maxBindingBytes,
  });
}

async function runGpu(ctx: GpuContext, p: Problem, o: RunOpts): Promise<GpuOut> {
  const h = ctx.upload("h", "activations", p.h);
  const weight = uploadWeight(ctx, p, o.maxBindingBytes);
  const labels = ctx.upload("labels", "activations", p.labels);
  const loss = await poisonedF32(ctx, "loss", p.rows);
  const correct = await poisonedF32(ctx, "correct", p.rows);
  const dh = o.dh ? await poisonedF32(ctx, "dh", p.rows * p.hidden) : undefined;
  const scaleBuf = o.scaleInBuffer
    ? ctx.upload("scale", "scratch", new Float32Array([-1, o.gradScale ?? 1]))
    : undefined;
  const { rowChunk, vocabChunk } = crossEntropyChunks(p.rows, p.vocab, {
    vocabChunk: o.chunk,
    rowChunk: o.rowChunk,
  });
  const scratch = o.scratch
    ? await poisonedF32(ctx, "ce scratch", crossEntropyScratchBytes(rowChunk, vocabChunk) / 4)
    : undefined;
  const batch = ctx.batch();
  await encodeLmHeadCrossEntropy(ctx, batch, {
    h,
    weight,
    labels,
    rows: p.rows,
    hidden: p.hidden,
    chunk: o.chunk,
    rowChunk: o.rowChunk,
    loss,
    correct,
    dh,
    gradScale: scaleBuf ?? o.gradScale,
    gradScaleIndex: scaleBuf ? 1 : undefined,
    scratch,
    variant: o.variant,
  });
  batch.submit();
  const out: GpuOut = {
    loss: await ctx.readF32(loss),
    correct: await ctx.readU32(correct),
    tableChunks: weight.chunks.length,
  };
  if (dh) out.dh = await ctx.readF32(dh);
  weight.destroy();
  for (const b of [h, labels, loss, correct, dh, scaleBuf, scratch]) b?.destroy();
  return out;
}

/**
 * Worst error of one logit from the f16 logits product: h rounds to f16 (2^-11 relative), each
 * product rounds to f16 (2^-11), so |error| <= 2^-10 * sum_k |h_k w_k| (plus f16 subnormal
 * steps, 2^-24 * sum_k |h_k|, for tiny weights; f32 accumulation adds ~2^-24 * hidden relative).
 */
function f16LogitBound(p: Problem): number {
  let worst = 0;
  for (let r = 0; r < p.rows; r++) {
    let sumH = 0;
    for (let k = 0; k < p.hidden; k++) sumH += Math.abs(p.h[r * p.hidden + k]);
    for (let c = 0; c < p.vocab; c++) {
      let s = 0;
      for (let k = 0; k < p.hidden; k++) {
        s += Math.abs(p.h[r * p.hidden + k] * p.weight[c * p.hidden + k]);
      }
      worst = Math.max(worst, s * (2 ** -10 + p.hidden * 2 ** -24) + sumH * 2 ** -24);
    }
  }
  return worst;
}

/** Largest logit gap between a row's best and second-best word, per row (float64). */
function margins(logits: Float64Array, rows: number, vocab: number): number[] {
  return Array.from({ length: rows }, (_, r) => {
    const row = Array.from(logits.subarray(r * vocab, (r + 1) * vocab)).sort((a, b) => b - a);
    return vocab > 1 ? row[0] - row[1] : Infinity;
  });
}

function checkAgainstReference(p: Problem, gpu: GpuOut, gradScale: number, variant: string) {
  const ref = lmHeadCrossEntropyF64(
    p.h,
    p.weight,
    p.labels,
    p.rows,
    p.hidden,
    p.vocab,
    gradScale,
  );
  const f16 = variant.endsWith("_f16");
  if (!f16) {
    // f32 products against the same stored weights: f32 rounding over <= 69 terms and the
    // softmax's exp/log stay well within 1e-5 of the largest value.
    assert.ok(maxRelError(gpu.loss, ref.loss) <= 1e-5, `loss ${maxRelError(gpu.loss, ref.loss)}`);
    assert.deepEqual(gpu.correct, ref.correct);
    if (gpu.dh) {
      const err = maxRelError(gpu.dh, ref.dh);
      assert.ok(err <= 1e-5, `dh relative error ${err}`);
    }
  } else {
    // Each logit is off by at most d = f16LogitBound: logsumexp and the label's logit move by
    // <= d each, so loss by <= 2d. dlogits come from the perturbed logits: |p' - p| <= ~2d p,
    // so dh moves by <= 2d * max|W| * gradScale (sum of p is 1); 2.2 leaves room for e^{2d}.
    const d = f16LogitBound(p);
    let maxW = 0;
    for (const w of p.weight) maxW = Math.max(maxW, Math.abs(w));
    gpu.loss.forEach((l, r) => {
      assert.ok(Math.abs(l - ref.loss[r]) <= 2 * d + 1e-5 * Math.abs(ref.loss[r]), `loss[${r}]`);
    });
    // The argmax may flip only where the best two words are within 2d of each other.
    const m = margins(ref.logits, p.rows, p.vocab);
    let checked = 0;
    gpu.correct.forEach((c, r) => {
      if (p.labels[r] === -100 || m[r] > 2 * d) {
        assert.equal(c, ref.correct[r], `correct[${r}]`);
        checked++;
      }
    });
    assert.ok(checked > p.rows / 2, "most rows have a clear argmax");
    if (gpu.dh) {
      let scale = 0;
      for (const x of ref.dh) scale = Math.max(scale, Math.abs(x));
      gpu.dh.forEach((x, i) => {
        assert.ok(
          Math.abs(x - ref.dh[i]) <= 2.2 * d * maxW * gradScale + 1e-5 * scale,
          `dh[${i}] ${x} vs ${ref.dh[i]}`,
        );
      });
    }
  }
  assert.ok(ref.correct.some((c) => c === 1), "some rows predicted right");
  p.labels.forEach((l, r) => {
    if (l !== -100) return;
    assert.equal(gpu.loss[r], 0);
    assert.equal(gpu.correct[r], 0);
    if (gpu.dh) {
      assert.ok(gpu.dh.subarray(r * p.hidden, (r + 1) * p.hidden).every((x) => x === 0));
    }
  });
}

interface Case {
  name: string;
  p: Problem;
  opts: RunOpts;
  /** Table chunks the forced binding limit must produce. */
  tableChunks: number;
}

const CASES: Case[] = [
  {
    // An even hidden that is not a multiple of 4: word-paired weight reads and the odd edge.
    name: "hidden 34, vocab 37, block 64 (one partial block)",
    p: problem(13, 34, 37, 1, [2, 9], [0, 5, 11]),
    opts: { chunk: 64 },
    tableChunks: 1,
  },
  {
    // 46 bytes a row: 4,608 bytes hold 100 rows -> table chunks of 100, 100, 100, 1 rows, and
    // blocks of 64 columns: 0-64, 64-100 (chunk end), 100-164, ... 300-301. Rows in chunks of
    // 5, 5, 3.
    name: "vocab 301, block 64, rows in chunks of 5, table in 4 row chunks",
    p: problem(13, 23, 301, 2, [4], [1, 7, 12]),
    opts: { chunk: 64, rowChunk: 5, maxBindingBytes: 4608 },
    tableChunks: 4,
  },
  {
    name: "vocab 301, block 100, hidden 32, f16 table in 3 row chunks",
    p: problem(6, 32, 301, 3, [0], [3, 5], "f16"),
    opts: { chunk: 100, maxBindingBytes: 8000 }, // 64-byte rows: 125 a chunk
    tableChunks: 3,
  },
  {
    // Over one 64x64 tile in rows and hidden, with partial tiles at both edges; 138-byte rows,
    // 120 a chunk (16,560 bytes): 120, 120, 61; blocks of 128 cross no chunk boundary.
    name: "rows 67 (chunks of 64), hidden 69, vocab 301, block 128, table in 3 row chunks",
    p: problem(67, 69, 301, 4, [0, 66], [5, 64, 65]),
    opts: { chunk: 128, rowChunk: 64, maxBindingBytes: 16_560 },
    tableChunks: 3,
  },
];

gpuTest("cross-entropy variants are offered where the device has their features", (ctx) => {
  const caps = ctx.capabilities;
  const sg = caps.subgroups && caps.subgroupMaxSize <= 64;
  assert.equal(crossEntropyVariantAvailable(ctx, "blocked"), true);
  assert.equal(crossEntropyVariantAvailable(ctx, "tiled"), true);
  assert.equal(crossEntropyVariantAvailable(ctx, "tiled_f16"), caps.f16);
  assert.equal(crossEntropyVariantAvailable(ctx, "subgroup"), sg);
  assert.equal(crossEntropyVariantAvailable(ctx, "subgroup_f16"), sg && caps.f16);
  return Promise.resolve();
});

for (const c of CASES) {
  for (const variant of CROSS_ENTROPY_VARIANTS) {
    gpuTest(`lm_head cross-entropy vs float64 (${variant}): ${c.name}`, async (ctx) => {
      if (!crossEntropyVariantAvailable(ctx, variant)) {
        // The device lacks the feature: the wrapper refuses the variant by name.
        await assert.rejects(
          runGpu(ctx, c.p, { ...c.opts, variant }),
          new RegExp(`variant ${variant} needs`),
        );
        return;
      }
      const gradScale = 1 / 11;
      for (const scaleInBuffer of [false, true]) {
        const gpu = await runGpu(ctx, c.p, {
          ...c.opts,
          dh: true,
          gradScale,
          scaleInBuffer,
          scratch: true,
          variant,
        });
        assert.equal(gpu.tableChunks, c.tableChunks);
        checkAgainstReference(c.p, gpu, gradScale, variant);
      }
      // Forward only, through the per-context scratch.
      const fwd = await runGpu(ctx, c.p, { ...c.opts, variant });
      checkAgainstReference(c.p, fwd, gradScale, variant);
    });
  }
}

gpuTest("lm_head logits in full from a table in row chunks vs float64", async (ctx) => {
  const p = problem(3, 23, 301, 5, [], []);
  const ref = lmHeadCrossEntropyF64(p.h, p.weight, p.labels, p.rows, p.hidden, p.vocab);
  for (const variant of CROSS_ENTROPY_VARIANTS) {
    if (!crossEntropyVariantAvailable(ctx, variant)) continue;
    const weight = uploadWeight(ctx, p, 4608);
    const h = ctx.upload("h", "activations", p.h);
    const out = await poisonedF32(ctx, "logits", p.rows * p.vocab);
    const batch = ctx.batch();
    await encodeLmHeadLogits(ctx, batch, {
      h,
      weight,
      rows: p.rows,
      hidden: p.hidden,
      out,
      variant,
    });
    batch.submit();
    const got = await ctx.readF32(out);
    let scale = 0;
    for (const x of ref.logits) scale = Math.max(scale, Math.abs(x));
    // f32: 23-term dot products, within 1e-5 of the largest logit; f16 tiles: f16LogitBound.
    const tol = variant.endsWith("_f16") ? f16LogitBound(p) : 1e-5 * scale;
    const err = maxRelError(got, ref.logits, scale) * scale;
    assert.ok(err <= tol, `${variant}: logits error ${err} > ${tol}`);
    weight.destroy();
    h.destroy();
    out.destroy();
  }
});

Deno.test("hand-checked: the cross-entropy block at 8,192 tokens x 128,256 words", () => {
  // Defaults: 1,024 rows x 2,048 columns: logits 8 MiB (8,388,608 bytes) + stats 1,024 x 16 =
  // 16,384 bytes, whatever the number of tokens. (Vocabulary-only chunking needed all 8,192
  // rows x 2,048 columns: 67,108,864 + 131,072 bytes.)
  const c = crossEntropyChunks(8192, 128_256);
  assert.deepEqual(c, { rowChunk: 1024, vocabChunk: 2048 });
  assert.equal(crossEntropyScratchBytes(c.rowChunk, c.vocabChunk), 8_404_992);
  // A binding limit of 1 MiB shrinks the rows to 128 (128 x 2,048 x 4 = 1 MiB).
  assert.deepEqual(crossEntropyChunks(8192, 128_256, { maxBindingBytes: 1 << 20 }), {
    rowChunk: 128,
    vocabChunk: 2048,
  });
  // Small problems clamp to themselves.
  assert.deepEqual(crossEntropyChunks(13, 37), { rowChunk: 13, vocabChunk: 37 });
});

Deno.test("lm_head cross-entropy float64 dh agrees with finite differences", () => {
  const p = CASES[1].p;
  const gradScale = 0.25;
  const h = Float64Array.from(p.h);
  const total = () => {
    const { loss } = lmHeadCrossEntropyF64(h, p.weight, p.labels, p.rows, p.hidden, p.vocab);
    return loss.reduce((a, b) => a + b, 0) * gradScale;
  };
  const { dh } = lmHeadCrossEntropyF64(h, p.weight, p.labels, p.rows, p.hidden, p.vocab, gradScale);
  const rng = new Rng(4);
  const step = 1e-5;
  for (let trial = 0; trial < 8; trial++) {
    const i = rng.int(h.length);
    const keep = h[i];
    h[i] = keep + step;
    const up = total();
    h[i] = keep - step;
    const down = total();
    h[i] = keep;
    const fd = (up - down) / (2 * step);
    assert.ok(
      Math.abs(fd - dh[i]) <= 1e-7 + 1e-5 * Math.abs(dh[i]),
      `dh[${i}]: finite difference ${fd} vs analytic ${dh[i]}`,
    );
  }
});

gpuTest("sum rows: f32 and u32 sums, overwrite and accumulate, same bits twice", async (ctx) => {
  const n = 1037;
  const x = new Rng(5).normals(n);
  const counts = Uint32Array.from({ length: n }, (_, i) => (i * 7) % 3);
  const input = ctx.upload("x", "scratch", x);
  const countBuf = ctx.upload("counts", "scratch", counts);
  const out = await poisonedF32(ctx, "out", 3);
  const outU = ctx.upload("outU", "scratch", new Uint32Array([5, 5]));
  const batch = ctx.batch();
  await encodeSumRows(ctx, batch, { input, n, out, outIndex: 1 });
  await encodeSumRows(ctx, batch, { input, n: 100, out, outIndex: 2 });
  await encodeSumRows(ctx, batch, { input, n: 100, out, outIndex: 2, accumulate: true });
  await encodeSumRows(ctx, batch, { input: countBuf, n, out: outU, type: "u32" });
  await encodeSumRows(ctx, batch, {
    input: countBuf,
    n,
    out: outU,
    outIndex: 1,
    type: "u32",
    accumulate: true,
  });
  batch.submit();
  const got = await ctx.readF32(out);
  const gotU = await ctx.readU32(outU);
  let sum = 0;
  let sum100 = 0;
  x.forEach((v, i) => {
    sum += v;
    if (i < 100) sum100 += v;
  });
  const expectCount = counts.reduce((a, b) => a + b, 0);
  assert.ok(Number.isNaN(got[0]), "element 0 untouched");
  assert.ok(Math.abs(got[1] - sum) <= 1e-5 * n, `sum ${got[1]} vs ${sum}`);
  assert.ok(Math.abs(got[2] - 2 * sum100) <= 1e-5 * 100);
  assert.deepEqual(Array.from(gotU), [expectCount, 5 + expectCount]);
  const again = ctx.batch();
  await encodeSumRows(ctx, again, { input, n, out, outIndex: 0 });
  again.submit();
  assert.equal((await ctx.readF32(out))[0], got[1]);
  for (const b of [input, countBuf, out, outU]) b.destroy();
});

gpuTest("lm_head cross-entropy refuses a table whose width is not hidden", async (ctx) => {
  const p = CASES[0].p;
  const weight = uploadWeight(ctx, p);
  const b = ctx.createBuffer({ label: "b", category: "scratch", size: 1 << 16 });
  await assert.rejects(
    encodeLmHeadCrossEntropy(ctx, ctx.batch(), {
      h: b,
      weight,
      labels: b,
      rows: 3,
      hidden: 24,
      chunk: 16,
      loss: b,
      correct: b,
      scratch: b,
    }),
    /lm_head cross-entropy: weight: expected 24 columns \(hidden\), got 34 columns/,
  );
  weight.destroy();
  b.destroy();
});

closeGpuAfterTests();
