import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest, poisonedF32 } from "../support/gpu.ts";
import { encodeEmbedding } from "../../src/kernels/embedding.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";

const VOCAB = 37;

async function lookup(
  ctx: GpuContext,
  table: Float32Array,
  tokens: number[],
  dim: number,
  withError: boolean,
): Promise<{ out: Float32Array; error?: number }> {
  const rows = tokens.length;
  const gt = ctx.upload("table", "scratch", table);
  const tok = ctx.upload("tokens", "scratch", new Uint32Array(tokens));
  const out = await poisonedF32(ctx, "out", rows * dim);
  const error = withError ? ctx.upload("error", "scratch", new Uint32Array([0])) : undefined;
  const batch = ctx.batch();
  await encodeEmbedding(ctx, batch, { table: gt, tokens: tok, out, rows, dim, error });
  batch.submit();
  const result = {
    out: await ctx.readF32(out),
    error: error ? (await ctx.readU32(error))[0] : undefined,
  };
  for (const b of [gt, tok, out, error]) b?.destroy();
  return result;
}

function expected(table: Float32Array, tokens: number[], dim: number): Float32Array {
  const out = new Float32Array(tokens.length * dim);
  tokens.forEach((t, r) => {
    if (t < VOCAB) out.set(table.subarray(t * dim, (t + 1) * dim), r * dim);
  });
  return out;
}

gpuTest("embedding copies the token's row for odd rows and dims", async (ctx) => {
  const rng = new Rng(41);
  for (const dim of [20, 80, 216]) {
    const table = rng.normals(VOCAB * dim);
    for (const rows of [1, 7, 33]) {
      const tokens = Array.from({ length: rows }, () => rng.int(VOCAB));
      tokens[0] = VOCAB - 1; // the last row of the table
      for (const withError of [false, true]) {
        const { out, error } = await lookup(ctx, table, tokens, dim, withError);
        assert.deepEqual(
          Array.from(out),
          Array.from(expected(table, tokens, dim)),
          `dim=${dim} rows=${rows}`,
        );
        if (withError) assert.equal(error, 0);
      }
    }
  }
});

gpuTest("embedding: out-of-range ids give zero rows and set the error flag", async (ctx) => {
  const rng = new Rng(42);
  const dim = 20;
  const table = rng.normals(VOCAB * dim);
  const tokens = [3, VOCAB, 5, 0xffffffff, VOCAB + 1000, 0, 36];
  for (const withError of [false, true]) {
    const { out, error } = await lookup(ctx, table, tokens, dim, withError);
    assert.deepEqual(Array.from(out), Array.from(expected(table, tokens, dim)));
    if (withError) assert.equal(error, 1);
  }
});

gpuTest("embedding with an explicit vocab bounds a larger table binding", async (ctx) => {
  const rng = new Rng(43);
  const dim = 80;
  const table = rng.normals((VOCAB + 3) * dim);
  const gt = ctx.upload("table", "scratch", table);
  const tok = ctx.upload("tokens", "scratch", new Uint32Array([1, VOCAB + 1, VOCAB - 1]));
  const out = await poisonedF32(ctx, "out", 3 * dim);
  const error = ctx.upload("error", "scratch", new Uint32Array([0]));
  const batch = ctx.batch();
  await encodeEmbedding(ctx, batch, {
    table: gt,
    tokens: tok,
    out,
    rows: 3,
    dim,
    vocab: VOCAB,
    error,
  });
  batch.submit();
  assert.deepEqual(
    Array.from(await ctx.readF32(out)),
    Array.from(expected(table, [1, VOCAB + 1, VOCAB - 1], dim)),
  );
  assert.equal((await ctx.readU32(error))[0], 1);
  for (const b of [gt, tok, out, error]) b.destroy();
});

closeGpuAfterTests();
