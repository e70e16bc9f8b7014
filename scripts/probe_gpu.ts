/**
 * Opens the WebGPU adapter qlorad would use (QLORAD_GPU_BACKEND applies) and describes it; used
 * by scripts/qlorad.sh to decide what to install and by scripts/test.ts to decide what to run.
 *   deno run -A scripts/probe_gpu.ts              # prints the adapter; exit 1 without one
 *   deno run -A scripts/probe_gpu.ts --hardware   # exit 1 unless it is a real GPU (not a CPU
 *                                                 # rasterizer such as llvmpipe or lavapipe)
 *   deno run -A scripts/probe_gpu.ts --json       # {"backend", "software", "adapter"} on stdout
 */
import { GpuContext } from "../src/gpu/context.ts";

const args = new Set(Deno.args);
for (const a of args) {
  if (a !== "--hardware" && a !== "--json") {
    console.error(`probe_gpu: unknown argument ${a} (expected --hardware or --json)`);
    Deno.exit(2);
  }
}

let line = "";
let ctx: GpuContext;
try {
  ctx = await GpuContext.open({ log: (l) => line = l });
} catch (e) {
  console.error(`probe_gpu: ${e instanceof Error ? e.message : String(e)}`);
  Deno.exit(1);
}
const software = ctx.isSoftware;
if (args.has("--json")) {
  console.log(JSON.stringify({
    backend: ctx.adapter.backend,
    software,
    adapter: line.replace(/^qlorad: GPU /, ""),
  }));
} else {
  console.log(line);
}
ctx.destroy();
Deno.exit(args.has("--hardware") && software ? 1 : 0);
