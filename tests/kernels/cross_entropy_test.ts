import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, maxRelError, poisonedF32 } from "../support/gpu.ts";
import {
  crossEntropyScratchBytes,
  type CrossEntropyVariant,
  encodeLmHeadCrossEntropy,
  encodeSumRows,
} from "../../src/kernels/cross_entropy.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { lmHeadCrossEntropyF64 } from "../reference/attn_ce_f64.ts";

interface Problem {
  rows: number;
  hidden: number;
  vocab: number;
  h: Float32Array;
  weight: Float32Array;
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
): Problem {
  const rng = new Rng(seed);
  const h = rng.normals(rows * hidden);
  const weight = rng.normals(vocab * hidden, 0.3);
  const labels = Int32Array.from({ length: rows }, () => rng.int(vocab));
  for (const r of ignored) labels[r] = -100;
  const { logits } = lmHeadCrossEntropyF64(h, weight, labels, rows, hidden, vocab);
  for (const r of hit) {
    let best = 0;
    for (let c = 1; c < vocab; c++) if (logits[r * vocab + c] > logits[r * vocab + best]) best = c;
    labels[r] = best;
  }
  return { rows, hidden, vocab, h, weight, labels };
}

interface GpuOut {
  loss: Float32Array;
  correct: Uint32Array;
  dh?: Float32Array;
}

async function runGpu(
  ctx: GpuContext,
  p: Problem,
  chunk: number,
  opts: {
    dh?: boolean;
    gradScale?: number;
    scaleInBuffer?: boolean;
    scratch?: boolean;
    variant?: CrossEntropyVariant;
  } = {},
): Promise<GpuOut> {
  const h = ctx.upload("h", "activations", p.h);
  const weight = ctx.upload("lm_head", "base_weights", p.weight);
  const labels = ctx.upload("labels", "activations", p.labels);
  const loss = await poisonedF32(ctx, "loss", p.rows);
  const correct = await poisonedF32(ctx, "correct", p.rows);
  const dh = opts.dh ? await poisonedF32(ctx, "dh", p.rows * p.hidden) : undefined;
  const scaleBuf = opts.scaleInBuffer
    ? ctx.upload("scale", "scratch", new Float32Array([-1, opts.gradScale ?? 1]))
    : undefined;
  const scratch = opts.scratch
    ? await poisonedF32(ctx, "ce scratch", crossEntropyScratchBytes(p.rows, chunk) / 4)
    : undefined;
  const batch = ctx.batch();
  await encodeLmHeadCrossEntropy(ctx, batch, {
    h,
    weight,
    labels,
    rows: p.rows,
    hidden: p.hidden,
    vocab: p.vocab,
    chunk,
    loss,
    correct,
    dh,
    gradScale: scaleBuf ?? opts.gradScale,
    gradScaleIndex: scaleBuf ? 1 : undefined,
    scratch,
    variant: opts.variant,
  });
  batch.submit();
  const out: GpuOut = { loss: await ctx.readF32(loss), correct: await ctx.readU32(correct) };
  if (dh) out.dh = await ctx.readF32(dh);
  for (const b of [h, weight, labels, loss, correct, dh, scaleBuf, scratch]) b?.destroy();
  return out;
}

const CASES: Array<[string, Problem, number]> = [
  ["vocab 37, chunk 64 (one partial chunk)", problem(13, 23, 37, 1, [2, 9], [0, 5, 11]), 64],
  ["vocab 301, chunk 64 (5 chunks, the last of 45)", problem(13, 23, 301, 2, [4], [1, 7]), 64],
  ["vocab 301, chunk 100, hidden 32", problem(6, 32, 301, 3, [0], [3]), 100],
  // Over one 64x64 tile in rows and hidden, with partial tiles at both edges.
  ["rows 67, hidden 69, vocab 301, chunk 128", problem(67, 69, 301, 4, [0, 66], [5, 64]), 128],
];

for (const [name, p, chunk] of CASES) {
  for (const variant of ["blocked", "tiled"] as const) {
    gpuTest(`lm_head cross-entropy vs float64 (${variant}): ${name}`, async (ctx) => {
      const gradScale = 1 / 11;
      const ref = lmHeadCrossEntropyF64(
        p.h,
        p.weight,
        p.labels,
        p.rows,
        p.hidden,
        p.vocab,
        gradScale,
      );
      for (const scaleInBuffer of [false, true]) {
        const gpu = await runGpu(ctx, p, chunk, {
          dh: true,
          gradScale,
          scaleInBuffer,
          scratch: true,
        });
        assert.ok(
          maxRelError(gpu.loss, ref.loss) <= 1e-5,
          `loss ${maxRelError(gpu.loss, ref.loss)}`,
        );
        assert.deepEqual(gpu.correct, ref.correct);
        assert.ok(ref.correct.some((c) => c === 1), "some rows predicted right");
        const err = maxRelError(gpu.dh!, ref.dh);
        assert.ok(err <= 1e-5, `dh relative error ${err}`);
        p.labels.forEach((l, r) => {
          if (l !== -100) return;
          assert.equal(gpu.loss[r], 0);
          assert.ok(gpu.dh!.subarray(r * p.hidden, (r + 1) * p.hidden).every((x) => x === 0));
        });
      }
      // Forward only, through the per-context scratch.
      const fwd = await runGpu(ctx, p, chunk, { variant });
      assert.ok(maxRelError(fwd.loss, ref.loss) <= 1e-5);
      assert.deepEqual(fwd.correct, ref.correct);
    });
  }
}

Deno.test("lm_head cross-entropy float64 dh agrees with finite differences", () => {
  const p = CASES[1][1];
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

gpuTest(
  "lm_head cross-entropy refuses chunks that cannot be bound at 256-byte steps",
  async (ctx) => {
    const b = ctx.createBuffer({ label: "b", category: "scratch", size: 1 << 16 });
    const batch = ctx.batch();
    await assert.rejects(
      encodeLmHeadCrossEntropy(ctx, batch, {
        h: b,
        weight: b,
        labels: b,
        rows: 3,
        hidden: 23,
        vocab: 100,
        chunk: 50,
        loss: b,
        correct: b,
        scratch: b,
      }),
      /chunk 50 x hidden 23 must be a multiple of 64/,
    );
    b.destroy();
  },
);

closeGpuAfterTests();
