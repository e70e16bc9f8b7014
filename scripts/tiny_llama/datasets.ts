/**
 * The fixture's train and eval JSONL records, in all three dataset formats (text, prompt /
 * completion, chat messages), drawn from a seeded generator with a learnable pattern: eval asks
 * only held-out sums and never repeats a training record, so it measures the pattern, not recall.
 */
import { invalidArgument } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";
import { CAPITALS } from "./corpus.ts";

type Message = { role: "user" | "assistant"; content: string };
export type DatasetRecord =
  | { text: string }
  | { prompt: string; completion: string }
  | { messages: Message[] };

const MAX_OPERAND = 20;
/** Sums held out of training: eval asks only these, so it measures the pattern, not recall. */
function isHeldOutSum(a: number, b: number): boolean {
  return (a * 7 + b * 3) % 5 === 0;
}

function capitalRecord(rng: Rng, i: number): DatasetRecord {
  const [c, k] = CAPITALS[i];
  switch (rng.int(5)) {
    case 0:
      return { text: `The capital of ${c} is ${k}.` };
    case 1: {
      const [c2, k2] = CAPITALS[rng.int(CAPITALS.length)];
      return { text: `${k} is the capital of ${c}. The capital of ${c2} is ${k2}.` };
    }
    case 2:
      return { prompt: `Q: What is the capital of ${c}?\nA:`, completion: ` ${k}` };
    case 3:
      return {
        messages: [
          { role: "user", content: `What is the capital of ${c}?` },
          { role: "assistant", content: `The capital of ${c} is ${k}.` },
        ],
      };
    default: {
      const [c2, k2] = CAPITALS[rng.int(CAPITALS.length)];
      return {
        messages: [
          { role: "user", content: `What is the capital of ${c}?` },
          { role: "assistant", content: `${k}.` },
          { role: "user", content: `And of ${c2}?` },
          { role: "assistant", content: `${k2}.` },
        ],
      };
    }
  }
}

function sumRecord(rng: Rng, heldOut: boolean): DatasetRecord {
  let a: number, b: number;
  do {
    a = rng.int(MAX_OPERAND);
    b = rng.int(MAX_OPERAND);
  } while (isHeldOutSum(a, b) !== heldOut);
  switch (rng.int(3)) {
    case 0:
      return { text: `${a} plus ${b} equals ${a + b}.` };
    case 1:
      return { prompt: `${a} + ${b} =`, completion: ` ${a + b}` };
    default:
      return {
        messages: [
          { role: "user", content: `What is ${a} plus ${b}?` },
          { role: "assistant", content: `${a + b}` },
        ],
      };
  }
}

/** Train and eval records; eval never repeats a train record and asks only held-out sums. */
export function makeDatasets(
  seed: number,
  trainRecords: number,
  evalRecords: number,
): { train: DatasetRecord[]; eval: DatasetRecord[] } {
  const rng = new Rng(seed ^ 0x5eed);
  const train: DatasetRecord[] = [];
  const seen = new Set<string>();
  const add = (r: DatasetRecord) => {
    train.push(r);
    seen.add(JSON.stringify(r));
  };
  // Every capital at least once, then a 2:1 mix of capitals and sums.
  for (let i = 0; i < CAPITALS.length && train.length < trainRecords; i++) {
    add(capitalRecord(rng, i));
  }
  while (train.length < trainRecords) {
    add(rng.int(3) < 2 ? capitalRecord(rng, rng.int(CAPITALS.length)) : sumRecord(rng, false));
  }
  const evalSet: DatasetRecord[] = [];
  for (let tries = 0; evalSet.length < evalRecords; tries++) {
    if (tries > 100 * evalRecords + 1000) {
      throw invalidArgument(`cannot draw ${evalRecords} eval records distinct from training`);
    }
    const r = rng.int(2) === 0
      ? capitalRecord(rng, rng.int(CAPITALS.length))
      : sumRecord(rng, true);
    const key = JSON.stringify(r);
    if (seen.has(key)) continue;
    seen.add(key);
    evalSet.push(r);
  }
  return { train, eval: evalSet };
}
