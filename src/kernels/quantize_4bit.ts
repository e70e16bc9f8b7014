/**
 * GPU quantization of an f32 weight to bitsandbytes 4-bit (shaders/quantize_4bit.wgsl), byte
 * for byte what src/quant/ computes on the CPU: absmax per block, codes with the CUDA float32
 * thresholds and tie rule, nibble packing, and optionally double quantization of the absmax.
 *
 * The weight is processed in chunks of whole blocks that fit one storage binding. The double
 * quantization offset (mean absmax) is computed on the host exactly as double_quant.ts does (a
 * float64 sum in index order, rounded once), since a GPU cannot reproduce that sum; the 8-bit
 * codes are computed on the GPU.
 *
 * The decision tables come from src/quant/codes.ts (a leaf module of constants) so that the CPU
 * reference and this kernel compare against the very same float32 values.
 */
import { type GpuBuffer, type GpuContext, grid } from "../gpu/context.ts";
import { uniformLayout } from "../gpu/uniform_layout.ts";
import { invalidArgument } from "../util/errors.ts";
import { f32Bits } from "../io/dtype.ts";
import { FP4_THRESHOLDS, NF4_THRESHOLDS, signedDynamicMap } from "../io/quant_codes.ts";

const SHADER = "quantize_4bit.wgsl";
const WG = 64;
/** shaders/quantize_4bit.wgsl's Params (block_scales, codes, double_quant). */
const QUANTIZE_PARAMS = uniformLayout("Params", {
  // Elements (block_scales, codes) or absmax values (double_quant) in this dispatch.
  n: "u32",
  // Invocations needed: blocks, packed words, or nested blocks.
  count: "u32",
  groups_x: "u32",
  // double_quant: the f32 offset (mean absmax), as bits.
  offset_bits: "u32",
});
const NESTED_BLOCKSIZE = 256;

export interface Quantize4bitOptions {
  quantType: "nf4" | "fp4";
  blocksize: number;
  doubleQuant: boolean;
  /** Elements per chunk (rounded down to whole blocks); default: what one binding holds. */
  maxChunkElements?: number;
}

export interface Quantize4bitResult {
  /** ceil(n/2) bytes, element 2j in the high nibble of byte j. */
  packed: Uint8Array;
  /** Without double quant: float32 absmax per block. */
  absmax?: Float32Array;
  dq?: {
    codes: Uint8Array;
    nestedAbsmax: Float32Array;
    offset: number;
    nestedBlocksize: 256;
    nestedMap: Float32Array;
  };
}

