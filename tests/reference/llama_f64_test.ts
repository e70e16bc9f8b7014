/**
 * Self-checks of the float64 references: finite differences against the analytical LoRA
 * gradients, an independent plain forward, hand-computed primitives, packing, RoPE scaling and
 * AdamW / clipping against hand-computed steps.
 */
import assert from "node:assert/strict";
import { Rng } from "../../src/util/random.ts";
import {
  attentionForward,
  crossEntropy,
  forwardBackward,
  IGNORE_INDEX,
  LORA_MODULES,
  loraKey,
  moduleShape,
  randomRefSetup,
  type RefBatch,
  type RefConfig,
  refConfigFromHf,
  type RefLora,
  type RefOptions,
  type RefWeights,
} from "./llama_f64.ts";
import { rmsnormF64, ropeF64, ropeInvFreqF64, swigluBackwardF64, swigluF64 } from "./ops_f64.ts";
import { adamwStep, clipByGlobalNorm, newAdamWState } from "./adamw_f64.ts";

const TINY: RefConfig = {
  hidden: 24,
  intermediate: 40,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  headDim: 6,
  vocab: 37,
  rmsEps: 1e-6,
  ropeTheta: 10000,
  tieEmbeddings: false,
};

/** Two sequences of lengths 7 and 5 with some labels masked. */
function tinyBatch(seed: number, vocab: number): RefBatch {
  const rng = new Rng(seed);
  const tokens = [7, 5].map((T) => Array.from({ length: T }, () => rng.int(vocab)));
  const labels = tokens.map((row) => row.map(() => rng.int(vocab)));
  labels[0][0] = IGNORE_INDEX;
  labels[0][4] = IGNORE_INDEX;
  labels[1][4] = IGNORE_INDEX;
  return { tokens, labels };
}

function closeRel(actual: number, expected: number, tol: number, what: string): void {
  const err = Math.abs(actual - expected) / Math.max(Math.abs(expected), 1e-300);
  assert.ok(err < tol, `${what}: got ${actual}, expected ${expected}, rel err ${err}`);
}

function closeAbs(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tol,
    `${what}: got ${actual}, expected ${expected}, diff ${Math.abs(actual - expected)}`,
  );
}

/**
 * Central differences (h = 1e-6) on `perModule` random A and B coordinates of every targeted
 * module type; the relative error to the analytical gradient must be < 1e-6. The difference
 * quotient carries about 3e-10 of roundoff (ulp(loss) / h), so callers keep gradients above 1e-4
 * (small LoRA entries with a large scaling) and the check refuses anything smaller.
 */
function checkFiniteDifferences(
  cfg: RefConfig,
  weights: RefWeights,
  lora: RefLora,
  batch: RefBatch,
  opts: RefOptions,
  seed: number,
  perModule: number,
): void {
  const h = 1e-6;
  const rng = new Rng(seed);
  const base = forwardBackward(cfg, weights, lora, batch, opts);
  const loss = () => forwardBackward(cfg, weights, lora, batch, opts).loss;
  let checked = 0;
  for (const m of lora.targets) {
    for (const which of ["A", "B"] as const) {
      for (let n = 0; n < perModule; n++) {
        const key = loraKey(rng.int(cfg.layers), m);
        const param = lora[which].get(key)!;
        const grad = (which === "A" ? base.gradA : base.gradB).get(key)!;
        const i = rng.int(param.length);
        const saved = param[i];
        param[i] = saved + h;
        const up = loss();
        param[i] = saved - h;
        const down = loss();
        param[i] = saved;
        const fd = (up - down) / (2 * h);
        assert.ok(Math.abs(grad[i]) > 1e-4, `${which} ${key}[${i}] gradient ${grad[i]} too small`);
        closeRel(grad[i], fd, 1e-6, `d loss / d ${which} ${key}[${i}]`);
        checked++;
      }
    }
  }
  assert.equal(checked, lora.targets.length * 2 * perModule);
}

