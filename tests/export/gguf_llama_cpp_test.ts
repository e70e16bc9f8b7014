/**
 * The GGUF exports checked by llama.cpp itself (node-llama-cpp 3.22.1, CPU, under Node): it loads
 * each exported file and its log-probabilities of a held-out text are compared with the float64
 * reference (tests/reference/llama_f64.ts) of the same NF4 base + adapter.
 *
 * Token ids are fed to llama.cpp directly, so the numbers do not depend on its tokenizer; a
 * separate test checks that llama.cpp's own tokenizer (the exported `gpt2` vocabulary) gives the
 * same ids. llama.cpp runs with an f32 KV cache and no flash attention: its default f16 cache
 * rounds K and V, a choice of the runtime, not of the file (it moves per-token log-probs by up
 * to ~6e-3 on this model).
 *
 * Tolerances. The F32 export is the exactness check: llama.cpp then computes in f32, so its
 * per-token log-probs equal the float64 reference's up to f32 rounding (measured 6e-6; bound
 * 1e-4). For the other types both the weights and llama.cpp's arithmetic round: its CPU matmul
 * converts the activations to the weight's dot-product type (f16 for F16 weights, Q8_0 blocks for
 * Q8_0 and Q4_0 weights). With u the rms rounding error of one value relative to the rms of its
 * row or block:
 *   u_f16 = 2^-11/sqrt(3)         (11 significant bits, error uniform within half an ulp)
 *   u_q8  = 2.5/(127 sqrt(12))     (step amax/127, error uniform within half a step, and
 *   u_q4  = 2.5/(8 sqrt(12))        amax <= 2.5 rms for a block of 32 normal-like values)
 * each matmul's output is off by about u relative, and 2 layers x 7 matmuls + the output layer
 * add up to about sqrt(15) u in the logits; the bound on the logits' relative rms error allows
 * GROWTH = 10 u per rounding source (2.5x headroom over sqrt(15)). A perturbation dz of the
 * logits moves a token's loss by dz_label - E_p[dz], at most 2 |dz|, so the loss bound is
 * 2 x (logit bound) x rms(logits) / loss, relative. F16 is held to the 1e-3 relative loss.
 * Q8_0/Q4_0 are checked twice: against the reference run on the weights decoded from the file
 * (only llama.cpp's activation rounding differs: u_q8) and against the unquantized model (plus the
 * weights' own rounding: u_q8 or u_q4).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { exportGguf } from "../../src/export/export_gguf.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { forwardBackward, type RefLora, type RefWeights } from "../reference/llama_f64.ts";
import {
  type LlamaCppJob,
  type LlamaCppResult,
  llamaCppUnavailable,
  runLlamaCpp,
} from "../llama_cpp/install.ts";
import {
  type GgufFixture,
  type GgufFixtureOptions,
  HELD_OUT_TEXT,
  makeGgufFixture,
  weightsFromGguf,
} from "./gguf_fixture.ts";
import { readGguf } from "./gguf_read.ts";

const U_F16 = 2 ** -11 / Math.sqrt(3);
const U_Q8 = 2.5 / (127 * Math.sqrt(12));
const U_Q4 = 2.5 / (8 * Math.sqrt(12));
const GROWTH = 10;
/** Per-token log-prob difference allowed where llama.cpp computes in f32 (F32 files). */
const F32_LOGPROB_TOL = 1e-4;
const F16_REL_LOSS_TOL = 1e-3;

const ignore = llamaCppUnavailable();

interface Run {
  fx: GgufFixture;
  tokens: number[];
  paths: Record<string, string>;
  res: Record<string, LlamaCppResult>;
  /** Reference of base + adapter: per-position logits [T-1][vocab] and the loss. */
  ref: { logits: Float64Array; loss: number };
  /** The other architectures' fixtures and references, by VARIANTS key. */
  variants: Record<string, { fx: GgufFixture; ref: { logits: Float64Array; loss: number } }>;
}

/**
 * Fixtures whose export differs in kind: no q/k permutation + biases; rope scaling metadata;
 * rope_freqs; no output tensor.
 */
