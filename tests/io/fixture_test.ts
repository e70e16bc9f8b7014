import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";
import { SafetensorsFile } from "../../src/io/safetensors.ts";
import { QloradError } from "../../src/util/errors.ts";
import {
  bpeEncode,
  makeTinyLlama,
  SPECIAL_TOKENS,
  tokenizerCorpus,
  trainBpe,
} from "../../scripts/tiny_llama/mod.ts";

const root = await Deno.makeTempDir({ prefix: "qlorad-fixture-" });
globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
const mainDir = join(root, "tiny");
const made = await makeTinyLlama(mainDir);
const readJson = async (name: string, dir = mainDir) =>
  JSON.parse(await Deno.readTextFile(join(dir, name)));
const tokJson = await readJson("tokenizer.json");
const tokConfig = await readJson("tokenizer_config.json");
const tokenizer = new Tokenizer(tokJson, tokConfig);

type Rec = {
  text?: string;
  prompt?: string;
  completion?: string;
  messages?: { role: string; content: string }[];
};
const readJsonl = async (name: string): Promise<Rec[]> =>
  (await Deno.readTextFile(join(mainDir, name))).trimEnd().split("\n").map((l) => JSON.parse(l));
const train = await readJsonl("train.jsonl");
const evalRecs = await readJsonl("eval.jsonl");

function render(messages: Rec["messages"], addGenerationPrompt = false): string {
  return new Template(tokConfig.chat_template).render({
    messages,
    bos_token: tokConfig.bos_token,
    eos_token: tokConfig.eos_token,
    add_generation_prompt: addGenerationPrompt,
  });
}

function recordText(r: Rec): string {
  return r.text ?? (r.prompt !== undefined ? r.prompt + r.completion : render(r.messages));
}

async function sameTree(a: string, b: string): Promise<void> {
  const names = (d: string) => [...Deno.readDirSync(d)].map((e) => e.name).sort();
  assert.deepEqual(names(a), names(b));
  for (const n of names(a)) {
    assert.deepEqual(await Deno.readFile(join(a, n)), await Deno.readFile(join(b, n)), n);
  }
}

Deno.test("fixture: same bytes twice", async () => {
  const again = join(root, "again");
  await makeTinyLlama(again);
  await sameTree(mainDir, again);
  assert.deepEqual(made.files, [
    "config.json",
    "eval.jsonl",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "train.jsonl",
  ]);
});