Deno.test("finite differences match LoRA gradients for every module type", () => {
  // Scaling 20000 with A, B of std 0.001 is the same function as scaling 2 with std 0.1, but the
  // gradients are 100x larger, well above the roundoff floor of a central difference.
  const { weights, lora } = randomRefSetup(TINY, 11, {
    r: 4,
    alpha: 80000,
    targets: [...LORA_MODULES],
    loraStd: 0.001,
  });
  assert.equal(lora.scaling, 20000);
  const batch = tinyBatch(12, TINY.vocab);
  checkFiniteDifferences(TINY, weights, lora, batch, {}, 13, 3);
});

Deno.test("finite differences: tied embeddings, llama3 RoPE, packing, dropout, rsLoRA", () => {
  const cfg: RefConfig = {
    ...TINY,
    tieEmbeddings: true,
    ropeTheta: 500000,
    ropeScaling: {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 64,
    },
  };
  const { weights, lora } = randomRefSetup(cfg, 21, {
    r: 3,
    alpha: 20000 * Math.sqrt(3),
    targets: ["q", "v", "o", "down"],
    useRslora: true,
    loraStd: 0.001,
  });
  closeRel(lora.scaling, 20000, 1e-15, "rsLoRA scaling alpha / sqrt(r)");
  assert.equal(weights.lmHead, undefined);
  const batch = tinyBatch(22, cfg.vocab);
  batch.positions = [[0, 1, 2, 0, 1, 2, 3], [5, 6, 7, 8, 9]];
  batch.segments = [[0, 0, 0, 1, 1, 1, 1], [2, 2, 2, 2, 2]];
  // Deterministic dropout with p = 0.25: multiplier 0 or 1/(1-p) from a hash of the coordinates.
  const dropoutMask = (key: string, seq: number, t: number, i: number) => {
    const rng = new Rng(
      (key.length * 7919 + key.charCodeAt(key.length - 1)) ^ (seq * 104729) ^
        (t * 1299709) ^ (i * 15485863),
    );
    return rng.next() < 0.25 ? 0 : 1 / 0.75;
  };
  checkFiniteDifferences(cfg, weights, lora, batch, { dropoutMask, lossDenominator: 5 }, 23, 2);
});

/**
 * A plain forward written independently of llama_f64.ts (per-token arrays, literal rotate_half,
 * explicit repeat_kv), returning the summed cross-entropy.
 */