const VARIANTS: Record<string, GgufFixtureOptions> = {
  qwen2: { modelType: "qwen2" },
  "linear-rope": { ropeScaling: { rope_type: "linear", factor: 2.5 } },
  "llama3-rope+tied": {
    ropeScaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
    tieWordEmbeddings: true,
  },
};

let run: Run | undefined;

/** Float64 reference logits of positions 0..T-2 and the mean next-token loss. */
function reference(
  fx: GgufFixture,
  weights: RefWeights,
  lora: RefLora | null,
  tokens: number[],
): { logits: Float64Array; loss: number } {
  const labels = [...tokens.slice(1), -100];
  const r = forwardBackward(fx.rc, weights, lora, { tokens: [tokens], labels: [labels] }, {
    returnLogits: true,
  });
  const V = fx.rc.vocab;
  return { logits: r.logits![0].slice(0, (tokens.length - 1) * V), loss: r.loss };
}

async function setup(): Promise<Run> {
  if (run) return run;
  const fx = await makeGgufFixture();
  const tokens = (await loadTokenizer(fx.baseDir)).encode(HELD_OUT_TEXT); // bos + text
  const paths: Record<string, string> = {};
  const exp = async (
    key: string,
    mode: "merged" | "lora",
    type: string,
    adapter: boolean,
    from = fx,
  ) => {
    paths[key] = join(fx.dir, `${key}.gguf`);
    await exportGguf({
      baseModelDir: from.baseDir,
      adapterDir: adapter ? from.adapterDir : undefined,
      mode,
      outputPath: paths[key],
      type: type as "F32",
      overwrite: false,
    });
  };
  for (const t of ["F32", "F16", "Q8_0", "Q4_0"]) await exp(`merged-${t}`, "merged", t, true);
  await exp("base-F32", "merged", "F32", false);
  await exp("base-F16", "merged", "F16", false);
  await exp("lora-F32", "lora", "F32", true);
  const variants: Run["variants"] = {};
  const variantJobs: Record<string, LlamaCppJob> = {};
  for (const [key, options] of Object.entries(VARIANTS)) {
    const v = await makeGgufFixture(options);
    variants[key] = { fx: v, ref: reference(v, v.weights, v.lora, tokens) };
    await exp(`${key}-merged-F32`, "merged", "F32", true, v);
    await exp(`${key}-base-F32`, "merged", "F32", false, v);
    await exp(`${key}-lora-F32`, "lora", "F32", true, v);
    variantJobs[`${key}-merged-F32`] = { model: paths[`${key}-merged-F32`], tokens };
    variantJobs[`${key}-base-F32+lora`] = {
      model: paths[`${key}-base-F32`],
      lora: [paths[`${key}-lora-F32`]],
      tokens,
    };
  }
  const jobs: Record<string, LlamaCppJob> = {
    ...variantJobs,
    "merged-F32": { model: paths["merged-F32"], tokens, logits: true },
    "merged-F16": { model: paths["merged-F16"], tokens, logits: true, text: HELD_OUT_TEXT },
    "merged-Q8_0": { model: paths["merged-Q8_0"], tokens, logits: true },
    "merged-Q4_0": { model: paths["merged-Q4_0"], tokens, logits: true },
    "base-F32+lora": { model: paths["base-F32"], lora: [paths["lora-F32"]], tokens, logits: true },
    "base-F16+lora": { model: paths["base-F16"], lora: [paths["lora-F32"]], tokens, logits: true },
  };
  const out = await runLlamaCpp(Object.values(jobs), fx.dir);
  const res = Object.fromEntries(Object.keys(jobs).map((k, i) => [k, out[i]]));
  run = { fx, tokens, paths, res, ref: reference(fx, fx.weights, fx.lora, tokens), variants };
  return run;
}

function lossOf(r: LlamaCppResult): number {
  return -r.logprobs.reduce((a, b) => a + b, 0) / r.logprobs.length;
}

