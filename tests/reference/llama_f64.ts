/**
 * Float64 CPU reference of a Hugging Face Llama (transformers `modeling_llama.py`; Mistral is the
 * same math, Qwen2 adds a bias to q, k and v: `modeling_qwen2.py`) with PEFT LoRA adapters: forward, cross-entropy loss, and analytical gradients for every LoRA A and B
 * (the base weights are frozen). The test suite checks the GPU training engine against this file,
 * so it is written straight from the math with plain loops and no shortcuts; see
 * ../../../shared/REFERENCE.md §6 and §7. The single ops (matmul, RMSNorm, RoPE, SwiGLU, each with
 * its backward) are ops_f64.ts's, the same references the kernel tests use; attention,
 * cross-entropy and the LoRA linears are here.
 *
 * Layouts: every activation is row-major [T, dim] in a Float64Array; weights are [out, in] as in
 * the checkpoint; q/k/v rows are [heads, headDim] (head h occupies columns h*headDim..+headDim).
 * LoRA keys are `${layer}.${module}`, e.g. "0.q", "3.down"; A is [r, in], B is [out, r].
 * Labels are already shifted by the caller: labels[s][t] is the target of position t; -100 masks.
 */
import { Rng } from "../../src/util/random.ts";
import {
  matmulF64,
  rmsnormBackwardF64,
  rmsnormF64,
  ropeF64,
  ropeInvFreqF64,
  type RopeScalingF64,
  swigluBackwardF64,
  swigluF64,
} from "./ops_f64.ts";

export const LORA_MODULES = ["q", "k", "v", "o", "gate", "up", "down"] as const;
export type LoraModule = typeof LORA_MODULES[number];
export const IGNORE_INDEX = -100;

export type RopeScaling = RopeScalingF64;

export interface RefConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  rmsEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  tieEmbeddings: boolean;
  /** Qwen2: q, k and v projections have a bias (o, gate, up, down do not). */
  qkvBias?: boolean;
}

export interface RefLayerWeights {
  inputNorm: Float64Array;
  postNorm: Float64Array;
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
  o: Float64Array;
  gate: Float64Array;
  up: Float64Array;
  down: Float64Array;
  /** [out] biases, when cfg.qkvBias: keys q, k, v. */
  bias?: Partial<Record<LoraModule, Float64Array>>;
}

/**
 * Embedding and lm_head tables may be Float32Array: every bf16/f16 checkpoint value is exact in
 * f32 and the arithmetic stays float64, while a 128k-vocabulary table takes half the memory.
 */
export type RefTable = Float64Array | Float32Array;

export interface RefWeights {
  /** [vocab, hidden] */
  embed: RefTable;
  layers: RefLayerWeights[];
  /** [hidden] */
  norm: Float64Array;
  /** [vocab, hidden]; absent when embeddings are tied. */
  lmHead?: RefTable;
}

export interface RefLora {
  r: number;
  /** alpha / r, or alpha / sqrt(r) with rsLoRA. */
  scaling: number;
  targets: LoraModule[];
  /** key "layer.module" -> [r, in] */
  A: Map<string, Float64Array>;
  /** key "layer.module" -> [out, r] */
  B: Map<string, Float64Array>;
}

export interface RefBatch {
  /** One array per sequence; sequences may differ in length. */
  tokens: number[][];
  /** Same shape as tokens; labels[s][t] is the target of position t (shifted); -100 masks. */
  labels: number[][];
  /** RoPE positions; default 0..T-1 per sequence. */
  positions?: number[][];
  /** Packing: a token attends only to earlier-or-same tokens with the same segment id. */
  segments?: number[][];
}