function plainLossSum(cfg: RefConfig, w: RefWeights, tokens: number[], labels: number[]): number {
  const H = cfg.hidden, hd = cfg.headDim, nq = cfg.heads, nkv = cfg.kvHeads;
  const matvec = (W: ArrayLike<number>, x: number[], out: number) => {
    const inn = x.length;
    return Array.from(
      { length: out },
      (_, o) => x.reduce((acc, xi, i) => acc + W[o * inn + i] * xi, 0),
    );
  };
  const norm = (x: number[], wt: Float64Array) => {
    const ms = x.reduce((a, b) => a + b * b, 0) / x.length;
    return x.map((xi, i) => wt[i] * xi / Math.sqrt(ms + cfg.rmsEps));
  };
  const invFreq = Array.from({ length: hd / 2 }, (_, i) => Math.pow(cfg.ropeTheta, -(2 * i) / hd));
  const rope = (x: number[], pos: number) => {
    const ang = [...invFreq, ...invFreq].map((f) => f * pos);
    const rot = [...x.slice(hd / 2).map((a) => -a), ...x.slice(0, hd / 2)];
    return x.map((xi, i) => xi * Math.cos(ang[i]) + rot[i] * Math.sin(ang[i]));
  };
  const heads = (x: number[], n: number) =>
    Array.from({ length: n }, (_, h) => x.slice(h * hd, (h + 1) * hd));
  // Qwen2: nn.Linear(bias=True) on q, k, v adds b after W x.
  const withBias = (y: number[], b: Float64Array | undefined) =>
    y.map((yi, o) => yi + (b?.[o] ?? 0));
  let xs = tokens.map((tok) => Array.from(w.embed.subarray(tok * H, (tok + 1) * H)));
  for (const L of w.layers) {
    const n1 = xs.map((x) => norm(x, L.inputNorm));
    const q = n1.map((x, t) =>
      heads(withBias(matvec(L.q, x, nq * hd), L.bias?.q), nq).map((v) => rope(v, t))
    );
    const kSmall = n1.map((x, t) =>
      heads(withBias(matvec(L.k, x, nkv * hd), L.bias?.k), nkv).map((v) => rope(v, t))
    );
    const vSmall = n1.map((x) => heads(withBias(matvec(L.v, x, nkv * hd), L.bias?.v), nkv));
    // repeat_kv: kv head j serves query heads j*groups .. (j+1)*groups-1
    const rep = (kv: number[][]) => kv.flatMap((v) => Array.from({ length: nq / nkv }, () => v));
    const k = kSmall.map(rep);
    const v = vSmall.map(rep);
    const ctx = q.map((qt, t) =>
      qt.flatMap((qh, h) => {
        const scores = k.slice(0, t + 1).map((ks) =>
          ks[h].reduce((a, kd, d) => a + kd * qh[d], 0) / Math.sqrt(hd)
        );
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        return qh.map((_, d) => e.reduce((a, es, s) => a + es / z * v[s][h][d], 0));
      })
    );
    const hs = ctx.map((c, t) => matvec(L.o, c, H).map((o, i) => o + xs[t][i]));
    xs = hs.map((h) => {
      const n2 = norm(h, L.postNorm);
      const g = matvec(L.gate, n2, cfg.intermediate);
      const u = matvec(L.up, n2, cfg.intermediate);
      const a = g.map((gi, i) => gi / (1 + Math.exp(-gi)) * u[i]);
      return matvec(L.down, a, H).map((d, i) => d + h[i]);
    });
  }
  const head = cfg.tieEmbeddings ? w.embed : w.lmHead!;
  let sum = 0;
  xs.forEach((x, t) => {
    if (labels[t] === IGNORE_INDEX) return;
    const logits = matvec(head, norm(x, w.norm), cfg.vocab);
    const mx = Math.max(...logits);
    const lse = mx + Math.log(logits.reduce((a, l) => a + Math.exp(l - mx), 0));
    sum += lse - logits[labels[t]];
  });
  return sum;
}

Deno.test("with B = 0 the loss equals a plain forward without LoRA", () => {
  const { weights, lora } = randomRefSetup(TINY, 31, {
    r: 4,
    alpha: 16,
    targets: [...LORA_MODULES],
  });
  for (const b of lora.B.values()) b.fill(0);
  const batch = tinyBatch(32, TINY.vocab);
  const withLora = forwardBackward(TINY, weights, lora, batch);
  const without = forwardBackward(TINY, weights, null, batch);
  assert.equal(withLora.loss, without.loss);
  assert.equal(withLora.count, 9);
  const plain = batch.tokens.reduce(
    (acc, toks, s) => acc + plainLossSum(TINY, weights, toks, batch.labels[s]),
    0,
  );
  closeRel(withLora.lossSum, plain, 1e-12, "loss sum vs independent plain forward");
  closeRel(withLora.loss, plain / 9, 1e-12, "mean loss");
  // With B = 0, dA = scaling * B^T dy * x = 0 exactly, while dB is live.
  for (const [key, g] of withLora.gradA) assert.ok(g.every((x) => x === 0), `gradA ${key}`);
  for (const [key, g] of withLora.gradB) assert.ok(g.some((x) => x !== 0), `gradB ${key}`);
});

