/**
 * Section (g) of the benchmark: generation tokens/s on this adapter. Prefill (the prompt's one
 * forward pass into the KV cache), decode (one token's forward per new token over the cache), and
 * for comparison the uncached path Evaluate used before the cache: a full forward over the
 * prefix for every new token. Random NF4 models as in the training section; LoRA r 16 on every
 * linear (its cost is part of each token's). The GPU check's `generate` stage measures with the
 * same code (measureGenerate), at Llama-2-7B's shape, and adds the memory ledger's peak.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { LoraLayout } from "../../src/model/lora.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { KvDecoder } from "../../src/train/decode.ts";
import { KvCache } from "../../src/train/kv_cache.ts";
import { nextTokenLogits } from "../../src/train/generate.ts";
import { argmax } from "../../src/train/sampling.ts";
import { Rng } from "../../src/util/random.ts";
import { type Contender, interleaved, median, type Timing } from "../../src/gpu/timing.ts";
import { MID_BENCH, parameterCount, randomModel, TINY_BENCH } from "./random_model.ts";
import { randomModelGpu } from "./random_model_gpu.ts";
import { markdownTable, ms, num, ratio } from "./report.ts";
import { BENCH_LORA } from "./train_bench.ts";

export interface GenerateCase {
  name: string;
  cfg: LlamaConfig;
  promptTokens: number;
  newTokens: number;
  rounds: number;
  gpuWeights?: boolean;
  /**
   * Date.now() by which the timing should be done: after the warm-up, a round is started only if
   * one as long as the last should end before it (at least one round always runs).
   */
  deadline?: number;
  onProgress?: (line: string) => void;
}

export interface GenerateRow {
  model: string;
  parameters: number;
  promptTokens: number;
  newTokens: number;
  /** The KV cache's precision on this adapter (KvDecoder's "auto"). */
  kvPrecision: string;
  prefillMs: number;
  prefillTokensPerS: number;
  decodeMsPerToken: number;
  decodeTokensPerS: number;
  /** A full forward over the prompt per new token (no cache). */
  uncachedMsPerToken: number;
  uncachedTokensPerS: number;
}

/** A row and what it cost: the GPU check's view (the benchmark prints the row only). */
export interface GenerateMeasurement {
  row: GenerateRow;
  /** Rounds timed (fewer than asked when the deadline came first). */
  rounds: number;
  modelBuildS: number;
  /** The memory ledger's peak from before the model was made to the end, bytes. */
  peakBytes: number;
  peakByCategoryBytes: Record<string, number>;
  /** The KV cache's own bytes. */
  kvCacheBytes: number;
}

/**
 * `rounds` interleaved rounds as timing.ts's `interleaved` runs them (one warm-up each, the order
 * alternating), but one round at a time so that a deadline can end them early.
 */
async function boxedRounds(
  contenders: Contender[],
  rounds: number,
  deadline: number,
): Promise<{ timings: Map<string, Timing>; rounds: number }> {
  const samples = new Map<string, number[]>(contenders.map((c) => [c.name, []]));
  let lastMs = 0;
  let done = 0;
  for (; done < rounds; done++) {
    if (done > 0 && Date.now() + 1.3 * lastMs > deadline) break;
    const t0 = Date.now();
    const order = done % 2 === 0 ? contenders : [...contenders].reverse();
    const t = await interleaved(order, { rounds: 1, warmup: done === 0 ? 1 : 0 });
    for (const [name, x] of t) samples.get(name)!.push(...x.samples);
    // The first call's time includes the warm-up (twice the work, and the compiles).
    lastMs = (Date.now() - t0) / (done === 0 ? 2 : 1);
  }
  const timings = new Map<string, Timing>();
  for (const [name, s] of samples) {
    timings.set(name, { ms: median(s), min: Math.min(...s), max: Math.max(...s), samples: s });
  }
  return { timings, rounds: done };
}

