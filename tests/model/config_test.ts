/**
 * config.json of the architectures we train (Llama 1/2/3/3.1/3.2, TinyLlama, Mistral, Qwen2/2.5,
 * written out like the published ones) parse to the shapes they describe; every field that would
 * change the math beyond what we implement is refused naming the file and the field; the sliding
 * window rule holds a job's max_seq_len to the window; Quantize refuses such a folder before it
 * writes anything.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  checkSequenceLength,
  type LlamaConfig,
  llamaConfigFromHf,
} from "../../src/model/config.ts";
import { QloradError } from "../../src/util/errors.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";

const FILE = "models/x/config.json";

const LLAMA2_7B = {
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  use_cache: true,
  vocab_size: 32000,
};

/** Llama 1 conversions: no num_key_value_heads, no rope_theta. */
const LLAMA1_7B = {
  architectures: ["LlamaForCausalLM"],
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 11008,
  max_position_embeddings: 2048,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  rms_norm_eps: 1e-6,
  torch_dtype: "float16",
  vocab_size: 32000,
};

const LLAMA31_8B = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
};

const LLAMA32_1B = {
  ...LLAMA31_8B,
  head_dim: 64,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  rope_scaling: { ...LLAMA31_8B.rope_scaling, factor: 32.0 },
  tie_word_embeddings: true,
};

const TINYLLAMA = {
  ...LLAMA2_7B,
  hidden_size: 2048,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  torch_dtype: "bfloat16",
};

const MISTRAL_V01 = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 32000,
};

const MISTRAL_V03 = {
  ...MISTRAL_V01,
  rope_theta: 1000000.0,
  sliding_window: null,
  vocab_size: 32768,
};

const QWEN25_7B = {
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: "silu",
  hidden_size: 3584,
  initializer_range: 0.02,
  intermediate_size: 18944,
  max_position_embeddings: 131072,
  max_window_layers: 28,
  model_type: "qwen2",
  num_attention_heads: 28,
  num_hidden_layers: 28,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 131072,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 152064,
};

const QWEN25_05B = {
  ...QWEN25_7B,
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  sliding_window: 32768,
  tie_word_embeddings: true,
  vocab_size: 151936,
};

function refusedWith(...parts: string[]) {
  return (e: unknown) => {
    assert.ok(e instanceof QloradError, String(e));
    assert.equal(e.kind, "invalid_argument", e.message);
    for (const p of parts) assert.ok(e.message.includes(p), `${e.message} lacks ${p}`);
    return true;
  };
}

