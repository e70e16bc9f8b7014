/**
 * 16-bit tables on the GPU (the embeddings and lm_head, which QLoRA keeps in 16-bit), split into
 * row chunks: one buffer per chunk, rows kept whole, each within ctx.maxBindingBytes, so a table
 * larger than a binding (Llama 3's 128,256 x 4,096 lm_head is 1 GiB in bf16, lavapipe binds
 * 128 MiB) is still usable whole by the kernels that take the chunks (embedding gather,
 * lm_head + cross-entropy). Elements are packed two per u32, little-endian (element 2i in the
 * low half); the shaders decode them (shaders/table16.wgsl): bf16 by a 16-bit shift, f16 by
 * unpack2x16float, neither needing `shader-f16`.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import type { MemoryCategory } from "../gpu/memory.ts";
import { f32ArrayToBf16 } from "../io/dtype.ts";
import { invalidArgument } from "../util/errors.ts";

/** bf16, or f16 when the checkpoint is f16 (converting it to bf16 would drop 3 mantissa bits). */
export type Table16Dtype = "bf16" | "f16";

export interface TableChunk {
  buffer: GpuBuffer;
  /** First table row held by this chunk. */
  row0: number;
  rows: number;
}

/** A [rows, cols] table of 16-bit floats in row chunks (in row order, covering every row). */
export class RowChunkedTable {
  constructor(
    readonly dtype: Table16Dtype,
    readonly rows: number,
    readonly cols: number,
    readonly chunks: readonly TableChunk[],
  ) {
    let next = 0;
    for (const c of chunks) {
      if (c.row0 !== next || c.rows < 1 || c.buffer.size < tableChunkBytes(c.rows, cols)) {
        throw invalidArgument(`table chunks must cover rows 0..${rows} in order, whole rows each`);
      }
      next += c.rows;
    }
    if (next !== rows) throw invalidArgument(`table chunks cover ${next} rows, not ${rows}`);
  }

  destroy(): void {
    for (const c of this.chunks) c.buffer.destroy();
  }
}

/** Bytes of a chunk of `rows` rows: two bytes an element, padded to whole u32 words. */
export function tableChunkBytes(rows: number, cols: number): number {
  return Math.ceil((rows * cols * 2) / 4) * 4;
}

/**
 * Rows in each chunk when a [rows, cols] 16-bit table is split within `maxBindingBytes`: as many
 * whole rows as fit, the last chunk takes the rest. The memory estimator sizes with this too.
 */
export function tableChunkRows(rows: number, cols: number, maxBindingBytes: number): number[] {
  if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(cols) || cols < 1) {
    throw invalidArgument(`table shape [${rows}, ${cols}] must be positive integers`);
  }
  // Buffers are allocated in 16-byte steps and bound whole, so the cap counts in 16 bytes.
  const cap = Math.floor(maxBindingBytes / 16) * 16;
  const perChunk = Math.floor(cap / (cols * 2));
  if (perChunk < 1) {
    throw invalidArgument(
      `a table row of ${cols} 16-bit values (${cols * 2} bytes) exceeds the binding limit ` +
        `${maxBindingBytes} bytes`,
    );
  }
  const out: number[] = [];
  for (let r = 0; r < rows; r += perChunk) out.push(Math.min(perChunk, rows - r));
  return out;
}

export interface UploadTableArgs {
  label: string;
  category: MemoryCategory;
  dtype: Table16Dtype;
  rows: number;
  cols: number;
  /** The 16-bit patterns, row-major, rows * cols of them. */
  bits: Uint16Array;
  /** Default ctx.maxBindingBytes; tests pass a small one to split small tables. */
  maxBindingBytes?: number;
}

/** Uploads a 16-bit table in row chunks; a failure part way frees what was made. */
export function uploadTable16(ctx: GpuContext, args: UploadTableArgs): RowChunkedTable {
  const { rows, cols, bits } = args;
  if (bits.length !== rows * cols) {
    throw invalidArgument(
      `${args.label}: ${bits.length} values for a [${rows}, ${cols}] table`,
    );
  }
  const counts = tableChunkRows(rows, cols, args.maxBindingBytes ?? ctx.maxBindingBytes);
  const chunks: TableChunk[] = [];
  try {
    let row0 = 0;
    for (const [i, n] of counts.entries()) {
      const label = counts.length === 1 ? args.label : `${args.label}[${i}]`;
      const part = bits.subarray(row0 * cols, (row0 + n) * cols);
      const buffer = ctx.createBuffer({
        label,
        category: args.category,
        size: tableChunkBytes(n, cols),
      });
      chunks.push({ buffer, row0, rows: n });
      ctx.write(buffer, part); // write() pads an odd element count to a whole word
      row0 += n;
    }
    return new RowChunkedTable(args.dtype, rows, cols, chunks);
  } catch (e) {
    for (const c of chunks) c.buffer.destroy();
    throw e;
  }
}

/** Uploads f32 values as a bf16 table, each rounded once to nearest even. */
export function uploadTableFromF32(
  ctx: GpuContext,
  args: Omit<UploadTableArgs, "bits" | "dtype"> & { values: Float32Array },
): RowChunkedTable {
  return uploadTable16(ctx, { ...args, dtype: "bf16", bits: f32ArrayToBf16(args.values) });
}