export interface RefOptions {
  /** Multiplier on the LoRA input element i of token t: 0 or 1/(1-p). Default 1 (no dropout). */
  dropoutMask?: (key: string, seq: number, t: number, i: number) => number;
  /** Loss = lossSum / lossDenominator; default: the number of non-masked labels in the batch. */
  lossDenominator?: number;
  /** Also return each sequence's logits [T, vocab]. */
  returnLogits?: boolean;
  /**
   * Gradient checkpointing with lossy checkpoints: given layer `layer`'s exact input for sequence
   * `seq` [T, hidden], the input backward recomputes that layer from (e.g. rounded to f16). The
   * forward and the loss stay exact.
   */
  checkpoint?: (xIn: Float64Array, layer: number, seq: number) => Float64Array;
}

export interface RefResult {
  /** lossSum / denominator (0 when the denominator is 0; gradients are then 0 too). */
  loss: number;
  /** Sum of cross-entropy over non-masked labels. */
  lossSum: number;
  /** Number of non-masked labels. */
  count: number;
  /** Non-masked positions where argmax(logits) (first maximum) equals the label. */
  correct: number;
  /** d loss / d A, same keys and layouts as lora.A. */
  gradA: Map<string, Float64Array>;
  /** d loss / d B, same keys and layouts as lora.B. */
  gradB: Map<string, Float64Array>;
  /** Per sequence [T, vocab], when opts.returnLogits. */
  logits?: Float64Array[];
}

export function loraKey(layer: number, module: LoraModule): string {
  return `${layer}.${module}`;
}

/** [out, in] of a LoRA-targetable linear. */
export function moduleShape(cfg: RefConfig, module: LoraModule): [number, number] {
  const qDim = cfg.heads * cfg.headDim;
  const kvDim = cfg.kvHeads * cfg.headDim;
  switch (module) {
    case "q":
      return [qDim, cfg.hidden];
    case "k":
    case "v":
      return [kvDim, cfg.hidden];
    case "o":
      return [cfg.hidden, qDim];
    case "gate":
    case "up":
      return [cfg.intermediate, cfg.hidden];
    case "down":
      return [cfg.hidden, cfg.intermediate];
  }
}

// ---------------------------------------------------------------------------------------------
// Config

