/** Subprocess for train_job_test.ts: runs the standard test training into `<dir>/<out>`. */
import { GpuContext } from "../../src/gpu/context.ts";
import { runTrainJob } from "../../src/train/train_job.ts";
import { trainOptions } from "./train_options.ts";

const [dir, out] = Deno.args;
const ctx = await GpuContext.open({ log: () => {} });
await runTrainJob(() => Promise.resolve(ctx), trainOptions(dir, out), {});
ctx.destroy();