Deno.test("q/k/v biases (Qwen2): plain forward agrees, finite differences match", () => {
  const cfg: RefConfig = { ...TINY, qkvBias: true, tieEmbeddings: true };
  const { weights, lora } = randomRefSetup(cfg, 41, {
    r: 4,
    alpha: 80000,
    targets: [...LORA_MODULES],
    loraStd: 0.001,
  });
  for (const L of weights.layers) {
    assert.deepEqual(Object.keys(L.bias!).sort(), ["k", "q", "v"]);
  }
  const batch = tinyBatch(42, cfg.vocab);
  const ref = forwardBackward(cfg, weights, null, batch);
  const plain = batch.tokens.reduce(
    (acc, toks, s) => acc + plainLossSum(cfg, weights, toks, batch.labels[s]),
    0,
  );
  closeRel(ref.lossSum, plain, 1e-12, "loss sum vs independent plain forward with biases");
  // The biases matter: without them the loss moves far more than any tolerance used on it.
  const noBias = {
    ...weights,
    layers: weights.layers.map((L) => ({ ...L, bias: undefined })),
  };
  const without = forwardBackward({ ...cfg, qkvBias: false }, noBias, null, batch);
  assert.ok(Math.abs(without.loss - ref.loss) > 1e-3 * ref.loss, `${without.loss} vs ${ref.loss}`);
  checkFiniteDifferences(cfg, weights, lora, batch, {}, 43, 2);
  // Biases the config does not declare are refused rather than silently used or ignored.
  assert.throws(
    () => forwardBackward({ ...cfg, qkvBias: false }, weights, null, batch),
    /layers\.0\.bias\.q but no such bias/,
  );
});

Deno.test("dropout mask of all zeros removes the LoRA path; accuracy counts argmax hits", () => {
  const { weights, lora } = randomRefSetup(TINY, 41, { r: 2, alpha: 4, targets: ["gate", "k"] });
  const batch = tinyBatch(42, TINY.vocab);
  const dropped = forwardBackward(TINY, weights, lora, batch, {
    dropoutMask: () => 0,
    returnLogits: true,
  });
  const base = forwardBackward(TINY, weights, null, batch);
  assert.equal(dropped.loss, base.loss);
  // Relabel every position with its argmax: all of them are then correct.
  const logits = dropped.logits!;
  const labels = batch.tokens.map((toks, s) =>
    toks.map((_, t) => {
      const row = Array.from(logits[s].subarray(t * TINY.vocab, (t + 1) * TINY.vocab));
      return row.indexOf(Math.max(...row));
    })
  );
  const res = forwardBackward(TINY, weights, lora, { ...batch, labels }, { dropoutMask: () => 0 });
  assert.equal(res.count, 12);
  assert.equal(res.correct, 12);
});

// One-vector views of the ops forwardBackward uses (tests/reference/ops_f64.ts).
const rmsNorm = (x: Float64Array, w: Float64Array, eps: number) =>
  rmsnormF64(x, w, 1, x.length, eps).y;
const ropeInvFreq = (cfg: RefConfig) => ropeInvFreqF64(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling);
const ropeRotate = (x: Float64Array, pos: number, invFreq: Float64Array) =>
  ropeF64(x, [pos], invFreq, 1, 1, x.length, false, false);
const silu = (x: number) => swigluF64([x], [1])[0];
const siluGrad = (x: number) => swigluBackwardF64([x], [1], [1]).dgate[0];