/** Quantizes a row-major weight of `shape` ([out, in]) on the GPU. */
export async function quantize4bitGpu(
  ctx: GpuContext,
  w: Float32Array,
  shape: readonly number[],
  opts: Quantize4bitOptions,
): Promise<Quantize4bitResult> {
  const { quantType, blocksize } = opts;
  if (quantType !== "nf4" && quantType !== "fp4") {
    throw invalidArgument(`quantType: "${quantType}" is not a 4-bit type; use "nf4" or "fp4"`);
  }
  if (
    !Number.isInteger(blocksize) || blocksize < 32 || blocksize > 4096 ||
    blocksize & (blocksize - 1)
  ) {
    throw invalidArgument(`blocksize: ${blocksize} is not a power of two in 32..4096`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  if (shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw invalidArgument(`shape: [${shape.join(", ")}] is not a list of positive sizes`);
  }
  if (w.length !== n) {
    throw invalidArgument(`weight: ${w.length} values do not match shape [${shape.join(", ")}]`);
  }
  if (n >= 2 ** 32) throw invalidArgument(`weight: ${n} elements exceed 2^32`);
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(w[i])) {
      throw invalidArgument(`weight: element ${i} is ${w[i]}; only finite values can be quantized`);
    }
  }

  const fp4 = quantType === "fp4";
  const params = { BLOCKSIZE: blocksize, FP4: String(fp4) };
  const [scalesPipe, codesPipe] = await Promise.all([
    ctx.pipeline(SHADER, params, "block_scales", QUANTIZE_PARAMS),
    ctx.pipeline(SHADER, params, "codes", QUANTIZE_PARAMS),
  ]);

  const limitBytes = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  const maxChunk = Math.min(opts.maxChunkElements ?? Infinity, Math.floor(limitBytes / 4));
  const chunk = Math.max(blocksize, Math.floor(maxChunk / blocksize) * blocksize);
  const chunkLen = Math.min(chunk, Math.ceil(n / blocksize) * blocksize);
  const nblocks = Math.ceil(n / blocksize);
  const packed = new Uint8Array(Math.ceil(n / 2));
  const absmax = new Float32Array(nblocks);

  const owned: GpuBuffer[] = [];
  const scratch = (label: string, size: number) => {
    const b = ctx.createBuffer({ label: `quantize_4bit.${label}`, category: "scratch", size });
    owned.push(b);
    return b;
  };
  try {
    const table = fp4 ? FP4_THRESHOLDS : NF4_THRESHOLDS;
    const thresholds = ctx.upload("quantize_4bit.thresholds", "scratch", table);
    owned.push(thresholds);
    const xBuf = scratch("x", chunkLen * 4);
    const absmaxBuf = scratch("absmax", (chunkLen / blocksize) * 4);
    const scaleBuf = scratch("scale", (chunkLen / blocksize) * 4);
    const packedBuf = scratch("packed", (chunkLen / 8) * 4);

    for (let start = 0; start < n; start += chunkLen) {
      const len = Math.min(chunkLen, n - start);
      const blocks = Math.ceil(len / blocksize);
      const words = Math.ceil(len / 8);
      ctx.write(xBuf, w.subarray(start, start + len));
      const batch = ctx.batch("quantize_4bit");
      const [bx, by] = grid(Math.ceil(blocks / WG));
      batch.dispatch(
        scalesPipe,
        [
          ctx.uniform(
            QUANTIZE_PARAMS.pack({ n: len, count: blocks, groups_x: bx, offset_bits: 0 }),
          ),
          xBuf,
          scaleBuf,
          absmaxBuf,
        ],
        [bx, by],
      );
      const [cx, cy] = grid(Math.ceil(words / WG));
      batch.dispatch(
        codesPipe,
        [
          ctx.uniform(QUANTIZE_PARAMS.pack({ n: len, count: words, groups_x: cx, offset_bits: 0 })),
          xBuf,
          scaleBuf,
          thresholds,
          packedBuf,
        ],
        [cx, cy],
      );
      batch.submit();
      // start is a multiple of blocksize, so of 2: whole bytes, whole blocks.
      packed.set(new Uint8Array(await ctx.read(packedBuf, 0, Math.ceil(len / 2))), start / 2);
      absmax.set(await ctx.readF32(absmaxBuf, 0, blocks), start / blocksize);
    }
    if (!opts.doubleQuant) return { packed, absmax };
    return { packed, dq: await doubleQuantGpu(ctx, absmax, scratch) };
  } finally {
    for (const b of owned) b.destroy();
  }
}

/** Double quantization of the absmax: offset on the host, nested absmax and codes on the GPU. */
async function doubleQuantGpu(
  ctx: GpuContext,
  absmax: Float32Array,
  scratch: (label: string, size: number) => GpuBuffer,
): Promise<NonNullable<Quantize4bitResult["dq"]>> {
  const n = absmax.length;
  // As double_quant.ts: float64 sum in index order, one rounding of the mean.
  let sum = 0;
  for (let i = 0; i < n; i++) sum += absmax[i];
  const offset = Math.fround(sum / n);

  const map = signedDynamicMap();
  const mapAndMids = new Float32Array(512);
  mapAndMids.set(map);
  for (let i = 0; i + 1 < 256; i++) {
    mapAndMids[256 + i] = Math.fround(map[i] + map[i + 1]) * 0.5;
  }
  const nested = Math.ceil(n / NESTED_BLOCKSIZE);
  const absmaxBuf = scratch("dq_absmax", n * 4);
  ctx.write(absmaxBuf, absmax);
  const nestedBuf = scratch("dq_nested", nested * 4);
  const codesBuf = scratch("dq_codes", nested * NESTED_BLOCKSIZE);
  const mapBuf = scratch("dq_map", mapAndMids.byteLength);
  ctx.write(mapBuf, mapAndMids);
  const pipe = await ctx.pipeline(
    SHADER,
    { BLOCKSIZE: 64, FP4: "false" },
    "double_quant",
    QUANTIZE_PARAMS,
  );
  const [gx, gy] = grid(Math.ceil(nested / WG));
  const offsetBits = f32Bits(offset);
  const batch = ctx.batch("double_quant");
  batch.dispatch(
    pipe,
    [
      ctx.uniform(
        QUANTIZE_PARAMS.pack({ n, count: nested, groups_x: gx, offset_bits: offsetBits }),
      ),
      absmaxBuf,
      nestedBuf,
      codesBuf,
      mapBuf,
    ],
    [gx, gy],
  );
  batch.submit();
  const codes = new Uint8Array(await ctx.read(codesBuf, 0, n));
  const nestedAbsmax = await ctx.readF32(nestedBuf, 0, nested);
  return { codes, nestedAbsmax, offset, nestedBlocksize: 256, nestedMap: map };
}
