/**
 * Generation with a KV cache (decode.ts): the prompt runs through the model once (prefill), then
 * each new token costs one token's forward. Tokens are chosen on the host from the logits
 * (sampling.ts: greedy, temperature, top-k, top-p, seeded); the generation ends at an EOS token,
 * a stop string (text_stream.ts), max_new_tokens or the cache's end, and stops at the next token
 * when its signal aborts. Evaluate's samples (greedyGenerate) use the same path.
 *
 * nextTokenLogits is the uncached path kept for comparison: a full forward over the prefix
 * through the training graph.
 */
import type { TrainingEngine } from "./engine.ts";
import { encodeLmHeadLogits } from "../kernels/cross_entropy.ts";
import type { GpuBuffer } from "../gpu/context.ts";
import { throwIfAborted } from "../util/errors.ts";
import { Rng } from "../util/random.ts";
import { KvDecoder } from "./decode.ts";
import { GREEDY, sampleToken, type SamplingSettings } from "./sampling.ts";
import { TextStream } from "./text_stream.ts";

/** Logits [vocab] of the token after `tokens`, by a full forward over them (no cache). */
export async function nextTokenLogits(
  engine: TrainingEngine,
  tokens: number[],
  scratch: { row: GpuBuffer; logits: GpuBuffer },
): Promise<Float32Array> {
  const { ctx, graph, model } = engine;
  const cfg = model.cfg;
  const { shape } = graph.upload({ tokens: [tokens], labels: [tokens.map(() => -100)] });
  await graph.encode({
    shape,
    params: engine.loraParams,
    grads: engine.grads,
    train: false,
    gradScale: 0,
    seed: 0,
    streamBase: 0,
  });
  const batch = ctx.batch("next-token");
  const last = (tokens.length - 1) * cfg.hidden * 4;
  batch.copy(graph.finalNormed, last, scratch.row, 0, cfg.hidden * 4);
  await encodeLmHeadLogits(ctx, batch, {
    h: scratch.row,
    weight: model.lmHead,
    out: scratch.logits,
    rows: 1,
    hidden: cfg.hidden,
  });
  batch.submit();
  return await ctx.readF32(scratch.logits, 0, cfg.vocab);
}

/** Why a generation ended. */
export type FinishReason = "eos" | "stop" | "length";

export interface GenerateOptions {
  maxNewTokens: number;
  sampling: SamplingSettings;
  /** Seed of the draws (unused when greedy). */
  seed: number;
  /** Token ids that end the generation (not part of the text). */
  eosIds: readonly number[];
  /** Texts that end the generation; the text stops just before the first one. */
  stopStrings?: readonly string[];
  /** Token ids to text; without it there is no text (and stop strings cannot match). */
  decode?: (ids: number[]) => string;
  signal?: AbortSignal;
  /** Called per generated token with the text now safe to send (may be empty). */
  onToken?: (tokenId: number, text: string) => void;
}

export interface GenerateResult {
  /** Generated ids, an ending EOS included. */
  tokens: number[];
  /** The generated text (up to a stop string). */
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** Wall time of the prefill and of the decode steps (for tokens/s). */
  prefillMs: number;
  decodeMs: number;
}

/** Generates from `prompt` with `decoder` (its cache is reset first). */
export async function generateTokens(
  decoder: KvDecoder,
  prompt: readonly number[],
  o: GenerateOptions,
): Promise<GenerateResult> {
  const rng = new Rng(o.seed);
  const text = o.decode ? new TextStream(o.decode, o.stopStrings ?? []) : undefined;
  const tokens: number[] = [];
  decoder.reset();
  throwIfAborted(o.signal);
  const t0 = performance.now();
  let logits = await decoder.step(prompt);
  const t1 = performance.now();
  let finishReason: FinishReason = "length";
  for (let i = 0; i < o.maxNewTokens; i++) {
    throwIfAborted(o.signal);
    const id = sampleToken(logits, o.sampling, rng);
    tokens.push(id);
    if (o.eosIds.includes(id)) {
      finishReason = "eos";
      o.onToken?.(id, text?.flush() ?? "");
      break;
    }
    const piece = text?.push(id);
    if (piece?.stopped) {
      finishReason = "stop";
      o.onToken?.(id, piece.text);
      break;
    }
    const last = i + 1 === o.maxNewTokens || decoder.length >= decoder.cache.capacity;
    o.onToken?.(id, (piece?.text ?? "") + (last ? text?.flush() ?? "" : ""));
    if (last) break;
    logits = await decoder.step([id]);
  }
  return {
    tokens,
    text: text?.text ?? "",
    finishReason,
    promptTokens: prompt.length,
    prefillMs: t1 - t0,
    decodeMs: performance.now() - t1,
  };
}

/**
 * Greedy continuation of `prompt` for Evaluate's samples, on the engine's model and adapter:
 * the new ids, a stop id that ended it included. A prompt too long for max_position_embeddings
 * keeps its last tokens.
 */
export async function greedyGenerate(
  engine: TrainingEngine,
  prompt: number[],
  maxNewTokens: number,
  stopIds: number[],
  signal?: AbortSignal,
): Promise<number[]> {
  const cfg = engine.model.cfg;
  const kept = prompt.slice(-Math.max(1, cfg.maxPositions - maxNewTokens));
  const decoder = new KvDecoder(engine.ctx, engine.model, engine.layout, engine.params, {
    capacity: Math.min(cfg.maxPositions, kept.length + maxNewTokens),
    // Samples are short: an f32 cache keeps them the exact f32 continuation on every adapter.
    kvPrecision: "f32",
  });
  try {
    const r = await generateTokens(decoder, kept, {
      maxNewTokens,
      sampling: GREEDY,
      seed: 0,
      eosIds: stopIds,
      signal,
    });
    return r.tokens;
  } finally {
    decoder.destroy();
  }
}