Deno.test("hand-checked primitives: RMSNorm, RoPE, attention, cross-entropy, SiLU", () => {
  // RMSNorm of [3, 4]: mean square 12.5.
  const y = rmsNorm(Float64Array.of(3, 4), Float64Array.of(1, 2), 0);
  closeAbs(y[0], 3 / Math.sqrt(12.5), 1e-15, "rmsnorm[0]");
  closeAbs(y[1], 8 / Math.sqrt(12.5), 1e-15, "rmsnorm[1]");
  const y2 = rmsNorm(Float64Array.of(2, -2, 2, -2), Float64Array.of(1, 1, 1, 1), 5);
  assert.deepEqual(Array.from(y2), [2 / 3, -2 / 3, 2 / 3, -2 / 3]);

  // RoPE at position 0 is the identity; any position preserves the norm.
  const rng = new Rng(51);
  const x = Float64Array.from({ length: 8 }, () => rng.normal());
  const inv = ropeInvFreq({ ...TINY, headDim: 8 });
  assert.deepEqual(Array.from(ropeRotate(x, 0, inv)), Array.from(x));
  const norm = (v: Float64Array) => Math.hypot(...v);
  closeRel(norm(ropeRotate(x, 13, inv)), norm(x), 1e-14, "rope norm");
  // headDim 2, frequency 1, angle pi/2: (a, b) -> (-b, a).
  const r = ropeRotate(Float64Array.of(3, 5), Math.PI / 2, Float64Array.of(1));
  closeAbs(r[0], -5, 1e-15, "rope x0");
  closeAbs(r[1], 3, 1e-15, "rope x1");

  // One token attends only to itself: output = v of its kv head (heads 0,1 -> kv 0; 2,3 -> kv 1).
  const hd = 3;
  const q = Float64Array.from({ length: 4 * hd }, () => rng.normal());
  const k = Float64Array.from({ length: 2 * hd }, () => rng.normal());
  const v = Float64Array.from({ length: 2 * hd }, () => rng.normal());
  const one = attentionForward(q, k, v, 1, 4, 2, hd, (t, s) => s <= t);
  const kvOf = [0, 0, 1, 1];
  for (let h = 0; h < 4; h++) {
    for (let d = 0; d < hd; d++) assert.equal(one.out[h * hd + d], v[kvOf[h] * hd + d]);
  }
  // Zero queries: uniform weights, so token 1 gets the mean of v0 and v1.
  const v2 = Float64Array.of(1, 2, 3, 5, 8, 13);
  const two = attentionForward(
    new Float64Array(2 * hd),
    Float64Array.of(1, 0, 0, 0, 1, 0),
    v2,
    2,
    1,
    1,
    hd,
    (t, s) => s <= t,
  );
  assert.deepEqual(Array.from(two.out), [1, 2, 3, 3, 5, 8]);

  // Cross-entropy of uniform logits is ln(vocab).
  closeAbs(crossEntropy(new Float64Array(37).fill(0.7), 5).loss, Math.log(37), 1e-14, "uniform CE");
  // Two classes, logits (0, ln 3): p = (1/4, 3/4).
  closeAbs(crossEntropy(Float64Array.of(0, Math.log(3)), 0).loss, Math.log(4), 1e-15, "CE");

  assert.equal(silu(0), 0);
  assert.equal(siluGrad(0), 0.5);
  closeAbs(silu(1), 1 / (1 + Math.exp(-1)), 1e-16, "silu(1)");
});

Deno.test("packing with segments and reset positions equals separate sequences", () => {
  const { weights, lora } = randomRefSetup(TINY, 61, {
    r: 4,
    alpha: 8,
    targets: [...LORA_MODULES],
  });
  const batch = tinyBatch(62, TINY.vocab);
  const separate = forwardBackward(TINY, weights, lora, batch);
  const packed = forwardBackward(TINY, weights, lora, {
    tokens: [[...batch.tokens[0], ...batch.tokens[1]]],
    labels: [[...batch.labels[0], ...batch.labels[1]]],
    positions: [[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4]],
    segments: [[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]],
  });
  closeRel(packed.lossSum, separate.lossSum, 1e-13, "packed loss sum");
  assert.equal(packed.count, separate.count);
  assert.equal(packed.correct, separate.correct);
  for (const [key, g] of separate.gradB) {
    const p = packed.gradB.get(key)!;
    g.forEach((gi, i) => closeAbs(p[i], gi, 1e-14, `packed gradB ${key}[${i}]`));
  }
  for (const [key, g] of separate.gradA) {
    const p = packed.gradA.get(key)!;
    g.forEach((gi, i) => closeAbs(p[i], gi, 1e-14, `packed gradA ${key}[${i}]`));
  }
});

