import assert from "node:assert/strict";
import { join } from "node:path";
import { sweepPartials } from "../../src/io/sweep_partials.ts";
import { OutputDir, partialPath } from "../../src/io/atomic.ts";

Deno.test("sweepPartials removes crash leftovers at any depth and nothing else", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(root, "runs/a/checkpoints"), { recursive: true });
    await Deno.writeTextFile(join(root, "runs/a/adapter_config.json"), "{}");
    // What a killed writer leaves: a temp folder and a temp file, plus look-alikes to keep.
    const out = await OutputDir.create(join(root, "runs/a/checkpoints/step-00000010"));
    await Deno.writeTextFile(out.file("x"), "half");
    const tmpFile = partialPath(join(root, "models/q/model.safetensors"));
    await Deno.mkdir(join(root, "models/q"), { recursive: true });
    await Deno.writeTextFile(tmpFile, "half");
    await Deno.writeTextFile(join(root, "models/q/notes.partial-draft"), "keep");
    await Deno.mkdir(join(root, ".qlorad/jobs"), { recursive: true });
    await Deno.writeTextFile(partialPath(join(root, ".qlorad/jobs/x.json")), "job manager's");

    const removed = await sweepPartials(root, { skip: [".qlorad"] });
    assert.equal(removed.length, 2);
    assert.ok(removed.some((p) => p.startsWith("runs/a/checkpoints/step-00000010.partial-")));
    assert.ok(removed.some((p) => p.startsWith("models/q/model.safetensors.partial-")));
    await Deno.stat(join(root, "runs/a/adapter_config.json"));
    await Deno.stat(join(root, "models/q/notes.partial-draft"));
    assert.equal((await Array.fromAsync(Deno.readDir(join(root, ".qlorad/jobs")))).length, 1);
    assert.deepEqual(await sweepPartials(root, { skip: [".qlorad"] }), []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
