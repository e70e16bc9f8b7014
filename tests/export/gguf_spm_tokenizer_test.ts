/**
 * A SentencePiece-style tokenizer (BPE with byte fallback and "▁" for spaces, the layout of
 * Llama 2's tokenizer.json) exported as llama.cpp's `llama` tokenizer model: llama.cpp's own
 * tokenizer, on the exported vocabulary alone, gives the ids @huggingface/tokenizers gives from
 * tokenizer.json, for a held-out text with characters the vocabulary lacks (byte fallback),
 * digits, punctuation and a run of spaces. The tokenizer is learned here from the tiny fixture's
 * corpus, one piece per "▁"-prefixed word, as SentencePiece trains.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tokenizerCorpus } from "../../scripts/tiny_llama/mod.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { addModelMetadata } from "../../src/export/gguf_model.ts";
import { addTokenizerMetadata } from "../../src/export/gguf_tokenizer.ts";
import { GgufMetadata, GgufWriter } from "../../src/export/gguf_writer.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { llamaCppUnavailable, runLlamaCpp } from "../llama_cpp/install.ts";
import { readGguf } from "./gguf_read.ts";

const SP = "\u2581";

/** BPE merges over "▁"-prefixed words: most frequent pair first, ties to the smaller pair. */
function trainSentencePieceBpe(corpus: string, numMerges: number) {
  const counts = new Map<string, number>();
  for (const w of (SP + corpus.replaceAll(" ", SP).replaceAll("\n", SP)).split(/(?=\u2581)/u)) {
    counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const words = [...counts].map(([w, n]) => ({ syms: [...w], n }));
  const chars = [...new Set(words.flatMap((w) => w.syms))].sort();
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + "\u0000" + syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    }
    let best: string | undefined;
    let bestN = 1;
    for (const [k, n] of pairs) {
      if (n > bestN || (n === bestN && best !== undefined && k < best)) [best, bestN] = [k, n];
    }
    if (!best) break;
    const [a, b] = best.split("\u0000");
    merges.push([a, b]);
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.syms[i]);
      }
      w.syms = out;
    }
  }
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  const add = (t: string) => {
    if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
  };
  for (let b = 0; b < 256; b++) add(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  chars.forEach(add);
  for (const [a, b] of merges) add(a + b);
  return { vocab, merges };
}

function tokenizerJson(vocab: Record<string, number>, merges: [string, string][]) {
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: SP },
        { type: "Replace", pattern: { String: " " }, content: SP },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: SP }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

const TEXT = "The capital of Iceland is Reykjavík,  isn't it? 17 + 4 = 21 (€5) naïve ünïcode!";

Deno.test({
  name:
    "SentencePiece-style BPE as llama.cpp's `llama` tokenizer: llama.cpp tokenizes like tokenizer.json",
  ignore: llamaCppUnavailable() !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "gguf-spm-" });
    try {
      const { vocab, merges } = trainSentencePieceBpe(tokenizerCorpus(), 300);
      await Deno.writeTextFile(
        join(dir, "tokenizer.json"),
        JSON.stringify(tokenizerJson(vocab, merges)),
      );
      await Deno.writeTextFile(
        join(dir, "tokenizer_config.json"),
        JSON.stringify({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }),
      );
      const n = Object.keys(vocab).length;
      const cfg: LlamaConfig = {
        hidden: 32,
        intermediate: 64,
        layers: 1,
        heads: 2,
        kvHeads: 2,
        headDim: 16,
        vocab: n,
        rmsEps: 1e-5,
        ropeTheta: 10000,
        tieEmbeddings: false,
        maxPositions: 64,
        eosTokenIds: [2],
        torchDtype: "float32",
      };
      const md = new GgufMetadata().string("general.architecture", "llama");
      addModelMetadata(md, cfg, "llama");
      const summary = await addTokenizerMetadata(md, dir, n);
      assert.equal(summary.model, "llama");
      const path = join(dir, "vocab.gguf");
      const w = await GgufWriter.create(path, md, []);
      await w.finish();
      const g = readGguf(await Deno.readFile(path));
      const tokens = g.kv.get("tokenizer.ggml.tokens") as string[];
      const scores = g.kv.get("tokenizer.ggml.scores") as number[];
      const types = g.kv.get("tokenizer.ggml.token_type") as number[];
      // The first merge's token scores highest among merged tokens; bytes are BYTE, <unk> UNKNOWN.
      assert.equal(scores[tokens.indexOf(merges[0].join(""))], -0);
      assert.equal(scores[tokens.indexOf(merges[5].join(""))], -5);
      assert.equal(types[tokens.indexOf("<0x41>")], 6);
      assert.equal(types[0], 2);
      assert.equal(types[1], 3);
      assert.equal(g.kv.get("tokenizer.ggml.add_space_prefix"), true);

      const want = (await loadTokenizer(dir)).encode(TEXT, { addSpecialTokens: false });
      assert.ok(want.some((id) => id >= 3 && id < 259), "the text exercises the byte fallback");
      const [r] = await runLlamaCpp(
        [{ model: path, tokens: [], text: TEXT, vocabOnly: true }],
        dir,
      );
      assert.deepEqual(r.tokenized, want);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