/** Per-position log-probs of the next token from reference logits. */
function refLogprobs(logits: Float64Array, tokens: number[], V: number): number[] {
  const out: number[] = [];
  for (let t = 0; t + 1 < tokens.length; t++) {
    const z = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const x of z) max = Math.max(max, x);
    let sum = 0;
    for (const x of z) sum += Math.exp(x - max);
    out.push(z[tokens[t + 1]] - max - Math.log(sum));
  }
  return out;
}

/** ||a - b|| / ||b|| over all positions and tokens. */
function relRms(a: number[][], b: Float64Array): number {
  let num = 0;
  let den = 0;
  a.flat().forEach((x, i) => {
    num += (x - b[i]) ** 2;
    den += b[i] ** 2;
  });
  return Math.sqrt(num / den);
}

function rms(b: Float64Array): number {
  let s = 0;
  for (const x of b) s += x * x;
  return Math.sqrt(s / b.length);
}

function maxAbsDiff(a: number[], b: number[]): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

Deno.test({
  name: "llama.cpp on the F32 merged export: per-token log-probs equal the reference's (f32)",
  ignore: ignore !== undefined,
  async fn() {
    const { fx, tokens, res, ref } = await setup();
    const r = res["merged-F32"];
    assert.equal(r.vocab, fx.cfg.vocab);
    assert.equal(r.logprobs.length, tokens.length - 1);
    const d = maxAbsDiff(r.logprobs, refLogprobs(ref.logits, tokens, fx.cfg.vocab));
    console.log(`F32: max per-token log-prob difference ${d.toExponential(2)}`);
    assert.ok(d <= F32_LOGPROB_TOL, `${d}`);
  },
});

Deno.test({
  name: "llama.cpp on the F16 merged export: loss within 1e-3 relative of the reference",
  ignore: ignore !== undefined,
  async fn() {
    const { res, ref } = await setup();
    const r = res["merged-F16"];
    const rel = Math.abs(lossOf(r) - ref.loss) / ref.loss;
    const logitErr = relRms(r.logits!, ref.logits);
    console.log(
      `F16: loss ${lossOf(r).toFixed(6)} vs ${ref.loss.toFixed(6)} (rel ${
        rel.toExponential(2)
      }), ` +
        `logits rel rms ${logitErr.toExponential(2)}`,
    );
    assert.ok(rel <= F16_REL_LOSS_TOL, `${rel}`);
    assert.ok(logitErr <= GROWTH * 2 * U_F16, `${logitErr}`);
  },
});

for (const [type, uWeights] of [["Q8_0", U_Q8], ["Q4_0", U_Q4]] as const) {
  Deno.test({
    name: `llama.cpp on the ${type} merged export: within the derived bounds`,
    ignore: ignore !== undefined,
    async fn() {
      const { fx, tokens, paths, res, ref } = await setup();
      const r = res[`merged-${type}`];
      const g = readGguf(await Deno.readFile(paths[`merged-${type}`]));
      // Every matrix has rows of 96 or 160 values: no F16 fallback. Q4_0 files keep the
      // embedding and output layers at Q8_0 (src/export/gguf_model.ts).
      const ggmlType = (n: string) => g.tensors.get(n)!.type;
      assert.equal(ggmlType("blk.1.ffn_down.weight"), type === "Q8_0" ? 8 : 2);
      assert.equal(ggmlType("output.weight"), 8);
      assert.equal(ggmlType("token_embd.weight"), 8);
      assert.equal(ggmlType("blk.1.ffn_norm.weight"), 0);
      const decoded = reference(fx, weightsFromGguf(g, fx.rc), null, tokens);
      const loss = lossOf(r);
      // Against the file's own (decoded) weights: only llama.cpp's Q8_0 activations differ.
      const actBound = GROWTH * U_Q8;
      const vsDecoded = relRms(r.logits!, decoded.logits);
      const lossVsDecoded = Math.abs(loss - decoded.loss) / decoded.loss;
      // Against the unquantized model: the weights' rounding as well.
      const fullBound = GROWTH * (U_Q8 + uWeights);
      const vsRef = relRms(r.logits!, ref.logits);
      const lossVsRef = Math.abs(loss - ref.loss) / ref.loss;
      console.log(
        `${type}: loss ${loss.toFixed(6)}, reference ${ref.loss.toFixed(6)} (rel ${
          lossVsRef.toExponential(2)
        }), on decoded weights ${decoded.loss.toFixed(6)} (rel ${
          lossVsDecoded.toExponential(2)
        }); ` +
          `logits rel rms vs decoded ${vsDecoded.toExponential(2)} (bound ${
            actBound.toExponential(2)
          }), vs unquantized ${vsRef.toExponential(2)} (bound ${fullBound.toExponential(2)})`,
      );
      assert.ok(vsDecoded <= actBound, `logits vs decoded ${vsDecoded}`);
      assert.ok(vsRef <= fullBound, `logits vs unquantized ${vsRef}`);
      assert.ok(
        lossVsDecoded <= 2 * actBound * rms(decoded.logits) / decoded.loss,
        `${lossVsDecoded}`,
      );
      assert.ok(lossVsRef <= 2 * fullBound * rms(ref.logits) / ref.loss, `${lossVsRef}`);
    },
  });
}

