/**
 * Embeddings and lm_head as the loader puts them on the GPU: bf16 checkpoints bit for bit, f16
 * checkpoints kept in f16 (bf16 would drop 3 mantissa bits), f32 rounded once to bf16
 * (checked against float64 rounding), tied embeddings sharing one table, and tables split into
 * row chunks under a forced 4 KiB binding limit.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { GpuContext } from "../../src/gpu/context.ts";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";
import { loadBaseModel } from "../../src/model/load.ts";
import type { RowChunkedTable } from "../../src/kernels/row_chunks.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { roundBf16 } from "../reference/float16_f64.ts";

/** The table's 16-bit patterns in row order, read back from its chunks. */
async function tableBits(ctx: GpuContext, t: RowChunkedTable): Promise<Uint16Array> {
  const out = new Uint16Array(t.rows * t.cols);
  for (const c of t.chunks) {
    const bits = new Uint16Array(await ctx.read(c.buffer), 0, c.rows * t.cols);
    out.set(bits, c.row0 * t.cols);
  }
  return out;
}

const bf16Value = (b: number) => new Float32Array(new Uint32Array([b << 16]).buffer)[0];

for (const dtype of ["BF16", "F16", "F32"] as const) {
  for (const tied of [false, true]) {
    Deno.test({
      name: `loaded ${dtype} embeddings${tied ? " (tied)" : " and lm_head"} in 16-bit row chunks`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        const dir = await Deno.makeTempDir();
        const ctx = await GpuContext.open({ log: () => {}, maxBindingBytes: 4096 });
        try {
          const model = join(dir, "m");
          await makeTinyLlama(model, {
            dtype,
            tieWordEmbeddings: tied,
            layers: 1,
            merges: 40,
            trainRecords: 1,
            evalRecords: 1,
          });
          const base = await loadBaseModel(ctx, model);
          try {
            const { embed, lmHead, cfg } = base;
            // 80 columns = 160 bytes a row: 25 rows a chunk under 4 KiB.
            assert.equal(embed.chunks.length, Math.ceil(cfg.vocab / 25));
            assert.ok(embed.chunks.every((c) => c.buffer.size <= 4096));
            assert.equal(embed.dtype, dtype === "F16" ? "f16" : "bf16");
            assert.equal(lmHead === embed, tied);
            const ckpt = await HfCheckpoint.open(model);
            try {
              const names = tied
                ? [["model.embed_tokens.weight", embed]] as const
                : [["model.embed_tokens.weight", embed], ["lm_head.weight", lmHead]] as const;
              for (const [name, table] of names) {
                const got = await tableBits(ctx, table);
                const bytes = await ckpt.readBytes(name);
                if (dtype !== "F32") {
                  assert.deepEqual(
                    got,
                    new Uint16Array(bytes.buffer, bytes.byteOffset, got.length),
                  );
                } else {
                  const values = new Float32Array(bytes.buffer, bytes.byteOffset, got.length);
                  got.forEach((b, i) => assert.equal(bf16Value(b), roundBf16(values[i]), name));
                }
              }
            } finally {
              ckpt.close();
            }
          } finally {
            base.destroy();
          }
        } finally {
          ctx.destroy();
          await Deno.remove(dir, { recursive: true });
        }
      },
    });
  }
}