function num(json: Record<string, unknown>, field: string, fallback?: number): number {
  const v = json[field];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new Error(`config.json: missing field ${field}`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new Error(`config.json: field ${field} is not a number: ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * RefConfig from a transformers config.json object, with LlamaConfig's defaults:
 * num_key_value_heads = num_attention_heads, head_dim = hidden_size // num_attention_heads,
 * rms_norm_eps 1e-6, rope_theta 10000, tie_word_embeddings false. Accepts `rope_scaling` with
 * `rope_type` or the older `type`, and transformers v5's `rope_parameters` (which may carry
 * rope_theta).
 */
export function refConfigFromHf(json: Record<string, unknown>): RefConfig {
  const heads = num(json, "num_attention_heads");
  const hidden = num(json, "hidden_size");
  const rope = (json.rope_parameters ?? json.rope_scaling ?? null) as
    | Record<string, unknown>
    | null;
  const ropeTheta = num(json, "rope_theta", rope ? num(rope, "rope_theta", 10000) : 10000);
  if (json.hidden_act !== undefined && json.hidden_act !== "silu") {
    throw new Error(`config.json: field hidden_act ${JSON.stringify(json.hidden_act)} unsupported`);
  }
  const modelType = json.model_type ?? "llama";
  if (!["llama", "mistral", "qwen2"].includes(String(modelType))) {
    throw new Error(`config.json: field model_type ${JSON.stringify(modelType)} unsupported`);
  }
  for (const f of ["attention_bias", "mlp_bias"]) {
    if (json[f] === true) throw new Error(`config.json: field ${f} = true is unsupported`);
  }
  let ropeScaling: RopeScaling | undefined;
  if (rope) {
    const type = rope.rope_type ?? rope.type ?? "default";
    if (type === "linear") {
      ropeScaling = { type: "linear", factor: num(rope, "factor") };
    } else if (type === "llama3") {
      ropeScaling = {
        type: "llama3",
        factor: num(rope, "factor"),
        lowFreqFactor: num(rope, "low_freq_factor"),
        highFreqFactor: num(rope, "high_freq_factor"),
        originalMaxPositionEmbeddings: num(rope, "original_max_position_embeddings"),
      };
    } else if (type !== "default") {
      throw new Error(
        `config.json: field rope_scaling.rope_type ${JSON.stringify(type)} unsupported`,
      );
    }
  }
  return {
    hidden,
    intermediate: num(json, "intermediate_size"),
    layers: num(json, "num_hidden_layers"),
    heads,
    kvHeads: num(json, "num_key_value_heads", heads),
    headDim: num(json, "head_dim", Math.floor(hidden / heads)),
    vocab: num(json, "vocab_size"),
    rmsEps: num(json, "rms_norm_eps", 1e-6),
    ropeTheta,
    ropeScaling,
    tieEmbeddings: json.tie_word_embeddings === true,
    ...(modelType === "qwen2" ? { qkvBias: true } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Attention and cross-entropy (exported so tests can hand-check them; forwardBackward uses them)

export interface AttentionResult {
  /** [T, heads*headDim] */
  out: Float64Array;
  /** [heads, T, T]; probs[h][t][s] is 0 where s is not allowed for t. */
  probs: Float64Array;
}

/**
 * Causal grouped-query attention on already-rotated q [T, heads*hd], k and v [T, kvHeads*hd].
 * Query head h reads kv head floor(h / (heads / kvHeads)) (transformers `repeat_kv`). Scores are
 * q.k / sqrt(hd) over the keys s with allowed(t, s); softmax; weighted sum of v.
 */
export function attentionForward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  T: number,
  heads: number,
  kvHeads: number,
  hd: number,
  allowed: (t: number, s: number) => boolean,
): AttentionResult {
  const groups = heads / kvHeads;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(T * heads * hd);
  const probs = new Float64Array(heads * T * T);
  for (let h = 0; h < heads; h++) {
    const g = Math.floor(h / groups);
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      let max = -Infinity;
      for (let s = 0; s < T; s++) {
        if (!allowed(t, s)) continue;
        let dot = 0;
        for (let d = 0; d < hd; d++) {
          dot += q[(t * heads + h) * hd + d] * k[(s * kvHeads + g) * hd + d];
        }
        probs[row + s] = dot * scale;
        if (probs[row + s] > max) max = probs[row + s];
      }
      if (max === -Infinity) throw new Error(`attention: token ${t} may attend to nothing`);
      let sum = 0;
      for (let s = 0; s < T; s++) {
        if (!allowed(t, s)) continue;
        probs[row + s] = Math.exp(probs[row + s] - max);
        sum += probs[row + s];
      }
      for (let s = 0; s < T; s++) {
        if (!allowed(t, s)) continue;
        probs[row + s] /= sum;
        for (let d = 0; d < hd; d++) {
          out[(t * heads + h) * hd + d] += probs[row + s] * v[(s * kvHeads + g) * hd + d];
        }
      }
    }
  }
  return { out, probs };
}

/**
 * Backward of attentionForward given dOut: dv_s += P[t,s] dout_t; dP[t,s] = dout_t . v_s;
 * dS[t,s] = P[t,s] (dP[t,s] - sum_s' P[t,s'] dP[t,s']); dq_t += scale dS[t,s] k_s;
 * dk_s += scale dS[t,s] q_t. Masked entries have P = 0 and so contribute nothing.
 */
export function attentionBackward(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  probs: Float64Array,
  dOut: Float64Array,
  T: number,
  heads: number,
  kvHeads: number,
  hd: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const groups = heads / kvHeads;
  const scale = 1 / Math.sqrt(hd);
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  const dP = new Float64Array(T);
  for (let h = 0; h < heads; h++) {
    const g = Math.floor(h / groups);
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      let rowDot = 0;
      for (let s = 0; s < T; s++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) {
          dot += dOut[(t * heads + h) * hd + d] * v[(s * kvHeads + g) * hd + d];
          dv[(s * kvHeads + g) * hd + d] += probs[row + s] * dOut[(t * heads + h) * hd + d];
        }
        dP[s] = dot;
        rowDot += probs[row + s] * dot;
      }
      for (let s = 0; s < T; s++) {
        const dS = probs[row + s] * (dP[s] - rowDot);
        for (let d = 0; d < hd; d++) {
          dq[(t * heads + h) * hd + d] += scale * dS * k[(s * kvHeads + g) * hd + d];
          dk[(s * kvHeads + g) * hd + d] += scale * dS * q[(t * heads + h) * hd + d];
        }
      }
    }
  }
  return { dq, dk, dv };
}

/** Cross-entropy of one logits row: logsumexp(logits) - logits[label]; probs = softmax. */
export function crossEntropy(
  logits: Float64Array,
  label: number,
): { loss: number; probs: Float64Array } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const probs = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) probs[i] = Math.exp(logits[i] - max) / sum;
  return { loss: max + Math.log(sum) - logits[label], probs };
}

/** Index of the first maximum (as torch.argmax). */
export function argmax(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

// ---------------------------------------------------------------------------------------------
// Linear layers with optional LoRA

interface LinearCache {
  /** LoRA input after dropout, [T, in]; absent when not targeted. */
  xd?: Float64Array;
  /** A xd, [T, r]. */
  z?: Float64Array;
  /** dropout multipliers, [T, in]. */
  mask?: Float64Array;
}

interface LinearSpec {
  key: string;
  W: Float64Array;
  /** [out], or absent for no bias. */
  b?: Float64Array;
  out: number;
  in: number;
  lora: RefLora | null;
}

/** y_t = W x_t (+ b) + scaling * B A (mask_t * x_t) for every row t. */
function linearForward(
  spec: LinearSpec,
  x: Float64Array,
  T: number,
  seq: number,
  dropoutMask: RefOptions["dropoutMask"],
): { y: Float64Array; cache: LinearCache } {
  const { W, out, in: inn } = spec;
  const y = matmulF64(x, W, T, out, inn, false, true);
  if (spec.b) {
    for (let t = 0; t < T; t++) for (let o = 0; o < out; o++) y[t * out + o] += spec.b[o];
  }
  const A = spec.lora?.A.get(spec.key);
  const B = spec.lora?.B.get(spec.key);
  if (!spec.lora || !A || !B) return { y, cache: {} };
  const r = spec.lora.r;
  const s = spec.lora.scaling;
  const mask = new Float64Array(T * inn);
  const xd = new Float64Array(T * inn);
  const z = new Float64Array(T * r);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < inn; i++) {
      mask[t * inn + i] = dropoutMask ? dropoutMask(spec.key, seq, t, i) : 1;
      xd[t * inn + i] = mask[t * inn + i] * x[t * inn + i];
    }
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let i = 0; i < inn; i++) acc += A[j * inn + i] * xd[t * inn + i];
      z[t * r + j] = acc;
    }
    for (let o = 0; o < out; o++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += B[o * r + j] * z[t * r + j];
      y[t * out + o] += s * acc;
    }
  }
  return { y, cache: { xd, z, mask } };
}

/**
 * Backward of linearForward (the bias is frozen and adds a constant, so it has no term here):
 * accumulates dB[o,j] += s dy[o] z[j] and dA[j,i] += dz[j] xd[i] with
 * dz[j] = s sum_o B[o,j] dy[o]; returns dx[i] = sum_o W[o,i] dy[o] + mask[i] sum_j A[j,i] dz[j].
 */
function linearBackward(
  spec: LinearSpec,
  cache: LinearCache,
  dy: Float64Array,
  T: number,
  gradA: Map<string, Float64Array>,
  gradB: Map<string, Float64Array>,
): Float64Array {
  const { W, out, in: inn } = spec;
  // Row by row through W (not matmulF64's dot products down its columns: W may be 14336 x 4096).
  const dx = new Float64Array(T * inn);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < out; o++) {
      const g = dy[t * out + o];
      for (let i = 0; i < inn; i++) dx[t * inn + i] += W[o * inn + i] * g;
    }
  }
  if (!spec.lora || !cache.xd || !cache.z || !cache.mask) return dx;
  const A = spec.lora.A.get(spec.key)!;
  const B = spec.lora.B.get(spec.key)!;
  const dA = gradA.get(spec.key)!;
  const dB = gradB.get(spec.key)!;
  const r = spec.lora.r;
  const s = spec.lora.scaling;
  const dz = new Float64Array(r);
  for (let t = 0; t < T; t++) {
    dz.fill(0);
    for (let o = 0; o < out; o++) {
      const g = dy[t * out + o];
      for (let j = 0; j < r; j++) {
        dB[o * r + j] += s * g * cache.z[t * r + j];
        dz[j] += s * B[o * r + j] * g;
      }
    }
    for (let j = 0; j < r; j++) {
      for (let i = 0; i < inn; i++) {
        dA[j * inn + i] += dz[j] * cache.xd[t * inn + i];
        dx[t * inn + i] += cache.mask[t * inn + i] * A[j * inn + i] * dz[j];
      }
    }
  }
  return dx;
}

function addInto(a: Float64Array, b: Float64Array): Float64Array {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
  return a;
}

// ---------------------------------------------------------------------------------------------
// Model

interface LayerCache {
  xIn: Float64Array;
  n1: Float64Array;
  qr: Float64Array;
  kr: Float64Array;
  v: Float64Array;
  probs: Float64Array;
  h: Float64Array;
  g: Float64Array;
  u: Float64Array;
  caches: Record<LoraModule, LinearCache>;
}

function validate(cfg: RefConfig, w: RefWeights, lora: RefLora | null, batch: RefBatch): void {
  const need = (name: string, a: RefTable | undefined, n: number) => {
    if (!a || a.length !== n) {
      throw new Error(`weights: tensor ${name} has length ${a?.length} but needs ${n}`);
    }
  };
  if (cfg.heads % cfg.kvHeads !== 0) {
    throw new Error(`config: heads ${cfg.heads} not a multiple of kvHeads ${cfg.kvHeads}`);
  }
  if (cfg.headDim % 2 !== 0) throw new Error(`config: headDim ${cfg.headDim} is odd`);
  need("embed", w.embed, cfg.vocab * cfg.hidden);
  need("norm", w.norm, cfg.hidden);
  if (!cfg.tieEmbeddings) need("lmHead", w.lmHead, cfg.vocab * cfg.hidden);
  if (w.layers.length !== cfg.layers) {
    throw new Error(`weights: ${w.layers.length} layers, config says ${cfg.layers}`);
  }
  w.layers.forEach((L, l) => {
    need(`layers.${l}.inputNorm`, L.inputNorm, cfg.hidden);
    need(`layers.${l}.postNorm`, L.postNorm, cfg.hidden);
    for (const m of LORA_MODULES) {
      const [o, i] = moduleShape(cfg, m);
      need(`layers.${l}.${m}`, L[m], o * i);
      const biased = cfg.qkvBias === true && (m === "q" || m === "k" || m === "v");
      if (biased) need(`layers.${l}.bias.${m}`, L.bias?.[m], o);
      else if (L.bias?.[m]) throw new Error(`weights: layers.${l}.bias.${m} but no such bias`);
      if (lora && lora.targets.includes(m)) {
        need(`lora.A ${loraKey(l, m)}`, lora.A.get(loraKey(l, m)), lora.r * i);
        need(`lora.B ${loraKey(l, m)}`, lora.B.get(loraKey(l, m)), o * lora.r);
      }
    }
  });
  if (batch.labels.length !== batch.tokens.length) {
    throw new Error(
      `batch: ${batch.labels.length} label rows for ${batch.tokens.length} sequences`,
    );
  }
  batch.tokens.forEach((toks, s) => {
    const T = toks.length;
    if (T === 0) throw new Error(`batch: sequence ${s} is empty`);
    for (
      const [field, rows] of [
        ["labels", batch.labels],
        ["positions", batch.positions],
        ["segments", batch.segments],
      ] as const
    ) {
      if (rows && rows[s]?.length !== T) {
        throw new Error(`batch: ${field}[${s}] has length ${rows[s]?.length}, tokens has ${T}`);
      }
    }
    toks.forEach((tok, t) => {
      if (!Number.isInteger(tok) || tok < 0 || tok >= cfg.vocab) {
        throw new Error(`batch: tokens[${s}][${t}] = ${tok} outside [0, ${cfg.vocab})`);
      }
      const lab = batch.labels[s][t];
      if (lab !== IGNORE_INDEX && (!Number.isInteger(lab) || lab < 0 || lab >= cfg.vocab)) {
        throw new Error(`batch: labels[${s}][${t}] = ${lab} is neither -100 nor a token id`);
      }
    });
  });
}

/**
 * Forward pass, mean (or sum / lossDenominator) cross-entropy over labels != -100, and the exact
 * gradient of that loss with respect to every LoRA A and B. `lora` null (or an untargeted module)
 * means the plain base linear. Each sequence is run on its own (no padding); packing is expressed
 * with `segments` and reset `positions` inside one sequence.
 */
export function forwardBackward(
  cfg: RefConfig,
  w: RefWeights,
  lora: RefLora | null,
  batch: RefBatch,
  opts: RefOptions = {},
): RefResult {
  validate(cfg, w, lora, batch);
  const { hidden: H, heads, kvHeads, headDim: hd, vocab, rmsEps: eps } = cfg;
  const invFreq = ropeInvFreqF64(hd, cfg.ropeTheta, cfg.ropeScaling);
  const head = cfg.tieEmbeddings ? w.embed : w.lmHead!;

  const gradA = new Map<string, Float64Array>();
  const gradB = new Map<string, Float64Array>();
  if (lora) {
    for (const [key, a] of lora.A) gradA.set(key, new Float64Array(a.length));
    for (const [key, b] of lora.B) gradB.set(key, new Float64Array(b.length));
  }
  let count = 0;
  for (const row of batch.labels) for (const lab of row) if (lab !== IGNORE_INDEX) count++;
  const denom = opts.lossDenominator ?? count;
  const dLossScale = denom === 0 ? 0 : 1 / denom;

  const spec = (l: number, m: LoraModule): LinearSpec => {
    const [out, inn] = moduleShape(cfg, m);
    const targeted = lora !== null && lora.targets.includes(m);
    return {
      key: loraKey(l, m),
      W: w.layers[l][m],
      b: w.layers[l].bias?.[m],
      out,
      in: inn,
      lora: targeted ? lora : null,
    };
  };

  let lossSum = 0;
  let correct = 0;
  const allLogits: Float64Array[] = [];

  batch.tokens.forEach((tokens, seq) => {
    const T = tokens.length;
    const labels = batch.labels[seq];
    const positions = batch.positions?.[seq] ?? tokens.map((_, t) => t);
    const segments = batch.segments?.[seq];
    const allowed = (t: number, s: number) =>
      s <= t && (segments === undefined || segments[s] === segments[t]);
    const lin = (l: number, m: LoraModule, x: Float64Array) =>
      linearForward(spec(l, m), x, T, seq, opts.dropoutMask);

    // ---- forward
    let x: Float64Array = new Float64Array(T * H);
    for (let t = 0; t < T; t++) x.set(w.embed.subarray(tokens[t] * H, (tokens[t] + 1) * H), t * H);
    const layerCaches: LayerCache[] = [];
    const runLayer = (l: number, xIn: Float64Array) => {
      const Lw = w.layers[l];
      const n1 = rmsnormF64(xIn, Lw.inputNorm, T, H, eps).y;
      const q = lin(l, "q", n1);
      const k = lin(l, "k", n1);
      const v = lin(l, "v", n1);
      const qr = ropeF64(q.y, positions, invFreq, T, heads, hd, false, false);
      const kr = ropeF64(k.y, positions, invFreq, T, kvHeads, hd, false, false);
      const att = attentionForward(qr, kr, v.y, T, heads, kvHeads, hd, allowed);
      const o = lin(l, "o", att.out);
      const h = addInto(o.y.slice(), xIn);
      const n2 = rmsnormF64(h, Lw.postNorm, T, H, eps).y;
      const g = lin(l, "gate", n2);
      const u = lin(l, "up", n2);
      const a = swigluF64(g.y, u.y);
      const d = lin(l, "down", a);
      const out = addInto(d.y.slice(), h);
      const cache: LayerCache = {
        xIn,
        n1,
        qr,
        kr,
        v: v.y,
        probs: att.probs,
        h,
        g: g.y,
        u: u.y,
        caches: {
          q: q.cache,
          k: k.cache,
          v: v.cache,
          o: o.cache,
          gate: g.cache,
          up: u.cache,
          down: d.cache,
        },
      };
      return { out, cache };
    };
    for (let l = 0; l < cfg.layers; l++) {
      const { out, cache } = runLayer(l, x);
      const saved = opts.checkpoint;
      layerCaches.push(saved ? runLayer(l, saved(x, l, seq)).cache : cache);
      x = out;
    }
    const nf = rmsnormF64(x, w.norm, T, H, eps).y;
    const logits = new Float64Array(T * vocab);
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < vocab; c++) {
        let acc = 0;
        for (let i = 0; i < H; i++) acc += head[c * H + i] * nf[t * H + i];
        logits[t * vocab + c] = acc;
      }
    }
    if (opts.returnLogits) allLogits.push(logits);

    // ---- loss and d loss / d logits = (softmax - onehot) / denominator
    const dLogits = new Float64Array(T * vocab);
    for (let t = 0; t < T; t++) {
      if (labels[t] === IGNORE_INDEX) continue;
      const row = logits.subarray(t * vocab, (t + 1) * vocab);
      const ce = crossEntropy(row, labels[t]);
      lossSum += ce.loss;
      if (argmax(row) === labels[t]) correct++;
      for (let c = 0; c < vocab; c++) {
        dLogits[t * vocab + c] = (ce.probs[c] - (c === labels[t] ? 1 : 0)) * dLossScale;
      }
    }

    // ---- backward
    const dnf = new Float64Array(T * H);
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < vocab; c++) {
        const g = dLogits[t * vocab + c];
        if (g === 0) continue;
        for (let i = 0; i < H; i++) dnf[t * H + i] += head[c * H + i] * g;
      }
    }
    let dx: Float64Array = rmsnormBackwardF64(x, w.norm, dnf, T, H, eps);
    for (let l = cfg.layers - 1; l >= 0; l--) {
      const Lw = w.layers[l];
      const c = layerCaches[l];
      const back = (m: LoraModule, dy: Float64Array) =>
        linearBackward(spec(l, m), c.caches[m], dy, T, gradA, gradB);
      // out = h + down(silu(gate) * up)
      const dh = dx.slice();
      const da = back("down", dx);
      const { dgate: dg, dup: du } = swigluBackwardF64(c.g, c.u, da);
      const dn2 = addInto(back("gate", dg), back("up", du));
      addInto(dh, rmsnormBackwardF64(c.h, Lw.postNorm, dn2, T, H, eps));
      // h = xIn + o(attention(rope(q), rope(k), v))
      const dAtt = back("o", dh);
      const grads = attentionBackward(c.qr, c.kr, c.v, c.probs, dAtt, T, heads, kvHeads, hd);
      const dq = ropeF64(grads.dq, positions, invFreq, T, heads, hd, true, false);
      const dk = ropeF64(grads.dk, positions, invFreq, T, kvHeads, hd, true, false);
      const dn1 = addInto(addInto(back("q", dq), back("k", dk)), back("v", grads.dv));
      dx = addInto(dh, rmsnormBackwardF64(c.xIn, Lw.inputNorm, dn1, T, H, eps));
    }
  });

  return {
    loss: lossSum * dLossScale,
    lossSum,
    count,
    correct,
    gradA,
    gradB,
    logits: opts.returnLogits ? allLogits : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Random setups for tests

export interface RandomLoraSpec {
  r: number;
  alpha: number;
  targets: LoraModule[];
  useRslora?: boolean;
  /** Std of the random A and B entries; default 0.1. */
  loraStd?: number;
}

function normals(rng: Rng, n: number, std: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * std;
  return a;
}

/** Norm weights around 1 so they are not all equal. */
function normWeights(rng: Rng, n: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = 1 + 0.1 * rng.normal();
  return a;
}

/**
 * Seeded random base weights (linears std 0.1, embeddings std 0.5 untied / 0.2 tied, norms
 * 1 +- 0.1, q/k/v biases std 0.3 when cfg.qkvBias, drawn last so the other weights do not depend
 * on it) and a LoRA whose A AND B are both random (std loraStd, default 0.1): PEFT starts B at
 * zero, but a gradient check needs every path live.
 */
export function randomRefSetup(
  cfg: RefConfig,
  seed: number,
  spec: RandomLoraSpec,
): { weights: RefWeights; lora: RefLora } {
  const rng = new Rng(seed);
  const layers: RefLayerWeights[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const mat = (m: LoraModule) => {
      const [o, i] = moduleShape(cfg, m);
      return normals(rng, o * i, 0.1);
    };
    layers.push({
      inputNorm: normWeights(rng, cfg.hidden),
      postNorm: normWeights(rng, cfg.hidden),
      q: mat("q"),
      k: mat("k"),
      v: mat("v"),
      o: mat("o"),
      gate: mat("gate"),
      up: mat("up"),
      down: mat("down"),
    });
  }
  const weights: RefWeights = {
    embed: normals(rng, cfg.vocab * cfg.hidden, cfg.tieEmbeddings ? 0.2 : 0.5),
    layers,
    norm: normWeights(rng, cfg.hidden),
    lmHead: cfg.tieEmbeddings ? undefined : normals(rng, cfg.vocab * cfg.hidden, 0.2),
  };
  const A = new Map<string, Float64Array>();
  const B = new Map<string, Float64Array>();
  for (let l = 0; l < cfg.layers; l++) {
    for (const m of spec.targets) {
      const [o, i] = moduleShape(cfg, m);
      A.set(loraKey(l, m), normals(rng, spec.r * i, spec.loraStd ?? 0.1));
      B.set(loraKey(l, m), normals(rng, o * spec.r, spec.loraStd ?? 0.1));
    }
  }
  if (cfg.qkvBias) {
    for (const layer of layers) {
      layer.bias = {};
      for (const m of ["q", "k", "v"] as const) {
        layer.bias[m] = normals(rng, moduleShape(cfg, m)[0], 0.3);
      }
    }
  }
  const scaling = spec.useRslora ? spec.alpha / Math.sqrt(spec.r) : spec.alpha / spec.r;
  return { weights, lora: { r: spec.r, scaling, targets: [...spec.targets], A, B } };
}
