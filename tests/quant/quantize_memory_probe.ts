/**
 * Run as a subprocess by quantize_memory_test.ts: quantizes a tiny model (warm-up), then the
 * model under test, and prints the resident-set peak (VmHWM) and the resident set before it.
 */
import { quantizeModel } from "../../src/quant/quantize_model.ts";

function status(field: string): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return Number(m![1]) * 1024;
}

const [warmDir, modelDir, outputDir] = Deno.args;
const run = (from: string, to: string) =>
  quantizeModel({
    modelDir: from,
    outputDir: to,
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
    skipModules: ["lm_head"],
    overwrite: false,
  });
// Warm up on a tiny model first: code loading and JIT are not what this measures.
await run(warmDir, `${outputDir}-warm`);
(globalThis as { gc?: () => void }).gc?.();
const before = status("VmRSS");
const r = await run(modelDir, outputDir);
console.log(JSON.stringify({ before, peak: status("VmHWM"), params: r.parametersQuantized }));
