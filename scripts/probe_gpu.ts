/** Exits 0 when a WebGPU adapter can be opened (used by scripts/qlorad.sh to decide on Mesa). */
import { GpuContext } from "../src/gpu/context.ts";

const ctx = await GpuContext.open({ log: (l) => console.log(l) });
ctx.destroy();
