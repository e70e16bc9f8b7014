/**
 * Embedding gather from 16-bit tables (bf16, f16) in row chunks against the independently
 * rounded table rows: odd rows and dims, a table split into 3+ chunks, out-of-range ids.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import { encodeEmbedding } from "../../src/kernels/embedding.ts";
import { type Table16Dtype, uploadTable16 } from "../../src/kernels/row_chunks.ts";
import { f32ArrayToBf16, f32ArrayToF16 } from "../../src/io/dtype.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { roundBf16Array, roundF16Array } from "../reference/float16_f64.ts";

const VOCAB = 37;

interface Table {
  dtype: Table16Dtype;
  dim: number;
  /** The stored values, rounded in float64 arithmetic (tests/reference/float16_f64.ts). */
  values: Float64Array;
  bits: Uint16Array;
}

function table(rng: Rng, dim: number, dtype: Table16Dtype): Table {
  const raw = rng.normals(VOCAB * dim);
  return dtype === "bf16"
    ? { dtype, dim, values: roundBf16Array(raw), bits: f32ArrayToBf16(raw) }
    : { dtype, dim, values: roundF16Array(raw), bits: f32ArrayToF16(raw) };
}

async function lookup(
  ctx: GpuContext,
  t: Table,
  tokens: number[],
  withError: boolean,
  maxBindingBytes?: number,
): Promise<{ out: Float32Array; error?: number; chunks: number }> {
  const rows = tokens.length;
  const gt = uploadTable16(ctx, {
    label: "table",
    category: "scratch",
    dtype: t.dtype,
    rows: VOCAB,
    cols: t.dim,
    bits: t.bits,
    maxBindingBytes,
  });
  const tok = ctx.upload("tokens", "scratch", new Uint32Array(tokens));
  const out = await poisonedF32(ctx, "out", rows * t.dim);
  const error = withError ? ctx.upload("error", "scratch", new Uint32Array([0])) : undefined;
  const batch = ctx.batch();
  await encodeEmbedding(ctx, batch, { table: gt, tokens: tok, out, rows, dim: t.dim, error });
  batch.submit();
  const result = {
    out: await ctx.readF32(out),
    error: error ? (await ctx.readU32(error))[0] : undefined,
    chunks: gt.chunks.length,
  };
  gt.destroy();
  for (const b of [tok, out, error]) b?.destroy();
  return result;
}

function expected(t: Table, tokens: number[]): number[] {
  const out = new Array<number>(tokens.length * t.dim).fill(0);
  tokens.forEach((tok, r) => {
    if (tok >= VOCAB) return;
    for (let c = 0; c < t.dim; c++) out[r * t.dim + c] = t.values[tok * t.dim + c];
  });
  return out;
}

gpuTest("embedding copies the token's bf16 row for odd rows and dims", async (ctx) => {
  const rng = new Rng(41);
  for (const dim of [20, 81, 215]) {
    const t = table(rng, dim, "bf16");
    for (const rows of [1, 7, 33]) {
      const tokens = Array.from({ length: rows }, () => rng.int(VOCAB));
      tokens[0] = VOCAB - 1; // the last row of the table
      for (const withError of [false, true]) {
        const { out, error } = await lookup(ctx, t, tokens, withError);
        assert.deepEqual(Array.from(out), expected(t, tokens), `dim=${dim} rows=${rows}`);
        if (withError) assert.equal(error, 0);
      }
    }
  }
});

gpuTest("embedding from a table split into row chunks, bf16 and f16", async (ctx) => {
  const rng = new Rng(44);
  for (const dtype of ["bf16", "f16"] as const) {
    const t = table(rng, 23, dtype);
    // 46 bytes a row, 10 rows (460 bytes) within 464: chunks of 10, 10, 10, 7 rows.
    const tokens = [0, 9, 10, 19, 20, 29, 30, 36, 5, 15, 25, 35, 35];
    const { out, error, chunks } = await lookup(ctx, t, tokens, true, 464);
    assert.equal(chunks, 4);
    assert.deepEqual(Array.from(out), expected(t, tokens), dtype);
    assert.equal(error, 0);
  }
});

gpuTest("embedding: out-of-range ids give zero rows and set the error flag", async (ctx) => {
  const rng = new Rng(42);
  const t = table(rng, 20, "bf16");
  const tokens = [3, VOCAB, 5, 0xffffffff, VOCAB + 1000, 0, 36];
  for (const maxBindingBytes of [undefined, 400]) {
    for (const withError of [false, true]) {
      const { out, error, chunks } = await lookup(ctx, t, tokens, withError, maxBindingBytes);
      assert.equal(chunks, maxBindingBytes ? 4 : 1);
      assert.deepEqual(Array.from(out), expected(t, tokens));
      if (withError) assert.equal(error, 1);
    }
  }
});

gpuTest("embedding refuses a table whose width is not dim", async (ctx) => {
  const t = table(new Rng(43), 20, "bf16");
  const gt = uploadTable16(ctx, {
    label: "table",
    category: "scratch",
    dtype: "bf16",
    rows: VOCAB,
    cols: 20,
    bits: t.bits,
  });
  const b = ctx.createBuffer({ label: "b", category: "scratch", size: 4096 });
  await assert.rejects(
    encodeEmbedding(ctx, ctx.batch(), { table: gt, tokens: b, out: b, rows: 3, dim: 21 }),
    /embedding: table: expected 21 columns \(dim\), got 20 columns/,
  );
  gt.destroy();
  b.destroy();
});

closeGpuAfterTests();
