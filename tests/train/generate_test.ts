/**
 * Generation on the GPU: the uncached forward and the KV-cached decoder against the float64
 * reference and each other, greedy continuations, EOS, stop strings, max_new_tokens, seeds.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { randomBatch, refConfig, relErr, TINY, tinySetup } from "../model/setup.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { generateTokens, greedyGenerate, nextTokenLogits } from "../../src/train/generate.ts";
import { decoderBytes, KvDecoder } from "../../src/train/decode.ts";
import { argmax } from "../../src/train/sampling.ts";
import { CancelledError } from "../../src/util/errors.ts";
import { join } from "node:path";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { loadBaseModel } from "../../src/model/load.ts";
import { forwardBackward } from "../reference/llama_f64.ts";
import type { LoraSpec } from "../../src/model/lora.ts";

const SPEC: LoraSpec = { r: 4, alpha: 8, dropout: 0, targets: ["q", "v", "up"], useRslora: false };

gpuTest("next-token logits and greedy decoding match the float64 reference", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 31, SPEC);
  const engine = new TrainingEngine(ctx, setup.model, {
    lora: SPEC,
    maxShape: { batch: 1, seq: 24 },
    gradientCheckpointing: false,
    seed: 1,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
    evalOnly: true,
  });
  try {
    const prompt = randomBatch(TINY.vocab, [9], 5).tokens[0];
    const row = ctx.createBuffer({ label: "r", category: "scratch", size: TINY.hidden * 4 });
    const out = ctx.createBuffer({ label: "l", category: "scratch", size: TINY.vocab * 4 });
    const got = await nextTokenLogits(engine, prompt, { row, logits: out });
    row.destroy();
    out.destroy();
    const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, {
      tokens: [prompt],
      labels: [prompt.map(() => -100)],
    }, { returnLogits: true });
    const want = ref.logits![0].subarray(8 * TINY.vocab, 9 * TINY.vocab);
    assert.ok(relErr(got, want) < 1e-5, `logits rel err ${relErr(got, want)}`);

    // Greedy continuation: each step's argmax from the reference on the growing sequence.
    const generated = await greedyGenerate(engine, prompt, 4, []);
    const seq = [...prompt];
    for (const t of generated) {
      const r = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, {
        tokens: [seq],
        labels: [seq.map(() => -100)],
      }, { returnLogits: true });
      const l = r.logits![0].subarray((seq.length - 1) * TINY.vocab, seq.length * TINY.vocab);
      let best = 0;
      for (let v = 1; v < l.length; v++) if (l[v] > l[best]) best = v;
      assert.equal(t, best);
      seq.push(t);
    }
    assert.equal(generated.length, 4);
  } finally {
    engine.destroy();
    setup.model.destroy();
  }
});

gpuTest(
  "evaluation runs without LoRA dropout even when the adapter trained with it",
  async (ctx) => {
    const spec: LoraSpec = { ...SPEC, dropout: 0.3 };
    const setup = tinySetup(ctx, TINY, 41, spec);
    const engine = new TrainingEngine(ctx, setup.model, {
      lora: spec,
      maxShape: { batch: 2, seq: 16 },
      gradientCheckpointing: false,
      seed: 1,
      maxGradNorm: 0,
      optimizerGpuBudgetBytes: 0,
      adapter: setup.adapter,
      evalOnly: true,
    });
    try {
      const batch = randomBatch(TINY.vocab, [16, 11], 9);
      const got = await engine.evaluate(batch);
      const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, batch);
      assert.equal(got.tokens, ref.count);
      assert.ok(
        Math.abs(got.lossSum - ref.lossSum) <= 1e-5 * ref.lossSum,
        `${got.lossSum} vs ${ref.lossSum}`,
      );
      assert.equal(got.correct, ref.correct);
    } finally {
      engine.destroy();
      setup.model.destroy();
    }
  },
);

const CACHE_SPEC: LoraSpec = {
  r: 4,
  alpha: 8,
  dropout: 0,
  targets: ["q", "k", "v", "o", "down"],
  useRslora: false,
};

function evalEngine(ctx: Parameters<typeof tinySetup>[0], setup: ReturnType<typeof tinySetup>) {
  return new TrainingEngine(ctx, setup.model, {
    lora: CACHE_SPEC,
    maxShape: { batch: 1, seq: 24 },
    gradientCheckpointing: false,
    seed: 1,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    adapter: setup.adapter,
    evalOnly: true,
  });
}

// Both sides are f32 over the same kernels' arithmetic but different row blockings and summation
// orders (one row vs the whole prefix, attention over the cache vs the packed rows); the logits
// are sums of ~80-term dot products after two layers, so they agree to a few f32 ulps of their
// scale. 1e-5 of the largest logit is ~80 ulps; the reference check (f32 vs float64) is the same
// bound generate's first test uses.
const CACHE_TOL = 1e-5;

gpuTest("KV-cached logits equal the uncached forward and the float64 reference", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 53, CACHE_SPEC);
  const engine = evalEngine(ctx, setup);
  // A chunk of 4 rows: the 11-token prompt prefills in three pieces (4, 4, 3).
  const decoder = new KvDecoder(ctx, setup.model, engine.layout, engine.params, {
    capacity: 17,
    chunk: 4,
    kvPrecision: "f32",
  });
  const row = ctx.createBuffer({ label: "r", category: "scratch", size: TINY.hidden * 4 });
  const out = ctx.createBuffer({ label: "l", category: "scratch", size: TINY.vocab * 4 });
  try {
    const seq = randomBatch(TINY.vocab, [11], 77).tokens[0];
    let cached = await decoder.step(seq);
    for (let step = 0; step < 5; step++) {
      const uncached = await nextTokenLogits(engine, seq, { row, logits: out });
      const ref = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, {
        tokens: [seq],
        labels: [seq.map(() => -100)],
      }, { returnLogits: true });
      const want = ref.logits![0].subarray((seq.length - 1) * TINY.vocab);
      assert.ok(relErr(cached, uncached) < CACHE_TOL, `step ${step}: cached vs uncached`);
      assert.ok(relErr(cached, want) < CACHE_TOL, `step ${step}: cached vs float64`);
      // Feed a token that is not the argmax too, so the cache sees arbitrary history.
      const next = step % 2 === 0 ? argmax(cached) : (seq[seq.length - 1] * 7 + 3) % TINY.vocab;
      seq.push(next);
      cached = await decoder.step([next]);
    }
    assert.equal(decoder.length, 16);
    await assert.rejects(decoder.step([1, 2]), /exceed the KV cache/);
  } finally {
    row.destroy();
    out.destroy();
    decoder.destroy();
    engine.destroy();
    setup.model.destroy();
  }
});

gpuTest("Qwen2 (q/k/v biases): KV-cached logits equal the uncached forward", async (ctx) => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-generate-" });
  try {
    await makeTinyLlama(join(dir, "qwen2"), {
      modelType: "qwen2",
      trainRecords: 4,
      evalRecords: 4,
    });
    const model = await loadBaseModel(ctx, join(dir, "qwen2"));
    const spec: LoraSpec = { ...CACHE_SPEC, targets: ["q", "k", "v"] };
    const engine = new TrainingEngine(ctx, model, {
      lora: spec,
      maxShape: { batch: 1, seq: 16 },
      gradientCheckpointing: false,
      seed: 3,
      maxGradNorm: 0,
      optimizerGpuBudgetBytes: 0,
      evalOnly: true,
    });
    const decoder = new KvDecoder(ctx, model, engine.layout, engine.params, {
      capacity: 16,
      chunk: 5,
      kvPrecision: "f32",
    });
    const row = ctx.createBuffer({ label: "r", category: "scratch", size: model.cfg.hidden * 4 });
    const out = ctx.createBuffer({ label: "l", category: "scratch", size: model.cfg.vocab * 4 });
    try {
      assert.ok(model.layers[0].biases?.k, "the fixture has a k bias");
      const seq = randomBatch(model.cfg.vocab, [12], 17).tokens[0];
      let cached = await decoder.step(seq);
      for (let step = 0; step < 3; step++) {
        const uncached = await nextTokenLogits(engine, seq, { row, logits: out });
        assert.ok(
          relErr(cached, uncached) < CACHE_TOL,
          `step ${step}: ${relErr(cached, uncached)}`,
        );
        seq.push(argmax(cached));
        cached = await decoder.step([seq[seq.length - 1]]);
      }
    } finally {
      row.destroy();
      out.destroy();
      decoder.destroy();
      engine.destroy();
      model.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

gpuTest(
  "decoderBytes covers what a decoder allocates, its attention scratch included",
  async (ctx) => {
    const setup = tinySetup(ctx, TINY, 61, CACHE_SPEC);
    const engine = evalEngine(ctx, setup);
    try {
      for (const kvPrecision of ["f32", "f16"] as const) {
        const before = ctx.memory.total;
        const d = new KvDecoder(ctx, setup.model, engine.layout, engine.params, {
          capacity: 40,
          chunk: 16,
          kvPrecision,
        });
        // A step creates (or grows) the per-context attention scratch, unless an earlier decoder
        // already made one big enough.
        await d.step(randomBatch(TINY.vocab, [16], 3).tokens[0]);
        const used = ctx.memory.total - before;
        const estimate = decoderBytes(TINY, 40, 16, CACHE_SPEC.r, kvPrecision);
        d.destroy();
        // An upper bound, and not a loose one: within the 16-byte padding of each buffer and the
        // scratch's worst case (sized for any context, this one needs less).
        assert.ok(used <= estimate, `${kvPrecision}: allocated ${used} > estimated ${estimate}`);
        assert.ok(
          estimate - used < 16384 * (TINY.headDim + 2) * 4 + 2048,
          `${kvPrecision}: ${used} vs ${estimate}`,
        );
      }
    } finally {
      engine.destroy();
      setup.model.destroy();
    }
  },
);

gpuTest("an f16 KV cache stays within the rounding of its keys and values", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 53, CACHE_SPEC);
  const engine = evalEngine(ctx, setup);
  const make = (kvPrecision: "f32" | "f16") =>
    new KvDecoder(ctx, setup.model, engine.layout, engine.params, {
      capacity: 20,
      chunk: 8,
      kvPrecision,
    });
  const f32 = make("f32");
  const f16 = make("f16");
  try {
    assert.equal(f16.cache.precision, "f16");
    const seq = randomBatch(TINY.vocab, [13], 91).tokens[0];
    let a = await f32.step(seq);
    let b = await f16.step(seq);
    let worst = 0;
    for (let step = 0; step < 6; step++) {
      worst = Math.max(worst, relErr(b, a));
      const next = argmax(a);
      a = await f32.step([next]);
      b = await f16.step([next]);
    }
    // Halves round k and v by at most 2^-11 (4.9e-4) relative; attention averages v, so each
    // layer's output moves by about that much of its scale, and two layers plus the lm_head
    // carry it to the logits at the same order (measured: 2.1e-4..4.2e-4 over these steps).
    // 2e-3 (4 roundings' worth) bounds it; an f32 cache read as halves (or halves read as f32)
    // is off by orders of magnitude more.
    assert.ok(worst < 2e-3, `f16 cache vs f32 cache: rel err ${worst}`);
    assert.ok(worst > 0, "an f16 cache that equals the f32 one bit for bit is not holding halves");
  } finally {
    f32.destroy();
    f16.destroy();
    engine.destroy();
    setup.model.destroy();
  }
});

gpuTest("generation ends at EOS, a stop string or max_new_tokens; seeds reproduce", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 59, CACHE_SPEC);
  const engine = evalEngine(ctx, setup);
  const decoder = new KvDecoder(ctx, setup.model, engine.layout, engine.params, {
    capacity: 30,
    kvPrecision: "f32",
  });
  // A stand-in detokenizer: token id -> one letter, so texts are predictable.
  const decode = (ids: number[]) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join("");
  const prompt = randomBatch(TINY.vocab, [7], 5).tokens[0];
  const greedy = { temperature: 0, topK: 0, topP: 1 };
  try {
    const full = await generateTokens(decoder, prompt, {
      maxNewTokens: 8,
      sampling: greedy,
      seed: 0,
      eosIds: [],
      decode,
    });
    assert.equal(full.finishReason, "length");
    assert.equal(full.tokens.length, 8);
    assert.equal(full.text, decode(full.tokens));
    // The same greedy continuation from the float64 reference, token by token.
    const seq = [...prompt];
    for (const t of full.tokens) {
      const r = forwardBackward(refConfig(TINY), setup.refWeights, setup.refLora, {
        tokens: [seq],
        labels: [seq.map(() => -100)],
      }, { returnLogits: true });
      assert.equal(t, argmax(r.logits![0].subarray((seq.length - 1) * TINY.vocab)));
      seq.push(t);
    }

    // EOS: the third greedy token ends it; it is returned but not part of the text.
    const eos = await generateTokens(decoder, prompt, {
      maxNewTokens: 8,
      sampling: greedy,
      seed: 0,
      eosIds: [full.tokens[2]],
      decode,
    });
    const firstEos = full.tokens.indexOf(full.tokens[2]);
    assert.equal(eos.finishReason, "eos");
    assert.deepEqual(eos.tokens, full.tokens.slice(0, firstEos + 1));
    assert.equal(eos.text, decode(full.tokens.slice(0, firstEos)));

    // A stop string made of tokens 3 and 4's letters: the text stops just before it, and the
    // streamed pieces add up to exactly that text.
    const stop = decode(full.tokens.slice(3, 5));
    const pieces: string[] = [];
    const stopped = await generateTokens(decoder, prompt, {
      maxNewTokens: 8,
      sampling: greedy,
      seed: 0,
      eosIds: [],
      stopStrings: [stop],
      decode,
      onToken: (_, text) => pieces.push(text),
    });
    const cut = full.text.indexOf(stop);
    assert.equal(stopped.finishReason, "stop");
    assert.equal(stopped.text, full.text.slice(0, cut));
    assert.equal(pieces.join(""), stopped.text);

    // Sampling: the same seed gives the same tokens; the draws stay within top-k of each step.
    const sampled = { temperature: 1.3, topK: 5, topP: 0.95 };
    const a = await generateTokens(decoder, prompt, {
      maxNewTokens: 10,
      sampling: sampled,
      seed: 1234,
      eosIds: [],
    });
    const b = await generateTokens(decoder, prompt, {
      maxNewTokens: 10,
      sampling: sampled,
      seed: 1234,
      eosIds: [],
    });
    assert.deepEqual(a.tokens, b.tokens);
    const c = await generateTokens(decoder, prompt, {
      maxNewTokens: 10,
      sampling: sampled,
      seed: 99,
      eosIds: [],
    });
    assert.notDeepEqual(a.tokens, c.tokens);

    // Cancelled while generating: it stops at the next token.
    const ac = new AbortController();
    let seen = 0;
    await assert.rejects(
      generateTokens(decoder, prompt, {
        maxNewTokens: 8,
        sampling: greedy,
        seed: 0,
        eosIds: [],
        signal: ac.signal,
        onToken: () => {
          if (++seen === 2) ac.abort();
        },
      }),
      (e) => e instanceof CancelledError,
    );
    assert.equal(seen, 2);
  } finally {
    decoder.destroy();
    engine.destroy();
    setup.model.destroy();
  }
});

closeGpuAfterTests();
