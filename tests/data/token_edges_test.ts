/**
 * A turn edge inside a token, located with a real tokenizer whose config asks decode() to clean
 * up tokenization spaces (Llama 3: clean_up_tokenization_spaces true, so " ," decodes as ","). The
 * edge search decodes token prefixes and compares them with the rendered text, so it must decode
 * the text as it is; before, a " ," in an earlier turn made every prefix look foreign and the
 * trained range ran on to the end of the conversation. Expected tokens are derived by hand from
 * each token's own text: trained are exactly those that overlap the assistant content.
 */
import assert from "node:assert/strict";
import { chatSpans, encodeMessages } from "../../src/data/encode.ts";
import { IGNORE_INDEX } from "../../src/data/records.ts";
import { llama3WithTemplate } from "./real_tokenizers.ts";

// No separators: the content's last token runs into the next role's name.
const TEMPLATE = "{% for m in messages %}{{ m.role }}:{{ m.content }}{% endfor %}";

const MESSAGES = [
  { role: "user", content: "Hi , there . Is it ok ?" },
  { role: "assistant", content: "Hello" },
  { role: "user", content: "again , please" },
];

Deno.test("token edges: a span edge inside a token is found when decoding cleans up spaces", async () => {
  const tok = await llama3WithTemplate(TEMPLATE);
  assert.equal(tok.decode(tok.encode("a , b", { addSpecialTokens: false })), "a, b");
  const { text, spans } = chatSpans(tok, MESSAGES);
  assert.equal(text, "user:Hi , there . Is it ok ?assistant:Hellouser:again , please");
  assert.deepEqual(spans, [[text.indexOf("Hello"), text.indexOf("Hello") + 5]]);
  const [[a, b]] = spans;
  const enc = encodeMessages(tok, MESSAGES);
  // Each token's characters, from its own bytes (all ASCII here, so one token is whole chars).
  let at = 0;
  const expected = enc.inputIds.map((id) => {
    const piece = tok.decode([id], { cleanUpTokenizationSpaces: false });
    assert.equal(text.slice(at, at + piece.length), piece, "tokens spell the text");
    const overlaps = at < b && at + piece.length > a;
    at += piece.length;
    return overlaps ? id : IGNORE_INDEX;
  });
  assert.equal(at, text.length);
  assert.ok(expected.some((l) => l !== IGNORE_INDEX));
  assert.deepEqual(enc.labels, expected);
});
