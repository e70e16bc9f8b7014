/**
 * Paths swapped after validation, through a real server (issue 14, item 4). A job waits in the
 * queue behind a held Quantize; meanwhile a folder or file it was validated with is replaced by a
 * symlink that leads outside the data directory. When the job starts it must refuse
 * (PERMISSION_DENIED), write nothing outside, and echo none of the outside file's content. Files
 * inside an input folder that are symlinks leading outside are refused at validation.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import { CancelledError } from "../../src/util/errors.ts";
import {
  call,
  follow,
  type Msg,
  startTestServer,
  streamCall,
  type TestServer,
} from "./grpc_client.ts";

const SECRET = "root:x:0:0:s3cr3t-content:/root:/bin/bash\n";

/** A Quantize stand-in that holds the GPU queue until released. */
function holdingQuantizer() {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const quantize = async (o: QuantizeOptions): Promise<QuantizeResult> => {
    await new Promise<void>((resolve, reject) => {
      o.signal?.addEventListener("abort", () => reject(new CancelledError()), { once: true });
      held.then(resolve);
    });
    return {
      parametersQuantized: 1,
      tensorsQuantized: 1,
      tensorsKept: 0,
      bitsPerParameter: 4,
      bytesIn: 1,
      bytesOut: 1,
      meanAbsError: 0,
      maxAbsError: 0,
      outputDir: o.outputDir,
    };
  };
  return { quantize, release };
}

/** Runs `swap` while a job of `rpc(req)` waits in the queue, then lets it start; its outcome. */
async function swapWhileQueued(
  t: TestServer,
  release: () => void,
  rpc: string,
  req: Msg,
  swap: () => Promise<void>,
) {
  const holder = follow(t.qlorad.Quantize({ model_path: "tiny", output_path: "held" }));
  await holder.until((e) => e.state === "JOB_STATE_RUNNING");
  const job = follow(t.qlorad[rpc](req));
  await job.until((e) => e.state === "JOB_STATE_QUEUED");
  await swap();
  release();
  assert.equal((await holder.done).code, status.OK);
  return await job.done;
}

async function listAll(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test({
  name: "a path swapped for a symlink while its job was queued is refused when the job starts",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const outside = await Deno.makeTempDir({ prefix: "qlorad-outside-" });
    await Deno.writeTextFile(join(outside, "secret.jsonl"), SECRET);
    let fake = holdingQuantizer();
    const t = await startTestServer({
      quantize: (o) => fake.quantize(o),
    });
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const train = {
        base_model_path: "tiny",
        dataset_path: "data/train.jsonl",
        lora: { r: 2 },
        hyperparameters: { max_steps: 2, micro_batch_size: 2, max_seq_len: 32 },
      };
      await Deno.mkdir(join(t.dataDir, "data"));
      await Deno.copyFile(join(t.dataDir, "tiny/train.jsonl"), join(t.dataDir, "data/train.jsonl"));

      // 1. The output's parent becomes a link to a folder outside: the adapter went there.
      await Deno.mkdir(join(t.dataDir, "race"));
      await Deno.mkdir(join(outside, "target"));
      const out1 = await swapWhileQueued(
        t,
        fake.release,
        "Train",
        { ...train, output_path: "race/out" },
        async () => {
          await Deno.rename(join(t.dataDir, "race"), join(t.dataDir, "race-was"));
          await Deno.symlink(join(outside, "target"), join(t.dataDir, "race"));
        },
      );
      assert.equal(out1.code, status.PERMISSION_DENIED, out1.details);
      assert.match(out1.details, /^output_path "race\/out"/);
      assert.deepEqual(await listAll(join(outside, "target")), [], "nothing written outside");
      assert.ok(!out1.events.some((e) => e.payload === "train_metrics"));

      // 2. The dataset becomes a link to a file outside: it was read, and its start echoed.
      fake = holdingQuantizer();
      const out2 = await swapWhileQueued(
        t,
        fake.release,
        "Train",
        { ...train, output_path: "runs/b" },
        async () => {
          await Deno.remove(join(t.dataDir, "data/train.jsonl"));
          await Deno.symlink(join(outside, "secret.jsonl"), join(t.dataDir, "data/train.jsonl"));
        },
      );
      assert.equal(out2.code, status.PERMISSION_DENIED, out2.details);
      assert.match(out2.details, /^dataset_path "data\/train\.jsonl": changed since the request/);
      for (const leak of ["root", "s3cr3t", "'r'"]) assert.ok(!out2.details.includes(leak));

      // 3. Evaluate's model folder becomes a link to a model outside.
      await makeTinyLlama(join(outside, "model"));
      await Deno.mkdir(join(t.dataDir, "m"));
      for await (const e of Deno.readDir(join(t.dataDir, "tiny"))) {
        await Deno.copyFile(join(t.dataDir, "tiny", e.name), join(t.dataDir, "m", e.name));
      }
      fake = holdingQuantizer();
      const out3 = await swapWhileQueued(
        t,
        fake.release,
        "Evaluate",
        { base_model_path: "m", dataset_path: "tiny/eval.jsonl", max_seq_len: 32 },
        async () => {
          await Deno.remove(join(t.dataDir, "m"), { recursive: true });
          await Deno.symlink(join(outside, "model"), join(t.dataDir, "m"));
        },
      );
      assert.equal(out3.code, status.PERMISSION_DENIED, out3.details);
      assert.match(out3.details, /^base_model_path "m"/);
      for (const o of [out1, out2, out3]) {
        assert.ok(!o.details.includes(t.dataDir) && !o.details.includes(outside), o.details);
        assert.ok(!o.details.includes("/proc/self/fd"), o.details);
      }
    } finally {
      fake.release();
      await t.close();
      await Deno.remove(outside, { recursive: true });
    }
  },
});

Deno.test({
  name: "a file inside an input folder that links outside is refused before any job",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const outside = await Deno.makeTempDir({ prefix: "qlorad-outside-" });
    await Deno.writeTextFile(join(outside, "config.json"), SECRET);
    const fake = holdingQuantizer();
    fake.release();
    const t = await startTestServer({ quantize: fake.quantize });
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      await Deno.remove(join(t.dataDir, "tiny/config.json"));
      await Deno.symlink(join(outside, "config.json"), join(t.dataDir, "tiny/config.json"));
      const cases: [string, Msg][] = [
        ["Quantize", { model_path: "tiny", output_path: "q" }],
        ["Train", { base_model_path: "tiny", dataset_path: "tiny/train.jsonl", output_path: "r" }],
        ["Evaluate", { base_model_path: "tiny", dataset_path: "tiny/eval.jsonl" }],
      ];
      for (const [rpc, req] of cases) {
        const out = await streamCall(t.qlorad, rpc, req);
        assert.equal(out.code, status.PERMISSION_DENIED, `${rpc}: ${out.details}`);
        assert.match(out.details, /"config\.json" is a symlink that leads outside/);
        assert.equal(out.events.length, 0);
        assert.ok(!out.details.includes("s3cr3t") && !out.details.includes("root"), out.details);
      }
      const est = await call(t.qlorad, "EstimateMemory", { base_model_path: "tiny" }).catch((e) =>
        e
      );
      assert.equal(est.code, status.PERMISSION_DENIED, est.details);
      assert.deepEqual((await call(t.qlorad, "ListJobs", {})).jobs, []);
    } finally {
      await t.close();
      await Deno.remove(outside, { recursive: true });
    }
  },
});