Deno.test("published configs parse to the shapes they describe", () => {
  const pick = (c: LlamaConfig) => [
    c.modelType,
    c.hidden,
    c.intermediate,
    c.layers,
    c.heads,
    c.kvHeads,
    c.headDim,
    c.vocab,
    c.tieEmbeddings,
    c.qkvBias,
    c.slidingWindow,
    c.maxPositions,
  ];
  const cases: [string, unknown, unknown[]][] = [
    ["Llama 1 7B", LLAMA1_7B, [
      "llama",
      4096,
      11008,
      32,
      32,
      32,
      128,
      32000,
      false,
      false,
      undefined,
      2048,
    ]],
    ["Llama 2 7B", LLAMA2_7B, [
      "llama",
      4096,
      11008,
      32,
      32,
      32,
      128,
      32000,
      false,
      false,
      undefined,
      4096,
    ]],
    ["Llama 3.1 8B", LLAMA31_8B, [
      "llama",
      4096,
      14336,
      32,
      32,
      8,
      128,
      128256,
      false,
      false,
      undefined,
      131072,
    ]],
    ["Llama 3.2 1B", LLAMA32_1B, [
      "llama",
      2048,
      8192,
      16,
      32,
      8,
      64,
      128256,
      true,
      false,
      undefined,
      131072,
    ]],
    ["TinyLlama 1.1B", TINYLLAMA, [
      "llama",
      2048,
      5632,
      22,
      32,
      4,
      64,
      32000,
      false,
      false,
      undefined,
      2048,
    ]],
    ["Mistral 7B v0.1", MISTRAL_V01, [
      "mistral",
      4096,
      14336,
      32,
      32,
      8,
      128,
      32000,
      false,
      false,
      4096,
      32768,
    ]],
    ["Mistral 7B v0.3", MISTRAL_V03, [
      "mistral",
      4096,
      14336,
      32,
      32,
      8,
      128,
      32768,
      false,
      false,
      undefined,
      32768,
    ]],
    ["Qwen2.5 7B", QWEN25_7B, [
      "qwen2",
      3584,
      18944,
      28,
      28,
      4,
      128,
      152064,
      false,
      true,
      undefined,
      131072,
    ]],
    ["Qwen2.5 0.5B", QWEN25_05B, [
      "qwen2",
      896,
      4864,
      24,
      14,
      2,
      64,
      151936,
      true,
      true,
      undefined,
      32768,
    ]],
  ];
  for (const [name, json, want] of cases) {
    assert.deepEqual(pick(llamaConfigFromHf(json, FILE)), want, name);
  }
  const l31 = llamaConfigFromHf(LLAMA31_8B, FILE);
  assert.equal(l31.ropeTheta, 500000);
  assert.deepEqual(l31.ropeScaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  assert.deepEqual(l31.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(llamaConfigFromHf(LLAMA1_7B, FILE).ropeTheta, 10000);
  assert.equal(llamaConfigFromHf(LLAMA1_7B, FILE).rmsEps, 1e-6);
  assert.equal(llamaConfigFromHf(QWEN25_7B, FILE).ropeTheta, 1e6);
});

Deno.test("transformers 5 rope_parameters and other accepted spellings", () => {
  const { rope_scaling: scaling, rope_theta: _theta, ...rest } = LLAMA31_8B;
  const v5 = llamaConfigFromHf(
    { ...rest, rope_parameters: { ...scaling, rope_theta: 500000 } },
    FILE,
  );
  assert.equal(v5.ropeTheta, 500000);
  assert.equal(v5.ropeScaling?.type, "llama3");
  const plain = llamaConfigFromHf(
    { ...LLAMA2_7B, rope_parameters: { rope_type: "default", rope_theta: 10000 } },
    FILE,
  );
  assert.equal(plain.ropeScaling, undefined);
  // The older rope_scaling spelling with "type", linear scaling.
  const lin = llamaConfigFromHf(
    { ...LLAMA2_7B, rope_scaling: { type: "linear", factor: 2 } },
    FILE,
  );
  assert.deepEqual(lin.ropeScaling, { type: "linear", factor: 2 });
  // pretraining_tp > 1 only slices the same matmuls in transformers: same function, accepted.
  assert.equal(llamaConfigFromHf({ ...LLAMA2_7B, pretraining_tp: 2 }, FILE).hidden, 4096);
  // hidden_act "swish" is torch's name for SiLU.
  assert.equal(llamaConfigFromHf({ ...LLAMA2_7B, hidden_act: "swish" }, FILE).layers, 32);
  // A bitsandbytes 4-bit folder (ours, or one saved by transformers) loads.
  const bnb = { quant_method: "bitsandbytes", load_in_4bit: true, bnb_4bit_quant_type: "nf4" };
  assert.equal(llamaConfigFromHf({ ...LLAMA2_7B, quantization_config: bnb }, FILE).layers, 32);
  // Defaults of the architecture's config class where config.json leaves a field out.
  const { num_key_value_heads: _kv, max_position_embeddings: _mp, sliding_window: _sw, ...bare } =
    MISTRAL_V01;
  const m = llamaConfigFromHf(bare, FILE);
  assert.equal(m.kvHeads, 8);
  assert.equal(m.maxPositions, 131072);
  assert.equal(m.slidingWindow, 4096);
});

Deno.test("each field that would change the math is refused, naming the file and the field", () => {
  const cases: [string, unknown, string[]][] = [
    ["other model_type", { ...LLAMA2_7B, model_type: "gemma" }, ['"model_type"', '"gemma"']],
    ["Mixtral", { ...MISTRAL_V01, model_type: "mixtral" }, ['"model_type"', '"mixtral"']],
    ["Qwen3", { ...QWEN25_7B, model_type: "qwen3" }, ['"model_type"', '"qwen3"']],
    ["gelu MLP", { ...LLAMA2_7B, hidden_act: "gelu" }, ['"hidden_act"', '"gelu"']],
    ["gelu on Qwen2", { ...QWEN25_7B, hidden_act: "gelu_pytorch_tanh" }, ['"hidden_act"']],
    ["Llama attention bias", { ...LLAMA31_8B, attention_bias: true }, ['"attention_bias"']],
    ["Llama MLP bias", { ...LLAMA31_8B, mlp_bias: true }, ['"mlp_bias"']],
    ["attention dropout", { ...QWEN25_7B, attention_dropout: 0.1 }, ['"attention_dropout"', "0.1"]],
    [
      "dynamic RoPE",
      { ...LLAMA2_7B, rope_scaling: { type: "dynamic", factor: 2 } },
      ['"rope_scaling.rope_type"', '"dynamic"'],
    ],
    [
      "YaRN (Qwen2.5 long context)",
      {
        ...QWEN25_7B,
        rope_scaling: {
          factor: 4.0,
          original_max_position_embeddings: 32768,
          type: "yarn",
        },
      },
      ['"rope_scaling.rope_type"', '"yarn"'],
    ],
    [
      "YaRN in rope_parameters",
      { ...LLAMA2_7B, rope_parameters: { rope_type: "yarn", factor: 4, rope_theta: 1e4 } },
      ['"rope_parameters.rope_type"', '"yarn"'],
    ],
    [
      "per-layer-type rope_parameters",
      {
        ...LLAMA2_7B,
        rope_parameters: {
          full_attention: { rope_type: "default", rope_theta: 1e6 },
          sliding_attention: { rope_type: "default", rope_theta: 1e4 },
        },
      },
      ['"rope_parameters"'],
    ],
    ["partial RoPE", { ...LLAMA2_7B, partial_rotary_factor: 0.5 }, ['"partial_rotary_factor"']],
    [
      "GPTQ checkpoint",
      { ...LLAMA2_7B, quantization_config: { quant_method: "gptq", bits: 4 } },
      ['"quantization_config.quant_method"', '"gptq"'],
    ],
    [
      "bitsandbytes 8-bit",
      {
        ...LLAMA2_7B,
        quantization_config: { quant_method: "bitsandbytes", load_in_8bit: true },
      },
      ['"quantization_config.load_in_4bit"'],
    ],
    ["odd head_dim", { ...LLAMA2_7B, head_dim: 127 }, ["head_dim 127"]],
    [
      "malformed layer_types",
      { ...QWEN25_7B, use_sliding_window: true, layer_types: ["full_attention"] },
      ['"layer_types"'],
    ],
    [
      "malformed sliding_window",
      { ...MISTRAL_V01, sliding_window: "4k" },
      ['"sliding_window"'],
    ],
  ];
  for (const [name, json, parts] of cases) {
    assert.throws(() => llamaConfigFromHf(json, FILE), refusedWith(FILE, ...parts), name);
  }
});

Deno.test("sliding window: a job's max_seq_len is held to the window, naming the field", () => {
  const field = "hyperparameters.max_seq_len";
  const refuse = (c: LlamaConfig, n: number, ...parts: string[]) =>
    assert.throws(() => checkSequenceLength(c, n, field, FILE), refusedWith(field, FILE, ...parts));
  // Mistral 7B v0.1: window 4096 of 32768 positions. Up to 4096 tokens every token's window
  // holds its whole row, so full causal attention is the same math; 4097 is not.
  const m01 = llamaConfigFromHf(MISTRAL_V01, FILE);
  checkSequenceLength(m01, 4096, field, FILE);
  refuse(m01, 4097, '"sliding_window" 4096');
  // v0.3 has no window: only max_position_embeddings bounds it.
  const m03 = llamaConfigFromHf(MISTRAL_V03, FILE);
  checkSequenceLength(m03, 32768, field, FILE);
  refuse(m03, 32769, "max_position_embeddings 32768");
  // Qwen2: the window applies only with use_sliding_window, on layers from max_window_layers on
  // (or those layer_types marks sliding).
  const q = (over: Record<string, unknown>) => llamaConfigFromHf({ ...QWEN25_7B, ...over }, FILE);
  assert.equal(q({}).slidingWindow, undefined);
  assert.equal(q({ use_sliding_window: true }).slidingWindow, undefined); // 28 layers, 28 full
  assert.equal(q({ use_sliding_window: true, max_window_layers: 20 }).slidingWindow, 131072);
  const sliding = q({ use_sliding_window: true, sliding_window: 1024, max_window_layers: 0 });
  checkSequenceLength(sliding, 1024, field, FILE);
  refuse(sliding, 1025, '"sliding_window" 1024');
  const types = (t: string[]) =>
    q({ use_sliding_window: true, sliding_window: 512, layer_types: t }).slidingWindow;
  assert.equal(types(Array(28).fill("full_attention")), undefined);
  assert.equal(types([...Array(27).fill("full_attention"), "sliding_attention"]), 512);
  // LlamaConfig has no sliding window: the field does not change Llama's math.
  assert.equal(
    llamaConfigFromHf({ ...LLAMA2_7B, sliding_window: 16 }, FILE).slidingWindow,
    undefined,
  );
});

Deno.test("Quantize refuses an unsupported config before it writes anything", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-cfg-" });
  try {
    const cases: [Record<string, unknown>, string][] = [
      [{ model_type: "gpt_neox" }, '"model_type"'],
      [{ hidden_act: "gelu" }, '"hidden_act"'],
      [{ mlp_bias: true }, '"mlp_bias"'],
      [{ rope_scaling: { rope_type: "yarn", factor: 4 } }, '"rope_scaling.rope_type"'],
    ];
    for (const [i, [over, field]] of cases.entries()) {
      const model = join(dir, `m${i}`);
      await makeTinyLlama(model, {
        layers: 1,
        trainRecords: 4,
        evalRecords: 2,
        configOverrides: over,
      });
      const out = join(dir, `q${i}`);
      await assert.rejects(
        quantizeModel({
          modelDir: model,
          outputDir: out,
          quantType: "nf4",
          blocksize: 64,
          doubleQuant: true,
          skipModules: ["lm_head"],
          overwrite: false,
        }),
        refusedWith(join(model, "config.json"), field),
      );
      await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
