/**
 * Dense f32 matmul: C[m,n] (=|+=) alpha · op(A) · op(B), op(A) [m,k] (A stored [k,m] when
 * transA), op(B) [k,n] (B stored [n,k] when transB). Used for the LoRA products and as the dense
 * baseline of benchmarks. Two variants in shaders/matmul.wgsl: `blocked` (register blocking, no
 * barriers: llvmpipe and other CPU adapters) and `tiled` (workgroup-memory tiles: real GPUs),
 * chosen per adapter by the kernel ladder unless `variant` forces one.
 */
import { type Binding, type DispatchBatch, type GpuContext, grid } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { kernelLadder, ProbeBuffers, registerLadderKernel } from "./ladder.ts";

export type MatmulVariant = "blocked" | "tiled";
export const MATMUL_VARIANTS: readonly MatmulVariant[] = ["blocked", "tiled"];

export interface MatmulArgs {
  a: Binding;
  b: Binding;
  c: Binding;
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  /** C += alpha·op(A)·op(B) instead of C = alpha·op(A)·op(B). */
  accumulate?: boolean;
  /** Forces a variant (tests, benchmarks); default chooseMatmulVariant(ctx). */
  variant?: MatmulVariant;
}

/** Outputs per invocation / per workgroup edge of each variant (see shaders/matmul.wgsl). */
const BLOCKED_ROWS = 16; // rows of C per workgroup (the same for all its invocations)
const BLOCKED_COLS = 8 * 16; // 8 invocations × 16 columns
const TILE = 64;

/** The variant for this adapter: the kernel ladder's choice (src/kernels/ladder.ts). */
export function chooseMatmulVariant(ctx: GpuContext): MatmulVariant {
  return kernelLadder.choice(ctx, "matmul") as MatmulVariant;
}

registerLadderKernel({
  name: "matmul",
  variants: MATMUL_VARIANTS,
  prior: (ctx) => ctx.isSoftware ? "blocked" : "tiled",
  shaders: ["matmul.wgsl"],
  // A linear-sized product and the two skinny LoRA products of a rank-16 adapter.
  probe: (ctx) => {
    const bufs = new ProbeBuffers(ctx);
    const [m, n, k, r] = [128, 256, 256, 16];
    const x = bufs.random("ladder.matmul.x", m * k, 1);
    const w = bufs.random("ladder.matmul.w", n * k, 2);
    const y = bufs.empty("ladder.matmul.y", m * n * 4);
    const t = bufs.empty("ladder.matmul.t", m * r * 4);
    const g = bufs.empty("ladder.matmul.g", r * k * 4);
    return Promise.resolve({
      run: async (batch: DispatchBatch, v: string) => {
        const variant = v as MatmulVariant;
        await encodeMatmul(ctx, batch, { a: x, b: w, c: y, m, n, k, transB: true, variant });
        await encodeMatmul(ctx, batch, { a: x, b: w, c: t, m, n: r, k, transB: true, variant });
        await encodeMatmul(ctx, batch, {
          a: t,
          b: x,
          c: g,
          m: r,
          n: k,
          k: m,
          transA: true,
          variant,
        });
      },
      destroy: () => bufs.destroy(),
    });
  },
});

/** Argument checks shared by the kernel wrappers; errors name the op and the field. */
export function checkCount(op: string, field: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw invalidArgument(`${op}: ${field} must be a positive integer, got ${value}`);
  }
}

export function checkBinding(op: string, field: string, b: Binding, floats: number): void {
  if (b.size < floats * 4) {
    throw invalidArgument(
      `${op}: ${field} holds ${Math.floor(b.size / 4)} elements, needs ${floats}`,
    );
  }
}

export async function encodeMatmul(
  ctx: GpuContext,
  batch: DispatchBatch,
  args: MatmulArgs,
): Promise<void> {
  const { a, b, c, m, n, k } = args;
  checkCount("matmul", "m", m);
  checkCount("matmul", "n", n);
  checkCount("matmul", "k", k);
  checkBinding("matmul", "a", a, m * k);
  checkBinding("matmul", "b", b, k * n);
  checkBinding("matmul", "c", c, m * n);
  const variant = args.variant ?? (await kernelLadder.variant(ctx, "matmul") as MatmulVariant);
  if (!MATMUL_VARIANTS.includes(variant)) {
    throw invalidArgument(`matmul: unknown variant ${variant}`);
  }
  // Strides of op(A)[i,kk], op(B)[kk,j] and C[i,j].
  const [aRow, aK] = args.transA ? [1, m] : [k, 1];
  const [bK, bCol] = args.transB ? [1, k] : [n, 1];

  let lhs = a, rhs = b, M = m, N = n;
  let s = { aRow, aK, bK, bCol, cRow: n, cCol: 1 };
  let rowsPerTile = TILE, colsPerTile = TILE;
  if (variant === "blocked") {
    rowsPerTile = BLOCKED_ROWS;
    colsPerTile = BLOCKED_COLS;
    // The blocked kernel's tile is 16 x 128; computing C^T = op(B)^T op(A)^T instead wastes
    // less of it when m is the wider side (skinny LoRA products).
    const padded = (rows: number, cols: number) =>
      Math.ceil(rows / BLOCKED_ROWS) * Math.ceil(cols / BLOCKED_COLS);
    if (padded(n, m) < padded(m, n)) {
      lhs = b;
      rhs = a;
      M = n;
      N = m;
      s = { aRow: bCol, aK: bK, bK: aK, bCol: aRow, cRow: 1, cCol: n };
    }
  }
  const tilesN = Math.ceil(N / colsPerTile);
  const tiles = Math.ceil(M / rowsPerTile) * tilesN;
  const [gx, gy] = grid(tiles, ctx.limits.maxComputeWorkgroupsPerDimension);
  const params = new Uint32Array(16);
  params.set([M, N, k, args.accumulate ? 1 : 0, s.aRow, s.aK, s.bK, s.bCol, s.cRow, s.cCol]);
  params.set([tilesN, gx], 10);
  new Float32Array(params.buffer)[12] = args.alpha ?? 1;
  params[13] = tiles;
  const pipeline = await ctx.pipeline("matmul.wgsl", {}, variant);
  batch.dispatch(pipeline, [lhs, rhs, c, ctx.uniform(params)], [gx, gy]);
}
