/**
 * The demo's data (scripts/tiny_llama/demo_datasets.ts): every fact in both forms, as often as
 * asked, in a seeded order; and the demo's sample prompts tokenize as a prefix of the records
 * that teach their answers, so what the sample asks is what training showed.
 */
import assert from "node:assert/strict";
import { CAPITALS, demoPrompts, makeDemoDatasets } from "../../scripts/tiny_llama/mod.ts";
import { tinyTokenizer } from "./setup.ts";

Deno.test("demo data: each of the first N capitals in both forms, `copies` times, seeded", () => {
  const { train, eval: evalSet } = makeDemoDatasets(7, 5, 3);
  assert.equal(train.length, 5 * 2 * 3);
  assert.equal(evalSet.length, 5 * 2);
  const count = new Map<string, number>();
  for (const r of train) count.set(JSON.stringify(r), (count.get(JSON.stringify(r)) ?? 0) + 1);
  for (const [c, k] of CAPITALS.slice(0, 5)) {
    const text = { text: `The capital of ${c} is ${k}.` };
    const qa = { prompt: `Q: What is the capital of ${c}?\nA:`, completion: ` ${k}` };
    assert.equal(count.get(JSON.stringify(text)), 3, c);
    assert.equal(count.get(JSON.stringify(qa)), 3, c);
    assert.ok(evalSet.some((r) => JSON.stringify(r) === JSON.stringify(qa)));
  }
  assert.equal(count.size, 10);
  assert.deepEqual(makeDemoDatasets(7, 5, 3), { train, eval: evalSet });
  assert.notDeepEqual(makeDemoDatasets(8, 5, 3).train, train);
  assert.throws(() => makeDemoDatasets(7, 2, 3), /capitals: .* got 2/);
  assert.throws(() => makeDemoDatasets(7, 5, 0), /copies: .* got 0/);
});

Deno.test("demo data: the sample prompts are token prefixes of the records that answer them", async () => {
  const tok = await tinyTokenizer();
  const { train } = makeDemoDatasets(1234, 16, 1);
  const [france, italy] = demoPrompts();
  const text = train.find((r) => "text" in r && r.text.startsWith(`${france} `)) as {
    text: string;
  };
  assert.equal(text.text, "The capital of France is Paris.");
  const qa = train.find((r) => "prompt" in r && r.prompt === italy) as { completion: string };
  assert.equal(qa.completion, " Rome");
  for (const [prompt, whole] of [[france, text.text], [italy, italy + qa.completion]]) {
    const p = tok.encode(prompt);
    assert.deepEqual(tok.encode(whole).slice(0, p.length), p, prompt);
  }
});