Deno.test("RoPE scaling: linear factor 2 at 2p equals none at p; llama3 frequencies", () => {
  const linear: RefConfig = { ...TINY, ropeScaling: { type: "linear", factor: 2 } };
  const rng = new Rng(71);
  const x = Float64Array.from({ length: TINY.headDim }, () => rng.normal());
  for (const p of [1, 3, 10]) {
    assert.deepEqual(
      Array.from(ropeRotate(x, 2 * p, ropeInvFreq(linear))),
      Array.from(ropeRotate(x, p, ropeInvFreq(TINY))),
    );
  }
  // Whole model: doubled positions under linear factor 2 give the same loss.
  const { weights, lora } = randomRefSetup(TINY, 72, { r: 2, alpha: 4, targets: ["q", "k"] });
  const batch = tinyBatch(73, TINY.vocab);
  const plain = forwardBackward(TINY, weights, lora, batch);
  const doubled = forwardBackward(linear, weights, lora, {
    ...batch,
    positions: batch.tokens.map((row) => row.map((_, t) => 2 * t)),
  });
  closeRel(doubled.loss, plain.loss, 1e-14, "linear-scaled loss");

  // llama3, head_dim 8, theta 1e4: inv_freq (1, 0.1, 0.01, 0.001), wavelengths 2 pi / f =
  // (6.28, 62.8, 628, 6283). Original context 1000, low 1, high 4, factor 8: band edges
  // 1000 (low-frequency) and 250 (high-frequency). The first two are short (kept), the last is
  // long (divided by 8), and 628 is in between: smooth = (1000 / 628.3 - 1) / 3 =
  // (5 / pi - 1) / 3 = 0.19718314363965117, f = 0.01 * ((1 - smooth) / 8 + smooth).
  const llama3 = ropeInvFreq({
    ...TINY,
    headDim: 8,
    ropeScaling: {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 1000,
    },
  });
  const expected = [1, 0.1, 0.0029753525068469478, 0.000125];
  expected.forEach((e, i) => closeRel(llama3[i], e, 1e-13, `llama3 inv_freq[${i}]`));
});

