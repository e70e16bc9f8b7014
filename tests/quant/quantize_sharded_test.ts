/**
 * Sharded inputs: the same weights as 3 shards + model.safetensors.index.json or as one
 * model.safetensors quantize to byte-identical folders (every file), for a Llama and a tied
 * Qwen2 (biases) in bf16, f16 and f32; Quantize reads the shards one after the other; a Linear
 * weight in a dtype it cannot read is refused naming the shard and the tensor.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTinyLlama, type TinyLlamaOptions } from "../../scripts/tiny_llama/mod.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";
import { HfCheckpoint } from "../../src/io/checkpoint.ts";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import { QloradError } from "../../src/util/errors.ts";

async function quantize(from: string, to: string, tensors: string[] = []) {
  return await quantizeModel({
    modelDir: from,
    outputDir: to,
    quantType: "nf4",
    blocksize: 64,
    doubleQuant: true,
    skipModules: ["lm_head"],
    overwrite: false,
    onProgress: (p) => tensors.push(p.tensor),
  });
}

async function filesOf(dir: string): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(dir)) out.set(e.name, await Deno.readFile(join(dir, e.name)));
  return out;
}

const CASES: [string, Partial<TinyLlamaOptions>][] = [
  ["llama bf16", { dtype: "BF16" }],
  ["qwen2 tied bf16", { modelType: "qwen2", tieWordEmbeddings: true, dtype: "BF16" }],
  ["llama f16", { dtype: "F16", layers: 1 }],
  ["qwen2 f32", { modelType: "qwen2", dtype: "F32", layers: 1 }],
];

for (const [label, opts] of CASES) {
  Deno.test(`3 shards and one file quantize to the same bytes (${label})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-shards-" });
    try {
      const common = { ...opts, seed: 61, trainRecords: 6, evalRecords: 2 };
      await makeTinyLlama(join(dir, "one"), { ...common, shards: 1 });
      await makeTinyLlama(join(dir, "three"), { ...common, shards: 3 });
      const order: string[] = [];
      const a = await quantize(join(dir, "one"), join(dir, "q-one"));
      const b = await quantize(join(dir, "three"), join(dir, "q-three"), order);
      assert.deepEqual(b, { ...a, outputDir: join(dir, "q-three") });

      const one = await filesOf(join(dir, "q-one"));
      const three = await filesOf(join(dir, "q-three"));
      assert.deepEqual([...three.keys()].sort(), [...one.keys()].sort());
      for (const [name, bytes] of one) assert.deepEqual(three.get(name), bytes, name);

      // Streamed shard by shard: the shard of each tensor read never goes back.
      const ck = await HfCheckpoint.open(join(dir, "three"));
      try {
        assert.equal(ck.weightFiles.length, 3);
        const shardOf = order.map((n) => ck.weightFiles.indexOf(ck.info(n).file));
        assert.deepEqual(shardOf, [...shardOf].sort((x, y) => x - y));
        assert.deepEqual(new Set(shardOf), new Set([0, 1, 2]));
        assert.equal(order.length, ck.names().length);
      } finally {
        ck.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a Linear weight in a dtype Quantize cannot read is refused naming shard and tensor", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-shards-" });
  try {
    const model = join(dir, "m");
    await makeTinyLlama(model, { layers: 1, shards: 3, trainRecords: 4, evalRecords: 2 });
    const ck = await HfCheckpoint.open(model);
    const name = "model.layers.0.mlp.up_proj.weight";
    const info = ck.info(name);
    // Rewrite its shard with that weight as F64 (same values), the rest unchanged.
    const tensors = [];
    for (const n of ck.names().filter((n) => ck.info(n).file === info.file)) {
      const t = ck.info(n);
      tensors.push(
        n === name
          ? {
            name: n,
            dtype: "F64" as const,
            shape: t.shape,
            data: new Uint8Array((await ck.readFloat64(n)).buffer),
          }
          : { name: n, dtype: t.dtype, shape: t.shape, data: await ck.readBytes(n) },
      );
    }
    ck.close();
    await Deno.remove(join(model, info.file));
    await writeSafetensors(join(model, info.file), tensors);
    await assert.rejects(quantize(model, join(dir, "q")), (e: unknown) => {
      assert.ok(e instanceof QloradError && e.kind === "invalid_argument", String(e));
      assert.ok(e.message.includes(join(model, info.file)), e.message);
      assert.ok(e.message.includes(`"${name}" is F64`), e.message);
      return true;
    });
    await assert.rejects(Deno.stat(join(dir, "q")), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
