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

Deno.test("sweepPartials with olderThanMs (a fleet) leaves whatever was written lately", async () => {
  const root = await Deno.makeTempDir();
  try {
    const now = Date.now();
    const hoursAgo = (h: number) => new Date(now - h * 3600_000);
    const age = (path: string, h: number) => Deno.utime(path, hoursAgo(h), hoursAgo(h));
    await Deno.mkdir(join(root, "m"), { recursive: true });
    // A dead writer's file (3 h), a live writer's file (just written).
    const dead = partialPath(join(root, "m/dead.safetensors"));
    const live = partialPath(join(root, "m/live.safetensors"));
    await Deno.writeTextFile(dead, "half");
    await Deno.writeTextFile(live, "half");
    // A folder untouched for 5 h itself, but with a file inside written 10 minutes ago: live.
    const busy = partialPath(join(root, "m/busy"));
    await Deno.mkdir(busy);
    await Deno.writeTextFile(join(busy, "x"), "growing");
    // A folder whose whole content is 2 h old: dead.
    const gone = partialPath(join(root, "m/gone"));
    await Deno.mkdir(gone);
    await Deno.writeTextFile(join(gone, "y"), "old");
    await age(dead, 3);
    await age(join(busy, "x"), 1 / 6);
    await age(busy, 5);
    await age(join(gone, "y"), 2);
    await age(gone, 2);

    const removed = await sweepPartials(root, { olderThanMs: 3600_000, nowMs: now });
    assert.deepEqual(removed.sort(), [dead, gone].map((p) => p.slice(root.length + 1)).sort());
    await Deno.stat(live);
    await Deno.stat(join(busy, "x"));
    // Without an age limit (one server at start) both remaining ones go.
    assert.equal((await sweepPartials(root)).length, 2);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
