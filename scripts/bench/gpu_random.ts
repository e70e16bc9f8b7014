/**
 * Random weights made on the GPU, for benchmarks at real model sizes (a 7B-shaped model is
 * 13 GB in f32: neither a file nor host memory should hold it). Values come from a hash kernel
 * (shaders/bench_random.wgsl); a 4-bit weight is made by filling f32 chunks on the GPU and
 * quantizing them with the quantize kernel's own pipelines (shaders/quantize_4bit.wgsl, the
 * dispatches src/kernels/quantize_4bit.ts records), writing packed codes and absmax straight into
 * the weight's buffers. Only the absmax comes to the host, for the double-quant offset (a float64
 * mean, as src/quant/double_quant.ts computes it), so the result is the bitsandbytes NF4 + double
 * quant of those f32 values, byte for byte.
 */
import {
  type Binding,
  type DispatchBatch,
  type GpuBuffer,
  type GpuContext,
  grid,
} from "../../src/gpu/context.ts";
import type { MemoryCategory } from "../../src/gpu/memory.ts";
import type { GpuQuantWeight } from "../../src/kernels/quant_weight.ts";
import { NF4_THRESHOLDS, quantMapFor, signedDynamicMap } from "../../src/quant/codes.ts";
import { invalidArgument } from "../../src/util/errors.ts";
import { f32Bits } from "../../src/io/dtype.ts";

const WG = 64; // quantize_4bit.wgsl's workgroup size
const NESTED_BLOCKSIZE = 256;
const BLOCKSIZE = 64;
/** Elements per f32 chunk when the caller does not keep the whole f32 weight (64 MiB). */
const DEFAULT_CHUNK = 1 << 24;

export interface RandomFill {
  seed: number;
  /** Values are center + scale * u, u uniform in [-1, 1). */
  center: number;
  scale: number;
  /** Global index of the binding's first element (default 0): chunks of one tensor. */
  base?: number;
  /** Elements to write (default: the whole binding). */
  count?: number;
}

/** Records a fill of `target` with seeded uniform values. */
export async function encodeRandomF32(
  ctx: GpuContext,
  batch: DispatchBatch,
  target: Binding,
  fill: RandomFill,
): Promise<void> {
  const count = fill.count ?? Math.floor(target.size / 4);
  if (!Number.isInteger(count) || count <= 0 || count * 4 > target.size) {
    throw invalidArgument(`random fill: count ${count} does not fit the target buffer`);
  }
  const base = fill.base ?? 0;
  if (!Number.isInteger(base) || base < 0 || base + count > 2 ** 32) {
    throw invalidArgument(`random fill: base ${base} + count ${count} exceeds 2^32 elements`);
  }
  const [gx, gy] = grid(Math.ceil(count / 256), ctx.limits.maxComputeWorkgroupsPerDimension);
  const params = new Uint32Array(8);
  params.set([count, fill.seed >>> 0, gx, base]);
  new Float32Array(params.buffer).set([fill.center, fill.scale], 4);
  const pipeline = await ctx.pipeline("bench_random.wgsl");
  batch.dispatch(pipeline, [target, ctx.uniform(params)], [gx, gy]);
}

/** A new f32 buffer of `count` seeded uniform values, filled in chunks of one binding each. */
export async function randomF32Buffer(
  ctx: GpuContext,
  label: string,
  category: MemoryCategory,
  count: number,
  fill: Omit<RandomFill, "base" | "count">,
): Promise<GpuBuffer> {
  const buf = ctx.createBuffer({ label, category, size: count * 4 });
  try {
    const chunk = chunkElements(ctx, 1, DEFAULT_CHUNK * 4);
    const batch = ctx.batch("random fill");
    for (let start = 0; start < count; start += chunk) {
      const n = Math.min(chunk, count - start);
      await encodeRandomF32(ctx, batch, { buffer: buf, offset: start * 4, size: n * 4 }, {
        ...fill,
        base: start,
        count: n,
      });
    }
    batch.submit();
    return buf;
  } catch (e) {
    buf.destroy();
    throw e;
  }
}

/**
 * Elements per chunk: a multiple of `granule` whose f32 bytes fit one binding and whose offsets
 * into every output (f32, absmax, packed) are multiples of the storage offset alignment.
 */
function chunkElements(ctx: GpuContext, granule: number, maxBytes: number): number {
  const align = ctx.limits.minStorageBufferOffsetAlignment;
  // f32 offsets 4*start and absmax offsets 4*start/granule stay aligned.
  const step = granule * Math.max(1, align / 4);
  const limit = Math.min(
    maxBytes,
    ctx.limits.maxStorageBufferBindingSize,
    ctx.limits.maxBufferSize,
  );
  return Math.max(step, Math.floor(limit / 4 / step) * step);
}

export interface RandomQuantWeightOptions {
  label: string;
  out: number;
  in: number;
  seed: number;
  /** Uniform in [-scale, scale); default 1/sqrt(in), the usual initialisation scale. */
  scale?: number;
  /** Keep the f32 values (for a dense baseline of the same weight); default false. */
  keepF32?: boolean;
  /** Elements per chunk (rounded to the alignment granule); tests make it small. */
  maxChunkElements?: number;
}

export interface RandomQuantWeight {
  weight: GpuQuantWeight;
  /** The f32 values that were quantized [out, in], when keepF32 was asked for. */
  f32?: GpuBuffer;
}

