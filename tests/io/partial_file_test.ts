/**
 * src/io/partial_file.ts: the bytes land under the final name only on commit, an abort leaves
 * nothing, a failed rename leaves no temporary file once aborted, and a closed file refuses
 * writes naming the final path.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PartialFile } from "../../src/io/partial_file.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("partial file: written in pieces, visible under its name only after commit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-partial-" });
  try {
    const rng = new Rng(31);
    const pieces = [77, 1, 4099].map((n) =>
      Uint8Array.from({ length: n }, () => Math.floor(rng.next() * 256))
    );
    const path = join(dir, "out.bin");
    const f = await PartialFile.create(path);
    assert.ok(f.tempPath.startsWith(`${path}.partial-`));
    for (const p of pieces) await f.write(p);
    assert.deepEqual(names(dir), [f.tempPath.split("/").pop()]);
    await f.commit();
    assert.deepEqual(names(dir), ["out.bin"]);
    assert.deepEqual(await Deno.readFile(path), Uint8Array.from(pieces.flatMap((p) => [...p])));
    await f.abort(); // After commit: a no-op, the file stays.
    assert.deepEqual(names(dir), ["out.bin"]);
    await assert.rejects(
      () => f.write(new Uint8Array(3)),
      (e) => e instanceof QloradError && e.message === `${path}: writer is finished`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("partial file: abort leaves nothing; a failed rename leaves nothing once aborted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-partial-" });
  try {
    const f = await PartialFile.create(join(dir, "a.bin"));
    await f.write(new Uint8Array([1, 2, 3]));
    await f.abort();
    assert.deepEqual(names(dir), []);
    await assert.rejects(
      () => f.commit(),
      (e) => e instanceof QloradError && /a\.bin: writer is aborted$/.test(e.message),
    );
    // The final name is a non-empty folder: the rename fails, abort removes the temporary file.
    await Deno.mkdir(join(dir, "b.bin", "inside"), { recursive: true });
    const g = await PartialFile.create(join(dir, "b.bin"));
    await g.write(new Uint8Array([9]));
    await assert.rejects(() => g.commit());
    await g.abort();
    assert.deepEqual(names(dir), ["b.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
