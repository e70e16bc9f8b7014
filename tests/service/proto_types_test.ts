/**
 * The message types the handlers use (src/service/proto/, through messages.ts) are generated from
 * the proto: regenerating them with the pinned generator gives the committed files, byte for byte.
 * A proto change without `deno task gen-proto-types` fails here.
 */
import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { generateProtoTypes, PROTO_TYPES_DIR } from "../../scripts/gen_proto_types.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

async function files(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else out.set(relative(dir, p), await Deno.readTextFile(p));
    }
  };
  await walk(dir);
  return out;
}

Deno.test("proto types: the committed files are what the generator makes of the proto", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-proto-types-" });
  try {
    await generateProtoTypes(dir);
    const fresh = await files(dir);
    const committed = await files(join(ROOT, PROTO_TYPES_DIR));
    assert.ok(fresh.size > 20, `only ${fresh.size} files generated`);
    assert.deepEqual([...committed.keys()].sort(), [...fresh.keys()].sort());
    for (const [name, text] of fresh) {
      assert.equal(committed.get(name), text, `${name} is stale: run deno task gen-proto-types`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