Deno.test("fixture: config.json and weights match the Llama layout", async () => {
  const config = await readJson("config.json");
  const vocab = tokenizer.get_vocab(true).size;
  assert.deepEqual(config.architectures, ["LlamaForCausalLM"]);
  assert.equal(config.model_type, "llama");
  const want = {
    hidden_size: 80,
    intermediate_size: 216,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 20,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    max_position_embeddings: 256,
    tie_word_embeddings: false,
    torch_dtype: "bfloat16",
    vocab_size: vocab,
  };
  for (const [k, v] of Object.entries(want)) assert.equal(config[k], v, k);
  assert.equal(tokenizer.id_to_token(config.bos_token_id), SPECIAL_TOKENS.bos);
  assert.equal(tokenizer.id_to_token(config.eos_token_id), SPECIAL_TOKENS.eos);
  const gen = await readJson("generation_config.json");
  assert.equal(gen.bos_token_id, config.bos_token_id);
  assert.equal(gen.eos_token_id, config.eos_token_id);

  const ck = await HfCheckpoint.open(mainDir);
  try {
    const h = 80, f = 216, q = 4 * 20, kv = 2 * 20;
    const shapes: Record<string, number[]> = {
      "model.embed_tokens.weight": [vocab, h],
      "model.norm.weight": [h],
      "lm_head.weight": [vocab, h],
    };
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}.`;
      Object.assign(shapes, {
        [p + "self_attn.q_proj.weight"]: [q, h],
        [p + "self_attn.k_proj.weight"]: [kv, h],
        [p + "self_attn.v_proj.weight"]: [kv, h],
        [p + "self_attn.o_proj.weight"]: [h, q],
        [p + "mlp.gate_proj.weight"]: [f, h],
        [p + "mlp.up_proj.weight"]: [f, h],
        [p + "mlp.down_proj.weight"]: [h, f],
        [p + "input_layernorm.weight"]: [h],
        [p + "post_attention_layernorm.weight"]: [h],
      });
    }
    assert.deepEqual(new Set(ck.names()), new Set(Object.keys(shapes)));
    for (const name of ck.names()) {
      const info = ck.info(name);
      assert.equal(info.dtype, "BF16", name);
      assert.deepEqual(info.shape, shapes[name], name);
      const v = await ck.readFloat32(name);
      let s = 0, s2 = 0;
      for (const x of v) (s += x), (s2 += x * x);
      const mean = s / v.length, std = Math.sqrt(s2 / v.length - mean * mean);
      if (name.endsWith("norm.weight")) {
        assert.ok(Math.abs(mean - 1) < 0.03 && std > 0.02 && std < 0.08, `${name} ${mean} ${std}`);
      } else {
        assert.ok(Math.abs(mean) < 0.01 && Math.abs(std - 0.06) < 0.006, `${name} ${mean} ${std}`);
      }
    }
    assert.deepEqual(ck.otherFiles(), [
      "generation_config.json",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
  } finally {
    ck.close();
  }
});

Deno.test("fixture: tokenizer.json loads in @huggingface/tokenizers and round-trips", () => {
  const samples = [
    ...train.slice(0, 80).map(recordText),
    ...evalRecs.map(recordText),
    "héllo wörld — naïve café 🙂\n\n\tTabs   and  spaces ",
    "Numbers: 12345 + 0.5 = 12345.5; don't, won't, y'all",
  ];
  for (const text of samples) {
    const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
    assert.equal(tokenizer.decode(ids), text);
  }
  // Plain encode prepends bos (as Llama 3's post-processor does); specials are single tokens.
  const bosId = tokenizer.token_to_id(SPECIAL_TOKENS.bos)!;
  assert.equal(tokenizer.encode("Paris").ids[0], bosId);
  for (const s of Object.values(SPECIAL_TOKENS)) {
    const ids = tokenizer.encode(`a${s}b`, { add_special_tokens: false }).ids;
    assert.equal(ids.length, 3, s);
    assert.equal(ids[1], tokenizer.token_to_id(s));
  }
  assert.equal(
    tokenizer.decode(tokenizer.encode("The capital").ids, { skip_special_tokens: true }),
    "The capital",
  );
  // Merges were learned: common words are one token.
  assert.deepEqual(tokenizer.tokenize(" capital of"), ["Ġcapital", "Ġof"]);
});

Deno.test("fixture: our BPE encoder and @huggingface/tokenizers agree", () => {
  const bpe = trainBpe(tokenizerCorpus(), 320);
  assert.equal(bpe.vocab.size + 4, tokenizer.get_vocab(true).size);
  // Plain text only: the reference encoder knows nothing of special tokens.
  const plain = (r: Rec) =>
    r.messages ? r.messages.map((m) => m.content).join("\n") : recordText(r);
  const texts = [...train.map(plain), tokenizerCorpus(), "unseen words: zephyr quixotic"];
  for (const text of texts) {
    assert.deepEqual(
      bpeEncode(bpe, text),
      tokenizer.encode(text, { add_special_tokens: false }).ids,
    );
  }
});

Deno.test("BPE training: hand-worked merges on a tiny corpus", () => {
  // Pieces: "ab", " ab", " ab", " abc". Pairs: (a,b) 4, (Ġ,a) 3, (b,c) 1 -> merge a+b;
  // then (Ġ,ab) 3, (ab,c) 1 -> merge Ġ+ab; then only count-1 pairs remain: stop.
  const m = trainBpe("ab ab ab abc", 10);
  assert.deepEqual(m.merges, [["a", "b"], ["Ġ", "ab"]]);
  assert.equal(m.vocab.get("ab"), 256);
  assert.equal(m.vocab.get("Ġab"), 257);
  assert.deepEqual(bpeEncode(m, "ab abc"), [256, 257, "c".charCodeAt(0)]);
});

Deno.test("fixture: chat template renders with @huggingface/jinja", () => {
  const msgs = [
    { role: "user", content: "What is the capital of Peru?" },
    { role: "assistant", content: "Lima." },
    { role: "user", content: "And of Chile?" },
  ];
  assert.equal(
    render(msgs, true),
    "<|begin_of_text|><|user|>What is the capital of Peru?<|assistant|>Lima.<|end_of_text|>" +
      "<|user|>And of Chile?<|assistant|>",
  );
  assert.equal(render(msgs.slice(0, 2)).endsWith("Lima.<|end_of_text|>"), true);
  assert.throws(() => render([{ role: "tool", content: "x" }]), /unsupported role: tool/);
});

Deno.test("fixture: datasets mix the three formats; eval is held out", () => {
  assert.equal(train.length, 320);
  assert.equal(evalRecs.length, 64);
  const kind = (r: Rec) =>
    r.text !== undefined ? "text" : r.prompt !== undefined ? "prompt" : "messages";
  for (const recs of [train, evalRecs]) {
    const kinds = new Set(recs.map(kind));
    assert.deepEqual([...kinds].sort(), ["messages", "prompt", "text"]);
    for (const r of recs) {
      if (r.prompt !== undefined) assert.equal(typeof r.completion, "string");
      if (r.messages) {
        assert.ok(r.messages.length >= 2);
        r.messages.forEach((m, i) => assert.equal(m.role, i % 2 ? "assistant" : "user"));
      }
      assert.ok(tokenizer.encode(recordText(r)).ids.length < 256, "fits max_position_embeddings");
    }
  }
  const trainKeys = new Set(train.map((r) => JSON.stringify(r)));
  for (const r of evalRecs) assert.ok(!trainKeys.has(JSON.stringify(r)), JSON.stringify(r));
  // Sums asked in eval never appear in training, in any format.
  const sums = (r: Rec) => [...recordText(r).matchAll(/(\d+) (?:\+|plus) (\d+)/g)].map((m) => m[0]);
  const trainSums = new Set(train.flatMap(sums).map((s) => s.replace("plus", "+")));
  const evalSums = evalRecs.flatMap(sums).map((s) => s.replace("plus", "+"));
  assert.ok(evalSums.length > 5);
  for (const s of evalSums) assert.ok(!trainSums.has(s), s);
});

Deno.test("fixture: sharded checkpoint holds the same tensors", async () => {
  const dir = join(root, "sharded");
  const r = await makeTinyLlama(dir, { shards: 3 });
  assert.deepEqual(r.files.filter((f) => f.includes("safetensors")), [
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
    "model.safetensors.index.json",
  ]);
  const index = await readJson("model.safetensors.index.json", dir);
  const single = await SafetensorsFile.open(join(mainDir, "model.safetensors"));
  const ck = await HfCheckpoint.open(dir);
  try {
    assert.equal(ck.sharded, true);
    assert.deepEqual([...ck.names()].sort(), single.names().sort());
    let total = 0;
    for (const name of single.names()) {
      assert.deepEqual(await ck.readBytes(name), await single.readBytes(name), name);
      total += single.info(name).byteLength;
    }
    assert.equal(index.metadata.total_size, total);
  } finally {
    ck.close();
    single.close();
  }
});

Deno.test("fixture: options change the model; an existing folder is kept unless overwrite", async () => {
  const dir = join(root, "custom");
  await Deno.mkdir(dir); // an empty folder is fine to fill
  const r = await makeTinyLlama(dir, {
    hidden: 32,
    intermediate: 40,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    dtype: "F32",
    tieWordEmbeddings: true,
    merges: 50,
    trainRecords: 60,
    evalRecords: 10,
  });
  const config = await readJson("config.json", dir);
  assert.equal(config.head_dim, 16);
  assert.equal(config.torch_dtype, "float32");
  assert.equal(config.vocab_size, 256 + 50 + 4);
  assert.equal(r.vocabSize, config.vocab_size);
  const ck = await HfCheckpoint.open(dir);
  try {
    assert.equal(ck.has("lm_head.weight"), false);
    assert.deepEqual(ck.info("model.layers.0.self_attn.k_proj.weight").shape, [16, 32]);
    assert.equal(ck.info("model.norm.weight").dtype, "F32");
  } finally {
    ck.close();
  }
  await assert.rejects(
    makeTinyLlama(dir),
    (e: unknown) => e instanceof QloradError && e.kind === "failed_precondition",
  );
  await makeTinyLlama(dir, { overwrite: true });
  await sameTree(dir, mainDir);
  await assert.rejects(makeTinyLlama(join(root, "bad"), { heads: 4, kvHeads: 3 }), /kvHeads/);
});