Deno.test("refConfigFromHf applies transformers' defaults and parses rope_scaling", () => {
  const cfg = refConfigFromHf({
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 3,
    num_attention_heads: 8,
    vocab_size: 100,
  });
  assert.deepEqual(cfg, {
    hidden: 64,
    intermediate: 172,
    layers: 3,
    heads: 8,
    kvHeads: 8,
    headDim: 8,
    vocab: 100,
    rmsEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: undefined,
    tieEmbeddings: false,
  });
  const l3 = refConfigFromHf({
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 3,
    num_attention_heads: 8,
    num_key_value_heads: 2,
    head_dim: 16,
    vocab_size: 100,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    tie_word_embeddings: true,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  });
  assert.equal(l3.kvHeads, 2);
  assert.equal(l3.headDim, 16);
  assert.equal(l3.tieEmbeddings, true);
  assert.deepEqual(l3.ropeScaling, {
    type: "llama3",
    factor: 32,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  const lin = refConfigFromHf({
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 3,
    num_attention_heads: 8,
    vocab_size: 100,
    rope_scaling: { type: "linear", factor: 4 },
  });
  assert.deepEqual(lin.ropeScaling, { type: "linear", factor: 4 });
  assert.throws(
    () => refConfigFromHf({ hidden_size: 64, num_attention_heads: 8 }),
    /intermediate_size/,
  );
});

Deno.test("bad inputs are rejected with the field named", () => {
  const { weights, lora } = randomRefSetup(TINY, 81, { r: 2, alpha: 4, targets: ["up"] });
  const batch = tinyBatch(82, TINY.vocab);
  assert.throws(
    () => forwardBackward(TINY, weights, lora, { ...batch, labels: [[1, 2], batch.labels[1]] }),
    /labels\[0\]/,
  );
  const badTok: RefBatch = { tokens: [[TINY.vocab]], labels: [[0]] };
  assert.throws(() => forwardBackward(TINY, weights, lora, badTok), /tokens\[0\]\[0\]/);
  const [out, inn] = moduleShape(TINY, "up");
  lora.B.set(loraKey(1, "up"), new Float64Array(out * inn));
  assert.throws(() => forwardBackward(TINY, weights, lora, batch), /lora\.B 1\.up/);
});

Deno.test("AdamW (bitsandbytes 32-bit) matches a hand-computed two-step example", () => {
  const lr = 0.1, wd = 0.01, eps = 1e-8;
  const p = Float64Array.of(1, -2);
  const state = newAdamWState(2);
  const hyper = { lr, weightDecay: wd, eps };
  adamwStep(p, Float64Array.of(0.5, -1), state, hyper);
  // Step 1: m-hat = g, v-hat = g^2, so the step is lr * g / (|g| + eps), then decay by 1 - lr*wd.
  closeRel(p[0], (1 - lr * 0.5 / (0.5 + eps)) * (1 - lr * wd), 1e-15, "step 1 p0");
  closeRel(p[1], (-2 + lr * 1 / (1 + eps)) * (1 - lr * wd), 1e-15, "step 1 p1");
  assert.equal(p[0], 0.899100001998);
  assert.equal(state.step, 1);
  const p0After1 = p[0], p1After1 = p[1];
  adamwStep(p, Float64Array.of(-0.25, -1), state, hyper);
  // Step 2, element 0: m = 0.9*0.05 - 0.1*0.25 = 0.02, v = 0.999*0.00025 + 0.001*0.0625 =
  // 0.00031225; m-hat = 0.02 / 0.19, v-hat = 0.00031225 / 0.001999.
  const mHat = 0.02 / 0.19, vHat = 0.00031225 / 0.001999;
  closeRel(p[0], (p0After1 - lr * mHat / (Math.sqrt(vHat) + eps)) * (1 - lr * wd), 1e-13, "p0");
  closeRel(p[0], 0.8715938324071404, 1e-13, "step 2 p0 literal");
  // Element 1 sees a constant gradient -1: m-hat = -1, v-hat = 1 at every step.
  closeRel(p[1], (p1After1 + lr / (1 + eps)) * (1 - lr * wd), 1e-14, "step 2 p1");
  assert.equal(state.step, 2);

  // No weight decay: no multiplication at all.
  const q = Float64Array.of(0.3);
  adamwStep(q, Float64Array.of(2), newAdamWState(1), { lr: 0.01, eps: 0 });
  closeRel(q[0], 0.29, 1e-15, "no-decay step");
});

Deno.test("clipByGlobalNorm matches torch.nn.utils.clip_grad_norm_", () => {
  const a = Float64Array.of(3), b = Float64Array.of(0, 4);
  const big = clipByGlobalNorm([a, b], 1);
  assert.equal(big.totalNorm, 5);
  assert.equal(big.scale, 1 / (5 + 1e-6));
  closeRel(a[0], 3 / (5 + 1e-6), 1e-15, "clipped a");
  closeRel(b[1], 4 / (5 + 1e-6), 1e-15, "clipped b");
  const c = new Map([["x", Float64Array.of(0.3, -0.4)]]);
  const small = clipByGlobalNorm(c.values(), 1);
  closeRel(small.totalNorm, 0.5, 1e-15, "norm");
  assert.equal(small.scale, 1);
  assert.deepEqual(Array.from(c.get("x")!), [0.3, -0.4]);
});
