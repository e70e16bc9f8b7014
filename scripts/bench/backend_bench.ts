/**
 * Section (f): the same kernels, with the same variants and inputs, on two WebGPU
 * implementations in one process: Dawn (npm `webgpu`, the default) and Deno's own WebGPU
 * (wgpu). Each case is built on both contexts and timed in interleaved rounds. A case that
 * fails on one side is reported with its reason instead of a number; a side that takes longer
 * than `timeoutMs` to compile and run a case once is given up for the remaining cases (its
 * queue may still be busy).
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import {
  attentionLseBytes,
  attentionScratchBytes,
  encodeAttention,
  encodeAttentionBackward,
} from "../../src/kernels/attention.ts";
import {
  crossEntropyScratchBytes,
  encodeLmHeadCrossEntropy,
} from "../../src/kernels/cross_entropy.ts";
import { encodeAdamW } from "../../src/kernels/adamw.ts";
import { encodeMatmul } from "../../src/kernels/matmul.ts";
import { encodeMatmul4bit, encodeMatmul4bitT } from "../../src/kernels/matmul_4bit.ts";
import { uploadQuantWeight } from "../../src/kernels/quant_weight.ts";
import { uploadTableFromF32 } from "../../src/kernels/row_chunks.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { quantizeWeight } from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";
import { randomBatch, randomModel, TINY_BENCH } from "./random_model.ts";
import { BENCH_LORA } from "./train_bench.ts";
import { type Contender, interleaved, kernelContender } from "../../src/gpu/timing.ts";

export interface BackendRow {
  kernel: string;
  /** ms per run, or the reason there is none. */
  dawn: number | string;
  other: number | string;
  /** other / dawn when both ran. */
  ratio?: number;
}

interface Built {
  contender: Contender & { calibrate?(): Promise<number> };
  destroy(): void;
}

type Case = { name: string; build(ctx: GpuContext, targetMs: number): Promise<Built> };

function owned(ctx: GpuContext) {
  const list: Array<{ destroy(): void }> = [];
  const rng = new Rng(99);
  return {
    rand: (label: string, n: number, scale = 1) => {
      const b = ctx.upload(label, "scratch", rng.normals(n, scale));
      list.push(b);
      return b;
    },
    empty: (label: string, bytes: number) => {
      const b = ctx.createBuffer({ label, category: "scratch", size: bytes });
      list.push(b);
      return b;
    },
    keep: <T extends { destroy(): void }>(x: T): T => {
      list.push(x);
      return x;
    },
    destroy: () => list.forEach((b) => b.destroy()),
  };
}

function kernelCase(
  name: string,
  setup: (
    ctx: GpuContext,
    o: ReturnType<typeof owned>,
  ) => (b: ReturnType<GpuContext["batch"]>) => Promise<void>,
): Case {
  return {
    name,
    build: (ctx, targetMs) => {
      const o = owned(ctx);
      try {
        const encode = setup(ctx, o);
        return Promise.resolve({
          contender: kernelContender(ctx, name, encode, { targetMs }),
          destroy: o.destroy,
        });
      } catch (e) {
        o.destroy();
        return Promise.reject(e);
      }
    },
  };
}

const [M, IN, OUT] = [128, 512, 1376];

function weight(ctx: GpuContext, o: ReturnType<typeof owned>) {
  const rng = new Rng(3);
  const host = new Float32Array(OUT * IN);
  for (let i = 0; i < host.length; i++) host[i] = (2 * rng.next() - 1) / Math.sqrt(IN);
  const q = quantizeWeight(host, [OUT, IN], {
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
    dtype: "float32",
  });
  return o.keep(uploadQuantWeight(ctx, q, "bench.backend.w"));
}