Deno.test({
  name: "llama.cpp's tokenizer on the exported vocabulary gives qlorad's token ids",
  ignore: ignore !== undefined,
  async fn() {
    const { fx, res } = await setup();
    const tok = await loadTokenizer(fx.baseDir);
    assert.deepEqual(
      res["merged-F16"].tokenized,
      tok.encode(HELD_OUT_TEXT, { addSpecialTokens: false }),
    );
  },
});

Deno.test({
  name: "llama.cpp --lora: the GGUF adapter on the exported base gives the merged export's result",
  ignore: ignore !== undefined,
  async fn() {
    const { fx, tokens, res, ref } = await setup();
    // F32 base + F32 adapter: f32 arithmetic, the reference's per-token log-probs.
    const f32 = res["base-F32+lora"];
    const d = maxAbsDiff(f32.logprobs, refLogprobs(ref.logits, tokens, fx.cfg.vocab));
    // F16 base + adapter vs the F16 merged file: the same function, rounded at different places.
    const lora16 = res["base-F16+lora"];
    const merged16 = res["merged-F16"];
    const rel = Math.abs(lossOf(lora16) - lossOf(merged16)) / lossOf(merged16);
    const logitErr = relRms(lora16.logits!, Float64Array.from(merged16.logits!.flat()));
    console.log(
      `LoRA: F32 base + adapter max per-token diff ${d.toExponential(2)}; F16 base + adapter vs ` +
        `F16 merged: loss rel ${rel.toExponential(2)}, logits rel rms ${logitErr.toExponential(2)}`,
    );
    assert.ok(d <= F32_LOGPROB_TOL, `${d}`);
    assert.ok(rel <= F16_REL_LOSS_TOL, `${rel}`);
    assert.ok(logitErr <= GROWTH * 2 * U_F16, `${logitErr}`);
  },
});

for (const key of Object.keys(VARIANTS)) {
  Deno.test({
    name: `llama.cpp on the ${key} F32 export, merged and --lora: the reference's log-probs`,
    ignore: ignore !== undefined,
    async fn() {
      const { tokens, res, variants } = await setup();
      const { fx, ref } = variants[key];
      const want = refLogprobs(ref.logits, tokens, fx.cfg.vocab);
      const merged = maxAbsDiff(res[`${key}-merged-F32`].logprobs, want);
      const lora = maxAbsDiff(res[`${key}-base-F32+lora`].logprobs, want);
      console.log(
        `${key}: max per-token log-prob difference merged ${merged.toExponential(2)}, ` +
          `base + --lora ${lora.toExponential(2)}`,
      );
      assert.ok(merged <= F32_LOGPROB_TOL, `${merged}`);
      assert.ok(lora <= F32_LOGPROB_TOL, `${lora}`);
    },
  });
}

Deno.test({
  name: "cleanup: llama.cpp GGUF fixtures",
  ignore: ignore !== undefined,
  async fn() {
    if (!run) return;
    await Deno.remove(run.fx.dir, { recursive: true });
    for (const v of Object.values(run.variants)) await Deno.remove(v.fx.dir, { recursive: true });
  },
});
