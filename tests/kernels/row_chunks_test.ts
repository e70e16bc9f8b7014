/**
 * 16-bit tables in row chunks: chunk sizes checked by hand (Llama 3's lm_head among them), and
 * uploads read back bit for bit, split into several chunks by a forced binding limit.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import {
  tableChunkBytes,
  tableChunkRows,
  uploadTable16,
  uploadTableFromF32,
} from "../../src/kernels/row_chunks.ts";
import { GpuContext, MAX_BINDING_BYTES_ENV } from "../../src/gpu/context.ts";
import { Rng } from "../../src/util/random.ts";
import { roundBf16 } from "../reference/float16_f64.ts";

Deno.test("hand-checked: row chunks of a 16-bit table", () => {
  // 23 columns are 46 bytes a row; 4,608 bytes hold 100 rows (4,600 bytes): 100, 100, 100, 1.
  assert.deepEqual(tableChunkRows(301, 23, 4608), [100, 100, 100, 1]);
  // The cap counts in 16-byte steps: 4,623 bytes is still 4,608.
  assert.deepEqual(tableChunkRows(301, 23, 4623), [100, 100, 100, 1]);
  assert.deepEqual(tableChunkRows(301, 23, 1 << 30), [301]);
  // Llama 3's lm_head, 128,256 x 4,096 in bf16: 1,050,673,152 bytes (half of f32's
  // 2,101,346,304). lavapipe binds 128 MiB = 134,217,728 bytes = 16,384 rows of 8,192 bytes:
  // 7 full chunks and 128,256 - 7 x 16,384 = 13,568 rows.
  const llama3 = tableChunkRows(128_256, 4096, 134_217_728);
  assert.deepEqual(llama3, [...Array(7).fill(16_384), 13_568]);
  assert.equal(llama3.reduce((s, r) => s + tableChunkBytes(r, 4096), 0), 1_050_673_152);
  // An odd element count pads to a whole word: 3 x 5 = 15 halves -> 32 bytes.
  assert.equal(tableChunkBytes(3, 5), 32);
  assert.throws(() => tableChunkRows(10, 4096, 8000), /row of 4096 16-bit values .* exceeds/);
});

gpuTest("16-bit table uploads in 4 row chunks read back bit for bit", async (ctx) => {
  const [rows, cols] = [301, 23];
  const bits = Uint16Array.from({ length: rows * cols }, (_, i) => (i * 40503 + 7) & 0xffff);
  const table = uploadTable16(ctx, {
    label: "t",
    category: "scratch",
    dtype: "f16",
    rows,
    cols,
    bits,
    maxBindingBytes: 4608,
  });
  assert.deepEqual(table.chunks.map((c) => [c.row0, c.rows]), [[0, 100], [100, 100], [
    200,
    100,
  ], [300, 1]]);
  for (const c of table.chunks) {
    const got = new Uint16Array(await ctx.read(c.buffer), 0, c.rows * cols);
    assert.deepEqual(got, bits.subarray(c.row0 * cols, (c.row0 + c.rows) * cols));
    assert.ok(c.buffer.size <= 4608);
  }
  table.destroy();
});

gpuTest("f32 values upload rounded once to bf16 (nearest even)", async (ctx) => {
  const [rows, cols] = [7, 9];
  const values = new Rng(3).normals(rows * cols, 2);
  values[0] = 1 + 2 ** -8; // a tie: rounds to even (1)
  values[1] = 1 + 3 * 2 ** -8; // a tie: rounds up to 1 + 2^-6
  const table = uploadTableFromF32(ctx, {
    label: "t",
    category: "scratch",
    rows,
    cols,
    values,
    maxBindingBytes: 64, // 3 rows of 18 bytes a chunk
  });
  assert.equal(table.chunks.length, 3);
  for (const c of table.chunks) {
    const got = new Uint16Array(await ctx.read(c.buffer), 0, c.rows * cols);
    got.forEach((b, i) => {
      const want = roundBf16(values[c.row0 * cols + i]);
      const value = new Float32Array(new Uint32Array([b << 16]).buffer)[0];
      assert.equal(value, want, `element ${c.row0 * cols + i}`);
    });
  }
  table.destroy();
});

Deno.test({
  name: "maxBindingBytes: the adapter's limits, capped by the option or QLORAD_MAX_BINDING_BYTES",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const log = () => {};
    const saved = Deno.env.get(MAX_BINDING_BYTES_ENV);
    Deno.env.delete(MAX_BINDING_BYTES_ENV);
    try {
      const plain = await GpuContext.open({ log });
      const l = plain.limits;
      const limit = Math.min(l.maxStorageBufferBindingSize, l.maxBufferSize);
      assert.equal(plain.maxBindingBytes, Math.floor(limit / 16) * 16);
      plain.destroy();
      const capped = await GpuContext.open({ log, maxBindingBytes: 1000 });
      assert.equal(capped.maxBindingBytes, 992); // whole 16-byte steps
      capped.destroy();
      Deno.env.set(MAX_BINDING_BYTES_ENV, "5000");
      const fromEnv = await GpuContext.open({ log });
      assert.equal(fromEnv.maxBindingBytes, 4992);
      fromEnv.destroy();
      Deno.env.set(MAX_BINDING_BYTES_ENV, "lots");
      await assert.rejects(GpuContext.open({ log }), /QLORAD_MAX_BINDING_BYTES must be an integer/);
    } finally {
      if (saved === undefined) Deno.env.delete(MAX_BINDING_BYTES_ENV);
      else Deno.env.set(MAX_BINDING_BYTES_ENV, saved);
    }
  },
});

closeGpuAfterTests();
