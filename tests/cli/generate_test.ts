/**
 * `qlorad generate` as a user runs it: bad flags exit 2 naming the flag (before any file is
 * read); on the tiny fixture a greedy generation from a prompt and from chat messages streams
 * the same text as the library's own greedy path (greedyGenerate on a TrainingEngine, the path
 * Evaluate's samples take, itself checked against the float64 reference in
 * tests/train/generate_test.ts). On an adapter with f16 the job's KV cache is f16 and
 * greedyGenerate's f32: that rounding could only flip a near-tie of the top two logits (the test
 * passes on lavapipe's Vulkan, f16, as on OpenGL ES, f32).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCommand } from "../../src/cli/command.ts";
import { GENERATE, generate } from "../../src/cli/generate.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { loadBaseModel } from "../../src/model/load.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import { greedyGenerate } from "../../src/train/generate.ts";
import type { GpuContext } from "../../src/gpu/context.ts";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";

/** Runs `qlorad generate ARGS` in this process with its output captured. */
async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCommand(GENERATE, args, {
    print: (l) => out.push(l),
    printError: (l) => err.push(l),
  });
  return { code, out, err };
}

const OK = ["--base", "b", "--prompt", "Hi"];

/** [arguments, the flag the message must name]; each is refused before any file is read. */
const BAD_FLAGS: Array<[string[], string]> = [
  [["--prompt", "Hi"], "--base"],
  [["--base", "b"], "--prompt"],
  [[...OK, "--messages", "m.json"], "--messages"],
  [["--base", "b", "--prompt", ""], "--prompt"],
  [[...OK, "--max-new-tokens", "0"], "--max-new-tokens"],
  [[...OK, "--max-new-tokens", "4097"], "--max-new-tokens"],
  [[...OK, "--max-new-tokens", "2.5"], "--max-new-tokens"],
  [[...OK, "--temperature", "-0.1"], "--temperature"],
  [[...OK, "--temperature", "hot"], "--temperature"],
  [[...OK, "--top-k", "-1"], "--top-k"],
  [[...OK, "--top-p", "0"], "--top-p"],
  [[...OK, "--top-p", "1.5"], "--top-p"],
  [[...OK, "--seed", "4294967296"], "--seed"],
  [[...OK, "--stop", ""], "--stop"],
  [[...OK, "--stop", "x".repeat(257)], "--stop"],
  [[...OK, ...Array.from({ length: 17 }, (_, i) => ["--stop", `s${i}`]).flat()], "--stop"],
  [[...OK, "--ignore-eos=yes"], "--ignore-eos"],
  [[...OK, "--temperature"], "--temperature"],
  [[...OK, "--bogus"], "--bogus"],
];

Deno.test("cli generate: every bad flag exits 2 naming the flag, with the usage", async () => {
  for (const [args, flag] of BAD_FLAGS) {
    const r = await run(args);
    const what = args.join(" ").slice(0, 80);
    const err = r.err.join("\n");
    assert.equal(r.code, 2, `${what}: ${err}`);
    assert.ok(err.split("\n")[0].includes(flag), `${what}: should name ${flag}: ${err}`);
    assert.ok(err.includes("usage:\n  qlorad generate --base DIR"), what);
    assert.deepEqual(r.out, [], what);
  }
});

Deno.test("cli generate: a bad --messages file exits 2 naming --messages and the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-generate-cli-" });
  try {
    const cases: Array<[string, string]> = [
      ["missing.json", ""],
      ["not-json.json", "{"],
      ["empty.json", "[]"],
      ["no-role.json", JSON.stringify([{ content: "hi" }])],
      ["object.json", JSON.stringify({ role: "user", content: "hi" })],
    ];
    for (const [name, text] of cases) {
      const file = join(dir, name);
      if (text !== "") await Deno.writeTextFile(file, text);
      const r = await run(["--base", "b", "--messages", file]);
      const first = r.err.join("\n").split("\n")[0];
      assert.equal(r.code, 2, `${name}: ${first}`);
      assert.ok(first.includes("--messages") && first.includes(name), `${name}: ${first}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli generate: --help prints the usage with the defaults and exits 0", async () => {
  const r = await run(["--help"]);
  assert.equal(r.code, 0);
  const usage = r.out.join("\n");
  assert.match(usage, /--max-new-tokens 128/);
  assert.match(usage, /--temperature 0 \(greedy\)/);
});

/** The library's greedy continuation of `ids` on the base alone, decoded. */
async function libraryGreedy(
  ctx: GpuContext,
  dir: string,
  ids: number[],
  maxNewTokens: number,
): Promise<number[]> {
  const model = await loadBaseModel(ctx, dir);
  const engine = new TrainingEngine(ctx, model, {
    lora: { r: 1, alpha: 1, dropout: 0, targets: [], useRslora: false },
    maxShape: { batch: 1, seq: ids.length + maxNewTokens },
    gradientCheckpointing: false,
    seed: 0,
    maxGradNorm: 0,
    optimizerGpuBudgetBytes: 0,
    evalOnly: true,
  });
  try {
    return await greedyGenerate(engine, ids, maxNewTokens, []);
  } finally {
    engine.destroy();
    model.destroy();
  }
}

gpuTest(
  "cli generate: greedy text on the tiny fixture is the library's greedy path",
  async (ctx) => {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-generate-cli-" });
    try {
      const base = join(dir, "tiny");
      await makeTinyLlama(base);
      const tokenizer = await loadTokenizer(base);
      const n = 11;
      const messagesFile = join(dir, "chat.json");
      const chat = [{ role: "user", content: "What is the capital of France?" }];
      await Deno.writeTextFile(messagesFile, JSON.stringify(chat));
      const prompt = "The capital of France is";
      const inputs: Array<[string[], number[]]> = [
        [["--prompt", prompt], tokenizer.encode(prompt, { addSpecialTokens: true })],
        [
          ["--messages", messagesFile],
          tokenizer.encode(tokenizer.applyChatTemplate(chat, { addGenerationPrompt: true }), {
            addSpecialTokens: false,
          }),
        ],
      ];
      for (const [flags, ids] of inputs) {
        const pieces: string[] = [];
        const err: string[] = [];
        const r = await generate(
          ["--base", base, ...flags, "--max-new-tokens", String(n), "--ignore-eos"],
          { print: () => {}, printError: (l) => err.push(l) },
          (t) => pieces.push(t),
        );
        const want = await libraryGreedy(ctx, base, ids, n);
        const what = flags.join(" ");
        assert.equal(want.length, n, what);
        assert.deepEqual(r.tokenIds, want, what);
        assert.equal(r.promptTokens, ids.length, what);
        assert.equal(r.finishReason, "length", what);
        // What the user saw: the streamed pieces, then a newline.
        assert.equal(pieces.join(""), tokenizer.decode(want) + "\n", what);
        assert.match(
          err.at(-1)!,
          new RegExp(`^\\[length: ${ids.length} prompt tokens, ${n} generated`),
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

closeGpuAfterTests();