export const BACKEND_CASES: Case[] = [
  kernelCase(`4-bit matmul fwd ${M}x${IN} -> ${OUT}`, (ctx, o) => {
    const w = weight(ctx, o);
    const x = o.rand("x", M * IN);
    const y = o.empty("y", M * OUT * 4);
    return (b) => encodeMatmul4bit(ctx, b, { x, w, y, m: M });
  }),
  kernelCase(`4-bit matmul bwd ${M}x${OUT} -> ${IN}`, (ctx, o) => {
    const w = weight(ctx, o);
    const dy = o.rand("dy", M * OUT);
    const dx = o.empty("dx", M * IN * 4);
    return (b) => encodeMatmul4bitT(ctx, b, { dy, w, dx, m: M });
  }),
  kernelCase(`dense matmul ${M}x${IN} · ${OUT}x${IN}ᵀ`, (ctx, o) => {
    const a = o.rand("a", M * IN);
    const w = o.rand("w", OUT * IN, 0.05);
    const c = o.empty("c", M * OUT * 4);
    return (b) => encodeMatmul(ctx, b, { a, b: w, c, m: M, n: OUT, k: IN, transB: true });
  }),
  kernelCase("attention fwd+bwd seq 128, 8/4 heads of 64", (ctx, o) => {
    const shape = { batchSize: 1, seq: 128, heads: 8, kvHeads: 4, headDim: 64 };
    const qn = 128 * 8 * 64, kn = 128 * 4 * 64;
    const io = {
      ...shape,
      q: o.rand("q", qn),
      k: o.rand("k", kn),
      v: o.rand("v", kn),
      segments: o.keep(ctx.upload("seg", "scratch", new Uint32Array(128))),
      out: o.empty("out", qn * 4),
      lse: o.empty("lse", attentionLseBytes(shape)),
    };
    const grads = {
      dout: o.rand("dout", qn),
      dq: o.empty("dq", qn * 4),
      dk: o.empty("dk", kn * 4),
      dv: o.empty("dv", kn * 4),
      scratch: o.empty("scratch", attentionScratchBytes(shape)),
    };
    return async (b) => {
      await encodeAttention(ctx, b, io);
      await encodeAttentionBackward(ctx, b, { ...io, ...grads });
    };
  }),
  kernelCase("lm_head + cross-entropy fwd+bwd 128 x 512 -> 4096", (ctx, o) => {
    const [rows, hidden, vocab, chunk] = [128, 512, 4096, 2048];
    const args = {
      h: o.rand("h", rows * hidden),
      weight: o.keep(uploadTableFromF32(ctx, {
        label: "lm_head",
        category: "scratch",
        rows: vocab,
        cols: hidden,
        values: new Rng(98).normals(vocab * hidden, 0.05),
      })),
      labels: o.keep(ctx.upload(
        "labels",
        "scratch",
        Int32Array.from({ length: rows }, (_, i) => (i * 31) % vocab),
      )),
      rows,
      hidden,
      chunk,
      loss: o.empty("loss", rows * 4),
      correct: o.empty("correct", rows * 4),
      dh: o.empty("dh", rows * hidden * 4),
      gradScale: 1 / rows,
      scratch: o.empty("ce scratch", crossEntropyScratchBytes(rows, chunk)),
    };
    return (b) => encodeLmHeadCrossEntropy(ctx, b, args);
  }),
  kernelCase("AdamW step, 1M floats", (ctx, o) => {
    const n = 1 << 20;
    const args = {
      param: o.rand("p", n, 0.01),
      grad: o.rand("g", n, 0.01),
      m: o.rand("m", n, 0.001),
      v: o.keep(ctx.upload("v", "scratch", new Float32Array(n).fill(1e-6))),
      n,
      lr: 1e-4,
      step: 3,
    };
    return (b) => encodeAdamW(ctx, b, args);
  }),
  {
    name: "tiny model training step (4 x 64 tokens)",
    build: (ctx) => {
      const model = randomModel(ctx, TINY_BENCH, 5);
      const engine = new TrainingEngine(ctx, model, {
        lora: BENCH_LORA,
        maxShape: { batch: 4, seq: 64 },
        gradientCheckpointing: false,
        seed: 1,
        maxGradNorm: 1,
        optimizerGpuBudgetBytes: 0,
      });
      const batch = randomBatch(TINY_BENCH.vocab, 4, 64, 8);
      return Promise.resolve({
        contender: {
          name: "tiny step",
          run: async () => void await engine.trainStep([batch], 1e-4),
        },
        destroy: () => {
          engine.destroy();
          model.destroy();
        },
      });
    },
  },
];

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function reason(e: unknown): string {
  const text = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ").trim();
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

/** Times every case on `dawn` and on `other` (undefined: not available, with `why`). */
export async function benchBackends(
  dawn: GpuContext,
  other: GpuContext | undefined,
  why: string,
  o: { rounds: number; targetMs: number; timeoutMs: number; onRow?: (r: BackendRow) => void },
): Promise<BackendRow[]> {
  const rows: BackendRow[] = [];
  let otherBroken = other ? "" : why;
  for (const c of BACKEND_CASES) {
    const sides: Array<{ ctx: GpuContext; built?: Built; error?: string }> = [{ ctx: dawn }];
    if (other && !otherBroken) sides.push({ ctx: other });
    for (const s of sides) {
      try {
        s.built = await withTimeout(
          (async () => {
            const b = await c.build(s.ctx, o.targetMs);
            // Compile and size the timed runs (the warm-up).
            if (b.contender.calibrate) await b.contender.calibrate();
            else await b.contender.run();
            return b;
          })(),
          o.timeoutMs,
          "the first run",
        );
      } catch (e) {
        s.error = reason(e);
        if (s.ctx === other && /took over/.test(s.error)) otherBroken = s.error;
      }
    }
    const ready = sides.filter((s) => s.built);
    const t = await interleaved(
      ready.map((s, i) => ({ ...s.built!.contender, name: `${i}` })),
      { warmup: 0, rounds: o.rounds },
    ).catch((e) => {
      for (const s of ready) s.error ??= reason(e);
      return undefined;
    });
    for (const s of ready) s.built!.destroy();
    const result = (s: (typeof sides)[number] | undefined, i: number, fallback: string) => {
      if (!s) return fallback;
      if (s.error) return s.error;
      return t?.get(`${ready.indexOf(s)}`)?.ms ?? `not run (${i})`;
    };
    const d = result(sides[0], 0, "");
    const x = result(sides[1], 1, otherBroken || why);
    const row: BackendRow = {
      kernel: c.name,
      dawn: d,
      other: x,
      ratio: typeof d === "number" && typeof x === "number" ? x / d : undefined,
    };
    rows.push(row);
    o.onRow?.(row);
  }
  return rows;
}
