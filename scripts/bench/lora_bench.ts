/**
 * Section (c): what LoRA adds to a 4-bit linear. The dispatches mirror src/model/layer.ts's
 * linearForward / linearBackward (dropout off), with the kernel ladder's variants:
 *   forward:  Y = X·Wᵀ (4-bit), then T = X·Aᵀ and Y += s·T·Bᵀ
 *   backward: dX = dY·W (4-bit), then dB += s·dYᵀ·T, dT = s·dY·B, dA += dTᵀ·X, dX += dT·A
 * against the 4-bit product(s) alone, timed side by side.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import { encodeMatmul } from "../../src/kernels/matmul.ts";
import { encodeMatmul4bit, encodeMatmul4bitT } from "../../src/kernels/matmul_4bit.ts";
import { uploadQuantWeight } from "../../src/kernels/quant_weight.ts";
import { quantizeWeight } from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";
import type { LinearShape } from "./matmul_bench.ts";
import { kernelContender, timeKernels } from "../../src/gpu/timing.ts";

export interface LoraRow {
  shape: string;
  out: number;
  in: number;
  m: number;
  rank: number;
  forwardMs: number;
  forwardLoraMs: number;
  /** forwardLoraMs / forwardMs - 1. */
  forwardOverhead: number;
  trainMs: number;
  trainLoraMs: number;
  trainOverhead: number;
}

export async function benchLora(
  ctx: GpuContext,
  shapes: LinearShape[],
  o: { m: number; rank: number; rounds: number; targetMs: number; onRow?: (r: LoraRow) => void },
): Promise<LoraRow[]> {
  const rows: LoraRow[] = [];
  const rng = new Rng(16);
  const { m, rank } = o;
  const scaling = 2; // alpha 32 / r 16
  for (const shape of shapes) {
    const host = new Float32Array(shape.out * shape.in);
    for (let i = 0; i < host.length; i++) host[i] = (2 * rng.next() - 1) / Math.sqrt(shape.in);
    const w = uploadQuantWeight(
      ctx,
      quantizeWeight(host, [shape.out, shape.in], {
        quantType: "nf4",
        blocksize: 64,
        doubleQuant: true,
        dtype: "float32",
      }),
      "bench.lora.w",
    );
    const buf = (label: string, floats: number, random = false) =>
      random
        ? ctx.upload(label, "scratch", rng.normals(floats, 0.1))
        : ctx.createBuffer({ label, category: "scratch", size: floats * 4 });
    const x = buf("x", m * shape.in, true);
    const y = buf("y", m * shape.out);
    const dy = buf("dy", m * shape.out, true);
    const dx = buf("dx", m * shape.in);
    const a = buf("lora_a", rank * shape.in, true);
    const bw = buf("lora_b", shape.out * rank, true);
    const t = buf("t", m * rank);
    const dt = buf("dt", m * rank);
    const ga = buf("grad_a", rank * shape.in);
    const gb = buf("grad_b", shape.out * rank);
    const owned = [x, y, dy, dx, a, bw, t, dt, ga, gb];
    try {
      const fwd4 = (b: ReturnType<GpuContext["batch"]>) => encodeMatmul4bit(ctx, b, { x, w, y, m });
      const fwdLora = async (b: ReturnType<GpuContext["batch"]>) => {
        await fwd4(b);
        await encodeMatmul(ctx, b, { a: x, b: a, c: t, m, n: rank, k: shape.in, transB: true });
        await encodeMatmul(ctx, b, {
          a: t,
          b: bw,
          c: y,
          m,
          n: shape.out,
          k: rank,
          transB: true,
          alpha: scaling,
          accumulate: true,
        });
      };
      const bwd4 = (b: ReturnType<GpuContext["batch"]>) =>
        encodeMatmul4bitT(ctx, b, { dy, w, dx, m });
      const bwdLora = async (b: ReturnType<GpuContext["batch"]>) => {
        await bwd4(b);
        await encodeMatmul(ctx, b, {
          a: dy,
          b: t,
          c: gb,
          m: shape.out,
          n: rank,
          k: m,
          transA: true,
          alpha: scaling,
          accumulate: true,
        });
        await encodeMatmul(ctx, b, {
          a: dy,
          b: bw,
          c: dt,
          m,
          n: rank,
          k: shape.out,
          alpha: scaling,
        });
        await encodeMatmul(ctx, b, {
          a: dt,
          b: x,
          c: ga,
          m: rank,
          n: shape.in,
          k: m,
          transA: true,
          accumulate: true,
        });
        await encodeMatmul(ctx, b, {
          a: dt,
          b: a,
          c: dx,
          m,
          n: shape.in,
          k: rank,
          accumulate: true,
        });
      };
      const opts = { targetMs: o.targetMs };
      const timed = await timeKernels([
        kernelContender(ctx, "fwd", fwd4, opts),
        kernelContender(ctx, "fwd+lora", fwdLora, opts),
        kernelContender(ctx, "train", async (b) => {
          await fwd4(b);
          await bwd4(b);
        }, opts),
        kernelContender(ctx, "train+lora", async (b) => {
          await fwdLora(b);
          await bwdLora(b);
        }, opts),
      ], o.rounds);
      const get = (k: string) => timed.get(k)!.ms;
      const row: LoraRow = {
        shape: shape.name,
        out: shape.out,
        in: shape.in,
        m,
        rank,
        forwardMs: get("fwd"),
        forwardLoraMs: get("fwd+lora"),
        forwardOverhead: get("fwd+lora") / get("fwd") - 1,
        trainMs: get("train"),
        trainLoraMs: get("train+lora"),
        trainOverhead: get("train+lora") / get("train") - 1,
      };
      rows.push(row);
      o.onRow?.(row);
    } finally {
      for (const b of owned) b.destroy();
      w.destroy();
    }
  }
  return rows;
}
