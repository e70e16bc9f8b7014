/**
 * Matmuls through a frozen 4-bit weight (shaders/matmul_4bit.wgsl), W dequantized in
 * registers, never materialized:
 *   encodeMatmul4bit:  Y[m, out] (=|+=) X[m, in] . W^T   (forward)
 *   encodeMatmul4bitT: dX[m, in] (=|+=) dY[m, out] . W   (backward to the input)
 * Two variants, chosen per adapter by the kernel ladder, forward and backward apart (or forced
 * with `variant`):
 * - "regblock": register tiles, no barriers, vec4 activation loads, code tables as shader
 *   constants; what llvmpipe runs fast. From m >= WIDE_MIN_M rows it runs the `_wide` kernels
 *   (larger tiles: more arithmetic per load, but rows past m are wasted work, so small m keeps
 *   the narrow tiles). Shapes without whole packed words per row (in % 8 != 0; narrow backward
 *   also out % 4 != 0) take its scalar `_any` kernels.
 * - "tiled": activation and dequantized-W tiles staged in workgroup memory; for real GPUs.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { dequantShaderParams, type GpuQuantWeight, offsetBits } from "./quant_weight.ts";
import { kernelLadder, ProbeBuffers, registerLadderKernel } from "./ladder.ts";

export type Matmul4bitVariant = "regblock" | "tiled";
export const MATMUL_4BIT_VARIANTS: readonly Matmul4bitVariant[] = ["regblock", "tiled"];

const SHADER = "matmul_4bit.wgsl";
const REGBLOCK_WG = 64;
const TILE = 64;
/**
 * The wide kernels' tiles (llvmpipe, measured on the Llama shapes ÷8): forward 32 rows x 16
 * outputs, backward 16 rows x 4 packed words (32 columns); small workgroups so that m = 128 still
 * gives every core several. Forward 32 x 32 runs about as fast but llvmpipe takes ~65 s to
 * compile it (32 x 16: ~16 s, once per machine with Mesa's shader disk cache).
 */
const WIDE = {
  forward: { tm: 32, cols: 16, minM: 32 },
  backward: { tm: 16, cols: 32, minM: 32 },
};
const WIDE_WG = 16;
const WIDE_OC = WIDE.forward.cols;
const WIDE_NW = WIDE.backward.cols / 8;

/**
 * The forward variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts; the
 * backward product is laddered on its own as "matmul_4bit_t").
 */
export function chooseMatmul4bitVariant(ctx: GpuContext): Matmul4bitVariant {
  return kernelLadder.choice(ctx, "matmul_4bit") as Matmul4bitVariant;
}

/**
 * A random double-quantized weight (any codes are valid weights) outside the memory ledger, and
 * activations for a 64-row product, as the ladder's probe of either direction.
 */