/** Prefill, KV-cached decode and uncached tokens/s of one random model, and its memory peak. */
export async function measureGenerate(
  ctx: GpuContext,
  c: GenerateCase,
): Promise<GenerateMeasurement> {
  const log = c.onProgress ?? (() => {});
  ctx.memory.resetPeak();
  const t0 = performance.now();
  const model = c.gpuWeights ? await randomModelGpu(ctx, c.cfg, 7) : randomModel(ctx, c.cfg, 7);
  const modelBuildS = (performance.now() - t0) / 1000;
  log(`${c.name}: model made in ${modelBuildS.toFixed(1)} s`);
  const layout = new LoraLayout(c.cfg, BENCH_LORA);
  // Non-zero B so the LoRA products are real work on real numbers.
  const rng = new Rng(11);
  const adapter = rng.normals(layout.totalFloats, 0.01);
  const engine = new TrainingEngine(ctx, model, {
    lora: BENCH_LORA,
    maxShape: { batch: 1, seq: c.promptTokens },
    gradientCheckpointing: false,
    seed: 1,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter,
    evalOnly: true,
  });
  const decoder = new KvDecoder(ctx, model, engine.layout, engine.params, {
    capacity: c.promptTokens + c.newTokens,
  });
  const row = ctx.createBuffer({ label: "bench_row", category: "scratch", size: c.cfg.hidden * 4 });
  const logits = ctx.createBuffer({
    label: "bench_logits",
    category: "scratch",
    size: c.cfg.vocab * 4,
  });
  const prompt = Array.from({ length: c.promptTokens }, () => rng.int(c.cfg.vocab));
  try {
    const contenders: Contender[] = [
      {
        name: "prefill",
        run: async () => {
          decoder.reset();
          await decoder.step(prompt);
        },
      },
      {
        name: "decode",
        perRun: c.newTokens,
        run: async () => {
          decoder.reset();
          let l = await decoder.step(prompt);
          const t0 = performance.now();
          for (let i = 0; i < c.newTokens; i++) l = await decoder.step([argmax(l)]);
          return performance.now() - t0;
        },
      },
      {
        name: "uncached",
        run: async () => void await nextTokenLogits(engine, prompt, { row, logits }),
      },
    ];
    const { timings: t, rounds } = c.deadline === undefined
      ? { timings: await interleaved(contenders, { rounds: c.rounds }), rounds: c.rounds }
      : await boxedRounds(contenders, c.rounds, c.deadline);
    const prefill = t.get("prefill")!.ms;
    const decode = t.get("decode")!.ms;
    const uncached = t.get("uncached")!.ms;
    log(
      `${c.name}: prefill ${prefill.toFixed(1)} ms, decode ${decode.toFixed(2)} ms/token ` +
        `(${rounds} round${rounds === 1 ? "" : "s"})`,
    );
    return {
      row: {
        model: c.name,
        parameters: parameterCount(c.cfg),
        promptTokens: c.promptTokens,
        newTokens: c.newTokens,
        kvPrecision: decoder.cache.precision,
        prefillMs: prefill,
        prefillTokensPerS: c.promptTokens / (prefill / 1000),
        decodeMsPerToken: decode,
        decodeTokensPerS: 1000 / decode,
        uncachedMsPerToken: uncached,
        uncachedTokensPerS: 1000 / uncached,
      },
      rounds,
      modelBuildS,
      peakBytes: ctx.memory.peakTotal,
      peakByCategoryBytes: { ...ctx.memory.peak() },
      kvCacheBytes: KvCache.bytes(c.cfg, c.promptTokens + c.newTokens, decoder.cache.precision),
    };
  } finally {
    row.destroy();
    logits.destroy();
    decoder.destroy();
    engine.destroy();
    model.destroy();
  }
}

/** Section (g)'s row for one model: measureGenerate's timings. */
export async function benchGenerate(ctx: GpuContext, c: GenerateCase): Promise<GenerateRow> {
  return (await measureGenerate(ctx, c)).row;
}

/** Measures and prints section (g); its rows go to `results.generate`. */
export async function generateSection(ctx: GpuContext, o: {
  quick: boolean;
  print: (text?: string) => void;
  progress: (line: string) => void;
  results: Record<string, unknown>;
}): Promise<void> {
  const cases: GenerateCase[] = [
    { name: "tiny", cfg: TINY_BENCH, promptTokens: 64, newTokens: 32, rounds: o.quick ? 3 : 7 },
    {
      name: "~50M",
      cfg: MID_BENCH,
      promptTokens: o.quick ? 64 : 256,
      newTokens: o.quick ? 8 : 32,
      rounds: o.quick ? 1 : 3,
      gpuWeights: true,
    },
  ];
  const rows: GenerateRow[] = [];
  for (const c of cases) {
    o.progress(`(g) generation: ${c.name}`);
    rows.push(await benchGenerate(ctx, c));
  }
  o.results.generate = rows;
  o.print("## (g) Generation (tokens/s)");
  o.print();
  o.print(
    `LoRA r=${BENCH_LORA.r} on all linears, NF4 + double quant base, one sequence. Prefill: the ` +
      "prompt's one forward into the KV cache; decode: one token's forward over the cache and " +
      "its logits read back, per new token; uncached: a full forward over the prompt per new " +
      "token (the path without a cache).",
  );
  o.print();
  o.print(markdownTable(
    [
      "model",
      "prompt",
      "KV cache",
      "prefill ms",
      "prefill tok/s",
      "decode ms/tok",
      "decode tok/s",
      "uncached ms/tok",
      "cache speedup",
    ],
    rows.map((r) => [
      `${r.model} (${(r.parameters / 1e6).toFixed(2)}M)`,
      r.promptTokens,
      r.kvPrecision,
      ms(r.prefillMs),
      num(r.prefillTokensPerS),
      ms(r.decodeMsPerToken),
      num(r.decodeTokensPerS),
      ms(r.uncachedMsPerToken),
      ratio(r.uncachedMsPerToken / r.decodeMsPerToken),
    ]),
  ));
  o.print();
}
