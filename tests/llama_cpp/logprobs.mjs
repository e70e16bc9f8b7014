/**
 * Runs llama.cpp (node-llama-cpp's prebuilt CPU build) on GGUF files for qlorad's export tests
 * and prints, as one JSON line, each job's per-token log-probabilities of a token sequence:
 *   node tests/llama_cpp/logprobs.mjs jobs.json
 * jobs.json: [{ "model": path, "lora": [path]?, "tokens": [ids], "text": string?,
 *              "kvCache": "F32" (default) | "F16" (llama.cpp's default), "logits": bool?,
 *              "vocabOnly": bool? (load the tokenizer alone and only tokenize `text`) }]
 * Output: [{ "logprobs": [log p(tokens[t] | tokens[<t]) for t >= 1], "vocab": n,
 *            "tokenized": llama.cpp's own tokens of `text` (no special tokens) when given,
 *            "logits": [[raw logits by token id] per position but the last] when asked }]
 * Token ids go in directly, so the comparison does not depend on llama.cpp's tokenizer; the
 * log-softmax is taken here in float64 over llama.cpp's raw float32 logits.
 */
import { readFileSync } from "node:fs";

// A specifier in a variable: `deno check tests/` then leaves this Node-only import alone
// (node-llama-cpp lives in tests/llama_cpp/node_modules, not in Deno's import map).
const NODE_LLAMA_CPP = "node-llama-cpp";
const { getLlama, LlamaLogLevel } = await import(NODE_LLAMA_CPP);

const jobs = JSON.parse(readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({
  gpu: false,
  build: "never",
  logLevel: LlamaLogLevel.error,
});
const results = [];
for (const job of jobs) {
  if (job.vocabOnly) {
    // A tokenizer-only file: llama.cpp's tokens of `text` (no special tokens, no bos).
    const vocab = await llama.loadModel({ modelPath: job.model, vocabOnly: true });
    results.push({ logprobs: [], vocab: 0, tokenized: vocab.tokenize(job.text, false) });
    await vocab.dispose();
    continue;
  }
  const model = await llama.loadModel({ modelPath: job.model, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: 512,
    batchSize: 512,
    threads: 1,
    // llama.cpp keeps K and V in f16 by default; f32 (and no flash attention, which would round
    // through f16 too) leaves the weights' type as the only rounding the export decides.
    flashAttention: false,
    experimentalKvCacheKeyType: job.kvCache ?? "F32",
    experimentalKvCacheValueType: job.kvCache ?? "F32",
    ...(job.lora ? { lora: { adapters: job.lora.map((filePath) => ({ filePath })) } } : {}),
  });
  const sequence = context.getSequence();
  const tokens = job.tokens;
  const input = tokens.map((t, i) =>
    i < tokens.length - 1 ? [t, { generateNext: { logits: true } }] : t
  );
  const out = await sequence.controlledEvaluate(input);
  const logprobs = [];
  const allLogits = [];
  let size = 0;
  for (let i = 0; i + 1 < tokens.length; i++) {
    const logits = out[i]?.next?.logits;
    if (!logits) throw new Error(`no logits at position ${i}`);
    size = logits.size;
    let max = -Infinity;
    for (const v of logits.values()) max = Math.max(max, v);
    let sum = 0;
    for (const v of logits.values()) sum += Math.exp(v - max);
    logprobs.push(logits.get(tokens[i + 1]) - max - Math.log(sum));
    if (job.logits) {
      const row = new Array(size);
      for (const [id, v] of logits) row[id] = v;
      allLogits.push(row);
    }
  }
  const tokenized = job.text === undefined ? undefined : model.tokenize(job.text, false);
  results.push({
    logprobs,
    vocab: size,
    tokenized,
    logits: job.logits ? allLogits : undefined,
  });
  await context.dispose();
  await model.dispose();
}
await llama.dispose();
process.stdout.write(JSON.stringify(results) + "\n");