/** A random W [out, in] in NF4 + double quant (blocksize 64), made and quantized on the GPU. */
export async function randomQuantWeightGpu(
  ctx: GpuContext,
  o: RandomQuantWeightOptions,
): Promise<RandomQuantWeight> {
  if (![o.out, o.in].every((d) => Number.isInteger(d) && d > 0)) {
    throw invalidArgument(`${o.label}: shape [${o.out}, ${o.in}] is not two positive integers`);
  }
  const n = o.out * o.in;
  if (n >= 2 ** 32) throw invalidArgument(`${o.label}: ${n} elements exceed 2^32`);
  const blocks = Math.ceil(n / BLOCKSIZE);
  const nested = Math.ceil(blocks / NESTED_BLOCKSIZE);
  const scale = o.scale ?? 1 / Math.sqrt(o.in);

  const temps: GpuBuffer[] = [];
  const temp = (label: string, size: number) => {
    const b = ctx.createBuffer({ label: `${o.label}.${label}`, category: "scratch", size });
    temps.push(b);
    return b;
  };
  const kept: GpuBuffer[] = [];
  const keep = (label: string, size: number, category: MemoryCategory = "base_weights") => {
    const b = ctx.createBuffer({ label: `${o.label}.${label}`, category, size });
    kept.push(b);
    return b;
  };
  try {
    const chunk = Math.min(
      chunkElements(ctx, BLOCKSIZE, (o.maxChunkElements ?? DEFAULT_CHUNK) * 4),
      Math.ceil(n / BLOCKSIZE) * BLOCKSIZE,
    );
    const packed = keep("packed", Math.ceil(n / 8) * 4);
    const codes = keep("absmax_codes", nested * NESTED_BLOCKSIZE);
    const nestedAbsmax = keep("nested_absmax", nested * 4);
    const f32 = o.keepF32 ? keep("f32", n * 4, "scratch") : undefined;
    const x = f32 ?? temp("chunk", chunk * 4);
    const absmax = temp("absmax", blocks * 4);
    const scales = temp("scales", (chunk / BLOCKSIZE) * 4);
    const thresholds = ctx.upload(`${o.label}.thresholds`, "scratch", NF4_THRESHOLDS);
    temps.push(thresholds);

    const params = { BLOCKSIZE, FP4: "false" };
    const [scalesPipe, codesPipe] = await Promise.all([
      ctx.pipeline("quantize_4bit.wgsl", params, "block_scales"),
      ctx.pipeline("quantize_4bit.wgsl", params, "codes"),
    ]);
    const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
    const batch = ctx.batch(`${o.label} random quantize`);
    for (let start = 0; start < n; start += chunk) {
      const len = Math.min(chunk, n - start);
      const nb = Math.ceil(len / BLOCKSIZE);
      const words = Math.ceil(len / 8);
      const xs: Binding = f32
        ? { buffer: f32, offset: start * 4, size: len * 4 }
        : { buffer: x, offset: 0, size: len * 4 };
      await encodeRandomF32(ctx, batch, xs, { seed: o.seed, center: 0, scale, base: start });
      const [bx, by] = grid(Math.ceil(nb / WG), maxDim);
      batch.dispatch(scalesPipe, [
        ctx.uniform(new Uint32Array([len, nb, bx, 0])),
        xs,
        { buffer: scales, offset: 0, size: nb * 4 },
        { buffer: absmax, offset: (start / BLOCKSIZE) * 4, size: nb * 4 },
      ], [bx, by]);
      const [cx, cy] = grid(Math.ceil(words / WG), maxDim);
      batch.dispatch(codesPipe, [
        ctx.uniform(new Uint32Array([len, words, cx, 0])),
        xs,
        { buffer: scales, offset: 0, size: nb * 4 },
        thresholds,
        { buffer: packed, offset: start / 2, size: words * 4 },
      ], [cx, cy]);
    }
    batch.submit();

    // Double quantization: the offset on the host, exactly as double_quant.ts (a float64 sum in
    // index order, one rounding), then nested absmax and 8-bit codes on the GPU.
    const host = await ctx.readF32(absmax, 0, blocks);
    let sum = 0;
    for (let i = 0; i < blocks; i++) sum += host[i];
    const offset = Math.fround(sum / blocks);
    const map = signedDynamicMap();
    const mapAndMids = new Float32Array(512);
    mapAndMids.set(map);
    for (let i = 0; i + 1 < 256; i++) mapAndMids[256 + i] = Math.fround(map[i] + map[i + 1]) * 0.5;
    const mapBuf = ctx.upload(`${o.label}.dq_map`, "scratch", mapAndMids);
    temps.push(mapBuf);
    const dqPipe = await ctx.pipeline("quantize_4bit.wgsl", params, "double_quant");
    const [gx, gy] = grid(Math.ceil(nested / WG), maxDim);
    const offsetBits = f32Bits(offset);
    const dq = ctx.batch(`${o.label} double quant`);
    dq.dispatch(dqPipe, [
      ctx.uniform(new Uint32Array([blocks, nested, gx, offsetBits])),
      absmax,
      nestedAbsmax,
      codes,
      mapBuf,
    ], [gx, gy]);
    dq.submit();
    await ctx.sync();

    const owned = [packed, codes, nestedAbsmax];
    const weight: GpuQuantWeight = {
      label: o.label,
      quantType: "nf4",
      blocksize: BLOCKSIZE,
      outFeatures: o.out,
      inFeatures: o.in,
      doubleQuant: true,
      packed,
      absmax: codes,
      nestedAbsmax,
      bindings: [packed, codes, nestedAbsmax],
      quantMap: Float32Array.from(quantMapFor("nf4")),
      nestedMap: map,
      offset,
      destroy() {
        for (const b of owned) b.destroy();
      },
    };
    return { weight, f32 };
  } catch (e) {
    for (const b of kept) b.destroy();
    throw e;
  } finally {
    for (const b of temps) b.destroy();
  }
}
