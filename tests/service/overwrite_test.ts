/**
 * overwrite=true through a real server (issue 14, item 3): an output that is or contains an input
 * is refused before any job; an existing output is replaced only when the new one is complete, so
 * a job that fails leaves it untouched; a crash between moving the old output aside and renaming
 * the new one in is repaired at the next start.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { call, startTestServer, streamCall } from "./grpc_client.ts";

/** Every file under `dir` (relative path -> bytes). */
async function snapshot(dir: string, rel = ""): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(join(dir, rel))) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) { for (const [k, v] of await snapshot(dir, p)) out.set(k, v); }
    else out.set(p, await Deno.readFile(join(dir, p)));
  }
  return out;
}

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

const TRAIN = {
  base_model_path: "tiny",
  dataset_path: "tiny/train.jsonl",
  lora: { r: 2 },
  hyperparameters: { max_steps: 2, micro_batch_size: 2, max_seq_len: 32 },
};

Deno.test({
  name: "overwrite: an output holding an input is refused; a failed job leaves the old output",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      // The case: the dataset lives in the output folder.
      await Deno.mkdir(join(t.dataDir, "victim"));
      await Deno.copyFile(
        join(t.dataDir, "tiny/train.jsonl"),
        join(t.dataDir, "victim/train.jsonl"),
      );
      await Deno.writeTextFile(join(t.dataDir, "victim/notes.txt"), "keep me");
      const victimBefore = await snapshot(join(t.dataDir, "victim"));
      for (
        const [req, field] of [
          [{ dataset_path: "victim/train.jsonl" }, "dataset_path"],
          [{ eval_dataset_path: "victim/train.jsonl" }, "eval_dataset_path"],
        ] as const
      ) {
        const out = await streamCall(t.qlorad, "Train", {
          ...TRAIN,
          ...req,
          output_path: "victim",
          overwrite: true,
        });
        assert.equal(out.code, status.INVALID_ARGUMENT, `${JSON.stringify(req)}: ${out.details}`);
        assert.equal(
          out.details,
          `output_path "victim": must not be or contain ${field} (an input)`,
        );
        assert.equal(out.events.length, 0, "no job");
      }
      assert.deepEqual(await snapshot(join(t.dataDir, "victim")), victimBefore);

      // A job that fails (a bad record) with output_path = another model: the model stays.
      await Deno.mkdir(join(t.dataDir, "models"));
      await makeTinyLlama(join(t.dataDir, "models/other"), { seed: 99 });
      const otherBefore = await snapshot(join(t.dataDir, "models/other"));
      await Deno.writeTextFile(join(t.dataDir, "bad.jsonl"), '{"text": "fine"}\n{"text": 3}\n');
      const failed = await streamCall(t.qlorad, "Train", {
        ...TRAIN,
        dataset_path: "bad.jsonl",
        output_path: "models/other",
        overwrite: true,
      });
      assert.equal(failed.code, status.INVALID_ARGUMENT, failed.details);
      assert.match(failed.details, /bad\.jsonl:2/);
      assert.deepEqual(await snapshot(join(t.dataDir, "models/other")), otherBefore);
      assert.deepEqual(await names(join(t.dataDir, "models")), ["other"], "no leftovers");
      assert.equal((await call(t.qlorad, "ListJobs", {})).jobs.length, 1, "the failed job only");
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "overwrite: a complete new run replaces the old output; nothing is left beside it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const t = await startTestServer();
    try {
      await makeTinyLlama(join(t.dataDir, "tiny"));
      const first = await streamCall(t.qlorad, "Train", { ...TRAIN, output_path: "runs/a" });
      assert.equal(first.code, status.OK, first.details);
      const old = await Deno.readFile(join(t.dataDir, "runs/a/adapter_model.safetensors"));
      await Deno.writeTextFile(join(t.dataDir, "runs/a/stale.txt"), "from before");
      const second = await streamCall(t.qlorad, "Train", {
        ...TRAIN,
        output_path: "runs/a",
        overwrite: true,
        hyperparameters: { ...TRAIN.hyperparameters, seed: 7 },
      });
      assert.equal(second.code, status.OK, second.details);
      const now = await Deno.readFile(join(t.dataDir, "runs/a/adapter_model.safetensors"));
      assert.notDeepEqual(now, old, "the new adapter is in place");
      await assert.rejects(Deno.stat(join(t.dataDir, "runs/a/stale.txt")), Deno.errors.NotFound);
      assert.deepEqual(await names(join(t.dataDir, "runs")), ["a"]);
      // Its checkpoint events name the final place, never the temporary one.
      const ckpts = second.events.filter((e) => e.payload === "checkpoint");
      assert.ok(ckpts.length >= 2);
      for (const c of ckpts) assert.match(c.checkpoint.path, /^runs\/a(\/checkpoints\/step-\d+)?$/);
      await Deno.stat(join(t.dataDir, ckpts[0].checkpoint.path, "optimizer.safetensors"));
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: "overwrite: a crash between the two renames is repaired at the next start",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-crash-" });
    try {
      // What OutputDir.commit leaves when killed after moving the old output aside ...
      await Deno.mkdir(join(dataDir, "runs/b.old-0123456789ab"), { recursive: true });
      await Deno.writeTextFile(join(dataDir, "runs/b.old-0123456789ab/adapter.bin"), "old b");
      // ... and after renaming the new one in, before removing the old.
      await Deno.mkdir(join(dataDir, "runs/c.old-ba9876543210"), { recursive: true });
      await Deno.mkdir(join(dataDir, "runs/c"));
      await Deno.writeTextFile(join(dataDir, "runs/c/adapter.bin"), "new c");
      const t = await startTestServer({ dataDir });
      try {
        assert.deepEqual(await names(join(dataDir, "runs")), ["b", "c"]);
        assert.equal(await Deno.readTextFile(join(dataDir, "runs/b/adapter.bin")), "old b");
        assert.equal(await Deno.readTextFile(join(dataDir, "runs/c/adapter.bin")), "new c");
      } finally {
        await t.close();
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
