/**
 * Greedy decoding for evaluation samples, so a person can see what an adapter learned. No KV
 * cache: each new token reruns the prefix (fine for the short samples this is for).
 */
import type { TrainingEngine } from "./engine.ts";
import { encodeLmHeadLogits } from "../kernels/cross_entropy.ts";
import type { GpuBuffer } from "../gpu/context.ts";
import { throwIfAborted } from "../util/errors.ts";

/** Logits [vocab] of the token after `tokens`. */
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
    params: engine.params,
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

export async function greedyGenerate(
  engine: TrainingEngine,
  prompt: number[],
  maxNewTokens: number,
  stopIds: number[],
  signal?: AbortSignal,
): Promise<number[]> {
  const { ctx, model } = engine;
  const maxLen = engine.options.maxShape.seq;
  const row = ctx.createBuffer({
    label: "gen_row",
    category: "scratch",
    size: model.cfg.hidden * 4,
  });
  const logits = ctx.createBuffer({
    label: "gen_logits",
    category: "scratch",
    size: model.cfg.vocab * 4,
  });
  try {
    const tokens = prompt.slice(-maxLen);
    const out: number[] = [];
    for (let i = 0; i < maxNewTokens; i++) {
      throwIfAborted(signal);
      if (tokens.length >= maxLen) tokens.shift();
      const l = await nextTokenLogits(engine, tokens, { row, logits });
      let best = 0;
      for (let v = 1; v < l.length; v++) if (l[v] > l[best]) best = v;
      out.push(best);
      if (stopIds.includes(best)) break;
      tokens.push(best);
    }
    return out;
  } finally {
    row.destroy();
    logits.destroy();
  }
}
