/**
 * Run as a subprocess by quantize_memory_test.ts: quantizes a model folder and prints the
 * process's resident-set peak growth (VmHWM after minus VmRSS before), in bytes, as JSON.
 */
import { quantizeModel } from "../../src/quant/quantize_model.ts";

function status(field: string): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return Number(m![1]) * 1024;
}

const [modelDir, outputDir] = Deno.args;
const before = status("VmRSS");
const r = await quantizeModel({
  modelDir,
  outputDir,
  quantType: "nf4",
  blocksize: 64,
  doubleQuant: true,
  skipModules: ["lm_head"],
  overwrite: false,
});
console.log(JSON.stringify({ before, peak: status("VmHWM"), params: r.parametersQuantized }));
