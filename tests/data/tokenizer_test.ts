import assert from "node:assert/strict";
import { join } from "node:path";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { QloradError } from "../../src/util/errors.ts";
import { ASSISTANT, BOS, EOS, modelCopy, tinyModelDir, tinyTokenizer, USER } from "./setup.ts";

Deno.test("tokenizer: ids, special tokens and vocabulary agree with the model's config.json", async () => {
  const dir = await tinyModelDir();
  const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
  const tok = await tinyTokenizer();
  assert.equal(tok.vocabSize, config.vocab_size);
  assert.equal(tok.bosId, config.bos_token_id);
  assert.equal(tok.eosId, config.eos_token_id);
  assert.equal(tok.bosToken, BOS);
  assert.equal(tok.eosToken, EOS);
  const text = "The capital of France is Paris.";
  const plain = tok.encode(text, { addSpecialTokens: false });
  // The post-processor adds bos on a plain encode, and only bos.
  assert.deepEqual(tok.encode(text), [config.bos_token_id, ...plain]);
  assert.equal(tok.decode(plain), text);
  // Special token strings inside text are single tokens.
  assert.deepEqual(tok.encode(`${EOS}${BOS}`, { addSpecialTokens: false }), [
    config.eos_token_id,
    config.bos_token_id,
  ]);
});

Deno.test("tokenizer: the chat template renders the fixture's turn format", async () => {
  const tok = await tinyTokenizer();
  assert.ok(tok.hasChatTemplate);
  const msgs = [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello." },
    { role: "user", content: "Bye" },
  ];
  assert.equal(
    tok.applyChatTemplate(msgs),
    `${BOS}${USER}Hi${ASSISTANT}Hello.${EOS}${USER}Bye`,
  );
  assert.equal(
    tok.applyChatTemplate(msgs, { addGenerationPrompt: true }),
    `${BOS}${USER}Hi${ASSISTANT}Hello.${EOS}${USER}Bye${ASSISTANT}`,
  );
  assert.throws(
    () => tok.applyChatTemplate([{ role: "system", content: "x" }]),
    (e: unknown) =>
      e instanceof QloradError && e.kind === "invalid_argument" &&
      /unsupported role: system/.test(e.message),
  );
});

Deno.test("tokenizer: missing tokenizer.json is not_found naming it", async () => {
  const dir = await modelCopy();
  await Deno.remove(join(dir, "tokenizer.json"));
  await assert.rejects(
    () => loadTokenizer(dir),
    (e: unknown) =>
      e instanceof QloradError && e.kind === "not_found" &&
      e.message.includes(join(dir, "tokenizer.json")),
  );
});

Deno.test("tokenizer: without chat_template, applying one names tokenizer_config.json", async () => {
  const dir = await modelCopy((cfg) => delete cfg.chat_template);
  const tok = await loadTokenizer(dir);
  assert.equal(tok.hasChatTemplate, false);
  assert.throws(
    () => tok.applyChatTemplate([{ role: "user", content: "x" }]),
    (e: unknown) =>
      e instanceof QloradError && e.kind === "invalid_argument" &&
      e.message.includes(join(dir, "tokenizer_config.json")),
  );
  // A chat_template.jinja beside the config is used instead.
  await Deno.writeTextFile(join(dir, "chat_template.jinja"), "{{ messages[0]['content'] }}!");
  const withFile = await loadTokenizer(dir);
  assert.equal(withFile.applyChatTemplate([{ role: "user", content: "x" }]), "x!");
});
