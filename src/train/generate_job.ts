/**
 * A Generate job: a base model (and optionally a PEFT adapter) loaded once, a prompt or a chat
 * rendered with the model's chat template, and tokens generated with the KV-cached decoder
 * (generate.ts), each reported as it comes so the caller can stream it.
 */
import { join } from "node:path";
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import { type ChatMessage, loadTokenizer } from "../data/tokenizer.ts";
import { loadBaseModel } from "../model/load.ts";
import { llamaConfigFromHf } from "../model/config.ts";
import { LoraLayout, type LoraSpec } from "../model/lora.ts";
import { readJsonFile } from "../io/checkpoint.ts";
import { loadAdapter } from "./peft.ts";
import { type FinishReason, generateTokens } from "./generate.ts";
import { decoderBytes, KvDecoder } from "./decode.ts";
import { KvCache, resolveKvPrecision } from "./kv_cache.ts";
import { estimateMemory } from "./estimate.ts";
import { quantSettingsOf } from "./memory_fit.ts";
import type { GenerateSettings } from "./generate_settings.ts";
import type { JobHooks } from "./train_job.ts";
import { invalidArgument, QloradError } from "../util/errors.ts";

export interface GenerateJobOptions {
  baseModelDir: string;
  adapterDir?: string;
  /** Exactly one of prompt and messages. */
  prompt?: string;
  messages?: ChatMessage[];
  settings: GenerateSettings;
  labels: { baseModel: string; adapter?: string };
  /** GPU memory the job may use (bytes); 0 or absent: only the adapter's buffer limits. */
  gpuMemoryBudgetBytes?: number;
}

export interface GenerateJobResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  tokenIds: number[];
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

/** Prompt tokens per prefill pass. */
const DECODE_CHUNK = 64;

/** No adapter: a LoRA layout with no targets, so the decoder runs the base alone. */
const NO_LORA: LoraSpec = { r: 1, alpha: 1, dropout: 0, targets: [], useRslora: false };

export async function runGenerateJob(
  gpu: () => Promise<GpuContext>,
  o: GenerateJobOptions,
  hooks: JobHooks & { token?(tokenId: number, text: string): void },
  signal?: AbortSignal,
): Promise<GenerateJobResult> {
  const configLabel = `${o.labels.baseModel}/config.json`;
  const rawConfig = await readJsonFile(join(o.baseModelDir, "config.json"));
  const cfg = llamaConfigFromHf(rawConfig, configLabel);
  const tokenizer = await loadTokenizer(o.baseModelDir);
  const adapter = o.adapterDir ? await loadAdapter(o.adapterDir, cfg) : undefined;
  const promptIds = o.messages
    ? tokenizer.encode(tokenizer.applyChatTemplate(o.messages, { addGenerationPrompt: true }), {
      addSpecialTokens: false,
    })
    : tokenizer.encode(o.prompt ?? "", { addSpecialTokens: true });
  const promptField = o.messages ? "messages" : "prompt";
  if (promptIds.length === 0) throw invalidArgument(`${promptField}: no tokens to start from`);
  if (promptIds.length >= cfg.maxPositions) {
    throw invalidArgument(
      `${promptField}: ${promptIds.length} tokens leave no room for new ones within the ` +
        `model's max_position_embeddings ${cfg.maxPositions}`,
    );
  }
  const s = o.settings;
  const capacity = Math.min(cfg.maxPositions, promptIds.length + s.maxNewTokens);
  const ctx = await gpu();
  const kvPrecision = resolveKvPrecision("auto", ctx.capabilities.f16);
  // Each layer's cache is one binding.
  const layerBytes = KvCache.bytes(cfg, capacity, kvPrecision) / (2 * cfg.layers);
  if (layerBytes > ctx.maxBindingBytes) {
    throw new QloradError(
      "resource_exhausted",
      `max_new_tokens: a KV cache of ${capacity} tokens needs ${layerBytes} bytes per layer, ` +
        `above the device's largest binding (${ctx.maxBindingBytes} bytes)`,
    );
  }
  const budget = o.gpuMemoryBudgetBytes ?? 0;
  if (budget > 0) {
    // The frozen base and the adapter as training estimates them, plus the decoder's own buffers.
    const spec = adapter?.spec ?? NO_LORA;
    const est = estimateMemory(cfg, {
      maxBindingBytes: ctx.maxBindingBytes,
      lora: spec,
      microBatchSize: 1,
      maxSeqLen: 2,
      gradientCheckpointing: false,
      optimizerGpuBudgetBytes: 0,
      ...quantSettingsOf(rawConfig),
    });
    const need = est.bytes.base_weights + est.bytes.lora +
      decoderBytes(cfg, capacity, DECODE_CHUNK, spec.r, kvPrecision);
    if (need > budget) {
      throw new QloradError(
        "resource_exhausted",
        `generation needs an estimated ${need} bytes of GPU memory (base ` +
          `${est.bytes.base_weights}, KV cache of ${capacity} tokens and buffers), over the GPU ` +
          `memory budget of ${budget} bytes; lower max_new_tokens or shorten the prompt`,
      );
    }
  }
  const model = await loadBaseModel(ctx, o.baseModelDir, {
    signal,
    onProgress: (tensor, index, total) => hooks.progress?.(`loading ${tensor}`, index, total),
  });
  const layout = adapter?.layout ?? new LoraLayout(cfg, NO_LORA);
  // A layout without targets has no floats; a binding still needs a few bytes.
  const flat = adapter?.flat.length ? adapter.flat : new Float32Array(1);
  // Made inside the try: a failed allocation must not leave the model on the device.
  let params: GpuBuffer | undefined;
  let decoder: KvDecoder | undefined;
  try {
    params = ctx.upload("lora_params", "lora", flat);
    decoder = new KvDecoder(ctx, model, layout, params, {
      capacity,
      chunk: DECODE_CHUNK,
      kvPrecision,
    });
    hooks.progress?.("generating");
    const eosIds = s.ignoreEos ? [] : [
      ...new Set([
        ...cfg.eosTokenIds,
        ...(tokenizer.eosId !== undefined ? [tokenizer.eosId] : []),
      ]),
    ];
    const r = await generateTokens(decoder, promptIds, {
      maxNewTokens: s.maxNewTokens,
      sampling: s,
      seed: s.seed,
      eosIds,
      stopStrings: s.stop,
      decode: (ids) => tokenizer.decode(ids),
      signal,
      onToken: (id, text) => hooks.token?.(id, text),
    });
    const generated = r.tokens.length;
    return {
      text: r.text,
      finishReason: r.finishReason,
      promptTokens: r.promptTokens,
      tokenIds: r.tokens,
      prefillTokensPerSecond: r.prefillMs > 0 ? r.promptTokens / (r.prefillMs / 1000) : 0,
      // The first token comes from the prefill's logits: decode steps are generated - 1.
      decodeTokensPerSecond: generated > 1 && r.decodeMs > 0
        ? (generated - 1) / (r.decodeMs / 1000)
        : 0,
    };
  } finally {
    decoder?.destroy();
    params?.destroy();
    model.destroy();
  }
}
