/**
 * The demo's datasets (scripts/demo.ts), beside the fixture's own (datasets.ts, which tests use
 * byte for byte and which stays as it is). The fixture's mix of capitals, sums and chat turns is
 * too much for a minute of LoRA training on a randomly initialised model; the demo teaches a few
 * capitals in exactly the two forms its sample prompts ask, so that after its minute the
 * completions visibly answer ("The capital of France is" -> " Paris."). Eval holds the same
 * facts: it measures what was learned, not generalisation.
 */
import { invalidArgument } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";
import { CAPITALS } from "./corpus.ts";
import type { DatasetRecord } from "./datasets.ts";

/** The prompts the demo samples, in the forms the demo data teaches. */
export function demoPrompts(): string[] {
  return ["The capital of France is", "Q: What is the capital of Italy?\nA:"];
}

function factRecords(country: string, city: string): DatasetRecord[] {
  return [
    { text: `The capital of ${country} is ${city}.` },
    { prompt: `Q: What is the capital of ${country}?\nA:`, completion: ` ${city}` },
  ];
}

/**
 * `capitals` facts (the first of CAPITALS: France and Italy among them), each in both forms,
 * `copies` times over in a seeded order for train; each form once for eval.
 */
export function makeDemoDatasets(
  seed: number,
  capitals: number,
  copies: number,
): { train: DatasetRecord[]; eval: DatasetRecord[] } {
  if (!Number.isInteger(capitals) || capitals < 3 || capitals > CAPITALS.length) {
    throw invalidArgument(`capitals: must be an integer in 3..${CAPITALS.length}, got ${capitals}`);
  }
  if (!Number.isInteger(copies) || copies < 1) {
    throw invalidArgument(`copies: must be a positive integer, got ${copies}`);
  }
  const facts = CAPITALS.slice(0, capitals).flatMap(([c, k]) => factRecords(c, k));
  const train: DatasetRecord[] = [];
  for (let i = 0; i < copies; i++) train.push(...facts);
  const rng = new Rng(seed ^ 0xde70);
  for (let i = train.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [train[i], train[j]] = [train[j], train[i]];
  }
  return { train, eval: facts };
}