function probe4bit(ctx: GpuContext, backward: boolean) {
  const bufs = new ProbeBuffers(ctx);
  const [m, nIn, nOut, blocksize] = [64, 256, 512, 64];
  const blocks = (nIn * nOut) / blocksize;
  const bytes = (n: number, seed: number) => {
    const b = new Uint8Array(n);
    let s = seed;
    for (let i = 0; i < n; i++) b[i] = (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 24;
    return b;
  };
  const packed = bufs.upload("ladder.w4.packed", bytes((nIn * nOut) / 2, 3));
  const absmax = bufs.upload("ladder.w4.absmax", bytes(blocks, 4));
  const nestedAbsmax = bufs.upload(
    "ladder.w4.nested",
    new Float32Array(Math.ceil(blocks / 256)).fill(0.1),
  );
  const code = (n: number) => Float32Array.from({ length: n }, (_, i) => -1 + (2 * i) / (n - 1));
  const w: GpuQuantWeight = {
    label: "ladder.w4",
    quantType: "nf4",
    blocksize,
    outFeatures: nOut,
    inFeatures: nIn,
    doubleQuant: true,
    packed,
    absmax,
    nestedAbsmax,
    bindings: [packed, absmax, nestedAbsmax],
    quantMap: code(16),
    nestedMap: code(256),
    offset: 0.05,
    destroy: () => {},
  };
  const a = bufs.random("ladder.w4.a", m * (backward ? nOut : nIn), 5);
  const b = bufs.empty("ladder.w4.b", m * (backward ? nIn : nOut) * 4);
  return Promise.resolve({
    run: async (batch: DispatchBatch, v: string) => {
      const variant = v as Matmul4bitVariant;
      if (backward) await encodeMatmul4bitT(ctx, batch, { dy: a, w, dx: b, m, variant });
      else await encodeMatmul4bit(ctx, batch, { x: a, w, y: b, m, variant });
    },
    destroy: () => bufs.destroy(),
  });
}

for (const backward of [false, true]) {
  registerLadderKernel({
    name: backward ? "matmul_4bit_t" : "matmul_4bit",
    variants: MATMUL_4BIT_VARIANTS,
    prior: (ctx) => ctx.isSoftware ? "regblock" : "tiled",
    shaders: [SHADER, "dequant_4bit.wgsl"],
    probe: (ctx) => probe4bit(ctx, backward),
  });
}

export interface Matmul4bitArgs {
  /** X [m, in] f32. */
  x: Binding;
  w: GpuQuantWeight;
  /** Y [m, out] f32. */
  y: Binding;
  m: number;
  /** Add into Y instead of overwriting it. */
  accumulate?: boolean;
  /** Force a variant (tests, benchmarks); default the kernel ladder's choice. */
  variant?: Matmul4bitVariant;
}

export interface Matmul4bitTArgs {
  /** dY [m, out] f32. */
  dy: Binding;
  w: GpuQuantWeight;
  /** dX [m, in] f32. */
  dx: Binding;
  m: number;
  accumulate?: boolean;
  variant?: Matmul4bitVariant;
}

/** Y[m, out] (=|+=) X[m, in] . W^T. */
export async function encodeMatmul4bit(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: Matmul4bitArgs,
): Promise<void> {
  const { w, m } = args;
  checkShapes(ctx, "encodeMatmul4bit", w, m, [
    ["x", args.x, m * w.inFeatures],
    ["y", args.y, m * w.outFeatures],
  ]);
  const variant = args.variant ??
    (await kernelLadder.variant(ctx, "matmul_4bit") as Matmul4bitVariant);
  const plan = planDispatch(ctx, variant, {
    entry: "forward",
    m,
    // Regblock: up to 16 rows x 4 outputs per invocation; vec4 rows of X need in % 8 == 0.
    maxTm: 16,
    colsPerInvocation: 4,
    nCols: w.outFeatures,
    vectorized: w.inFeatures % 8 === 0,
    wide: w.inFeatures % 8 === 0,
  });
  await dispatch(ctx, batch, w, plan, args.x, args.y, m, args.accumulate);
}

/** dX[m, in] (=|+=) dY[m, out] . W. */
export async function encodeMatmul4bitT(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: Matmul4bitTArgs,
): Promise<void> {
  const { w, m } = args;
  checkShapes(ctx, "encodeMatmul4bitT", w, m, [
    ["dy", args.dy, m * w.outFeatures],
    ["dx", args.dx, m * w.inFeatures],
  ]);
  const variant = args.variant ??
    (await kernelLadder.variant(ctx, "matmul_4bit_t") as Matmul4bitVariant);
  const plan = planDispatch(ctx, variant, {
    entry: "backward",
    m,
    // Regblock: up to 8 rows x 8 columns (one packed word); vec4 dY needs out % 4 == 0.
    maxTm: 8,
    colsPerInvocation: 8,
    nCols: w.inFeatures,
    vectorized: w.inFeatures % 8 === 0 && w.outFeatures % 4 === 0,
    wide: w.inFeatures % 8 === 0,
  });
  await dispatch(ctx, batch, w, plan, args.dy, args.dx, m, args.accumulate);
}

interface Plan {
  entry: string;
  tm: number;
  workgroups: [number, number];
  /** Workgroups along x of a 1-D grid (unused by the 2-D regblock grids). */
  groupsX: number;
  tiles: number;
  /** Invocations per workgroup. */
  wg: number;
}

function planDispatch(
  ctx: GpuContext,
  variant: Matmul4bitVariant,
  o: {
    entry: "forward" | "backward";
    m: number;
    maxTm: number;
    colsPerInvocation: number;
    nCols: number;
    /** The regblock (narrow) kernels' vec4 loads fit the shape. */
    vectorized: boolean;
    /** The wide kernels' loads fit the shape. */
    wide: boolean;
  },
): Plan {
  const maxDim = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (variant === "tiled") {
    const tiles = Math.ceil(o.nCols / TILE);
    const [gx, gy] = grid(tiles * Math.ceil(o.m / TILE), maxDim);
    return { entry: `${o.entry}_tiled`, tm: 1, workgroups: [gx, gy], groupsX: gx, tiles, wg: 0 };
  }
  const wide = WIDE[o.entry];
  if (o.wide && o.m >= wide.minM) {
    const tiles = Math.ceil(o.nCols / wide.cols);
    const gx = Math.ceil(tiles / WIDE_WG);
    const gy = Math.ceil(o.m / wide.tm);
    if (gx <= maxDim && gy <= maxDim) {
      return {
        entry: `${o.entry}_wide`,
        tm: wide.tm,
        workgroups: [gx, gy],
        groupsX: gx,
        tiles,
        wg: WIDE_WG,
      };
    }
  }
  // Few register-tile heights, so few pipelines: 1, 4, then the largest.
  const tm = o.m >= o.maxTm ? o.maxTm : o.m >= 4 ? 4 : 1;
  const tiles = Math.ceil(o.nCols / o.colsPerInvocation);
  // 2-D grid: x over column tiles, y over row blocks, so a workgroup shares its rows.
  const gx = Math.ceil(tiles / REGBLOCK_WG);
  const gy = Math.ceil(o.m / tm);
  if (o.vectorized && gx <= maxDim && gy <= maxDim) {
    return {
      entry: `${o.entry}_regblock`,
      tm,
      workgroups: [gx, gy],
      groupsX: gx,
      tiles,
      wg: REGBLOCK_WG,
    };
  }
  const anyTm = Math.min(tm, 4);
  const [ax, ay] = grid(Math.ceil((tiles * Math.ceil(o.m / anyTm)) / REGBLOCK_WG), maxDim);
  return {
    entry: `${o.entry}_regblock_any`,
    tm: anyTm,
    workgroups: [ax, ay],
    groupsX: ax,
    tiles,
    wg: REGBLOCK_WG,
  };
}

async function dispatch(
  ctx: GpuContext,
  batch: DispatchBatch,
  w: GpuQuantWeight,
  plan: Plan,
  src: Binding,
  dst: Binding,
  m: number,
  accumulate = false,
): Promise<void> {
  const pipeline = await ctx.pipeline(
    SHADER,
    {
      ...dequantShaderParams(w),
      ALIGNED: String(w.inFeatures % 8 === 0),
      TM: plan.tm,
      // The tiled kernels ignore these; fixed values there keep to one pipeline per entry.
      WG: plan.wg || REGBLOCK_WG,
      OC: WIDE_OC,
      NW: WIDE_NW,
    },
    plan.entry,
  );
  const params = new Uint32Array([
    m,
    w.inFeatures,
    w.outFeatures,
    accumulate ? 1 : 0,
    plan.groupsX,
    plan.tiles,
    offsetBits(w),
    Math.log2(w.blocksize),
  ]);
  batch.dispatch(pipeline, [...w.bindings, src, dst, ctx.uniform(params)], plan.workgroups);
}

function checkShapes(
  ctx: GpuContext,
  op: string,
  w: GpuQuantWeight,
  m: number,
  tensors: Array<[string, Binding, number]>,
): void {
  if (!Number.isInteger(m) || m < 1) {
    throw invalidArgument(`${op}: ${w.label}: m = ${m} is not a positive integer`);
  }
  const limit = ctx.limits.maxStorageBufferBindingSize;
  for (const [name, b, elems] of tensors) {
    const size = b.size;
    if (size < elems * 4) {
      throw invalidArgument(
        `${op}: ${w.label}: ${name} holds ${size} bytes, needs ${elems * 4} (m=${m}, ` +
          `W [${w.outFeatures}, ${w.inFeatures}])`,
      );
    }
    if (size > limit) {
      throw invalidArgument(
        `${op}: ${w.label}: ${name} binding of ${size} bytes exceeds ` +
          `maxStorageBufferBindingSize ${limit}; split m`,
      );
    }
  }
}
