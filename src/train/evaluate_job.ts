/**
 * An Evaluate job: mean token cross-entropy (nats), perplexity and token accuracy of the base
 * model, or base + a PEFT adapter (ours or Python peft's), over a dataset; optional greedy
 * samples for given prompts so a person can see what the adapter learned.
 */
import { join } from "node:path";
import type { GpuContext } from "../gpu/context.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { loadDataset } from "../data/dataset.ts";
import { loadBaseModel } from "../model/load.ts";
import { checkSequenceLength, llamaConfigFromHf } from "../model/config.ts";
import type { LoraSpec } from "../model/lora.ts";
import { readJsonFile } from "../io/checkpoint.ts";
import { loadAdapter } from "./peft.ts";
import { TrainingEngine } from "./engine.ts";
import { greedyGenerate } from "./generate.ts";
import { evalBatches, type JobHooks } from "./train_job.ts";
import { CancelledError, invalidArgument } from "../util/errors.ts";
import { estimateMemory } from "./estimate.ts";
import { activationSeqLen, checkMemoryFits, quantSettingsOf } from "./memory_fit.ts";

export interface EvaluateJobOptions {
  baseModelDir: string;
  adapterDir?: string;
  datasetPath: string;
  maxSeqLen: number;
  batchSize: number;
  samplePrompts: string[];
  maxNewTokens: number;
  labels: { baseModel: string; dataset: string; adapter?: string };
  /** GPU memory the job may use (bytes); 0 or absent: only the adapter's buffer limits. */
  gpuMemoryBudgetBytes?: number;
}

/** The Evaluate request's field names, as errors quote them. */
const EVALUATE_SETTING_NAMES = {
  microBatchSize: "batch_size",
  maxSeqLen: "max_seq_len",
  budget: "GPU memory budget",
};

export interface EvaluateJobResult {
  loss: number;
  perplexity: number;
  tokenAccuracy: number;
  tokens: number;
  examples: number;
  samples: Array<{ prompt: string; completion: string }>;
}

/** No adapter: a LoRA layout with no targets, so the graph runs the base alone. */
const NO_LORA: LoraSpec = { r: 1, alpha: 1, dropout: 0, targets: [], useRslora: false };

export async function runEvaluateJob(
  gpu: () => Promise<GpuContext>,
  o: EvaluateJobOptions,
  hooks: JobHooks,
  signal?: AbortSignal,
): Promise<EvaluateJobResult> {
  const rawConfig = await readJsonFile(join(o.baseModelDir, "config.json"));
  const cfg = llamaConfigFromHf(rawConfig, `${o.labels.baseModel}/config.json`);
  checkSequenceLength(cfg, o.maxSeqLen, "max_seq_len", `${o.labels.baseModel}/config.json`);
  const tokenizer = await loadTokenizer(o.baseModelDir);
  const adapter = o.adapterDir ? await loadAdapter(o.adapterDir, cfg) : undefined;
  hooks.progress?.("reading dataset");
  const ds = await loadDataset(o.datasetPath, tokenizer, {
    maxSeqLen: o.maxSeqLen,
    labelSource: o.labels.dataset,
    vocabSize: cfg.vocab,
    signal,
  });
  for (const w of ds.warnings) hooks.log?.("warning", w);
  if (ds.examples.length === 0) {
    throw invalidArgument(`${o.labels.dataset}: no example has a token to evaluate`);
  }
  // Samples are generated with a KV cache of their own (generate.ts), not in these buffers.
  const promptIds = o.samplePrompts.map((p) => tokenizer.encode(p, { addSpecialTokens: true }));
  const seqLen = activationSeqLen(ds.examples.map((e) => e.tokens.length), o.maxSeqLen);
  const spec = adapter?.spec ?? NO_LORA;
  const ctx = await gpu();
  const estimate = estimateMemory(cfg, {
    maxBindingBytes: ctx.maxBindingBytes,
    lora: spec,
    microBatchSize: o.batchSize,
    maxSeqLen: seqLen,
    gradientCheckpointing: false,
    optimizerGpuBudgetBytes: 0,
    ...quantSettingsOf(rawConfig),
  });
  checkMemoryFits(estimate, {
    limits: {
      maxBufferSize: ctx.limits.maxBufferSize,
      maxStorageBufferBindingSize: ctx.maxBindingBytes,
    },
    budgetBytes: o.gpuMemoryBudgetBytes,
    names: EVALUATE_SETTING_NAMES,
    shape: { batch: o.batchSize, seq: seqLen, gradientCheckpointing: false },
  });
  const model = await loadBaseModel(ctx, o.baseModelDir, {
    signal,
    onProgress: (tensor, index, total) => hooks.progress?.(`loading ${tensor}`, index, total),
  });
  const engine = new TrainingEngine(ctx, model, {
    lora: spec,
    maxShape: { batch: o.batchSize, seq: seqLen },
    gradientCheckpointing: false,
    seed: 0,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: adapter?.flat,
    evalOnly: true,
  });
  try {
    const batches = evalBatches(ds.examples, o.batchSize);
    let lossSum = 0;
    let correct = 0;
    let tokens = 0;
    for (let i = 0; i < batches.length; i++) {
      if (signal?.aborted) throw new CancelledError();
      const r = await engine.evaluate(batches[i]);
      lossSum += r.lossSum;
      correct += r.correct;
      tokens += r.tokens;
      hooks.progress?.("evaluating", i + 1, batches.length);
    }
    const samples = [];
    const stop = [...cfg.eosTokenIds, ...(tokenizer.eosId !== undefined ? [tokenizer.eosId] : [])];
    for (const [i, prompt] of o.samplePrompts.entries()) {
      const ids = promptIds[i];
      const out = await greedyGenerate(engine, ids, o.maxNewTokens, stop, signal);
      const text = tokenizer.decode(out.filter((t) => !stop.includes(t)));
      samples.push({ prompt, completion: text });
      hooks.log?.("info", `sample: ${JSON.stringify(prompt)} -> ${JSON.stringify(text)}`);
    }
    const loss = lossSum / tokens;
    return {
      loss,
      perplexity: Math.exp(loss),
      tokenAccuracy: correct / tokens,
      tokens,
      examples: ds.examples.length,
      samples,
    };
  } finally {
    engine.destroy();
    model.destroy();
  }
}
