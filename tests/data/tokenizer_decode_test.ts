/**
 * Decoding no tokens: a sample whose model emits EOS at once (src/train/evaluate_job.ts drops the
 * stop tokens) is an empty completion, not "token_ids must be a non-empty array".
 */
import assert from "node:assert/strict";
import { tinyTokenizer } from "./setup.ts";

Deno.test("tokenizer: decoding no ids gives the empty text; one id still decodes", async () => {
  const tok = await tinyTokenizer();
  assert.equal(tok.decode([]), "");
  assert.equal(tok.decode(new Uint32Array(0)), "");
  const ids = tok.encode(" Paris", { addSpecialTokens: false });
  assert.equal(tok.decode(ids), " Paris");
  // An EOS-only generation with the stop tokens removed, as Evaluate does it.
  const out = [tok.eosId!].filter((t) => t !== tok.eosId);
  assert.equal(tok.decode(out), "");
});
