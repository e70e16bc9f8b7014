/**
 * Section (g) of the benchmark: generation tokens/s on this adapter. Prefill (the prompt's one
 * forward pass into the KV cache), decode (one token's forward per new token over the cache), and
 * for comparison the uncached path Evaluate used before the cache: a full forward over the
 * prefix for every new token. Random NF4 models as in the training section; LoRA r 16 on every
 * linear (its cost is part of each token's).
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { LoraLayout } from "../../src/model/lora.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { KvDecoder } from "../../src/train/decode.ts";
import { nextTokenLogits } from "../../src/train/generate.ts";
import { argmax } from "../../src/train/sampling.ts";
import { Rng } from "../../src/util/random.ts";
import { interleaved } from "../../src/gpu/timing.ts";
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

export async function benchGenerate(ctx: GpuContext, c: GenerateCase): Promise<GenerateRow> {
  const model = c.gpuWeights ? await randomModelGpu(ctx, c.cfg, 7) : randomModel(ctx, c.cfg, 7);
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
    const t = await interleaved([
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
    ], { rounds: c.rounds });
    const prefill = t.get("prefill")!.ms;
    const decode = t.get("decode")!.ms;
    const uncached = t.get("uncached")!.ms;
    return {
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
    };
  } finally {
    row.destroy();
    logits.destroy();
    decoder.destroy();
    engine.destroy();
    model.destroy();
  }
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
