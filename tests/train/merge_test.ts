/**
 * Merged export: every linear equals dequant(W4) + scaling·B·A computed independently here in
 * float64 (F32 output, so the only rounding is the final one), other tensors unchanged, config
 * without quantization_config.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { quantizeModel } from "../../src/quant/quantize_model.ts";
import { mergeAdapter } from "../../src/train/merge.ts";
import { saveAdapter } from "../../src/train/peft.ts";
import { LoraLayout } from "../../src/model/lora.ts";
import { llamaConfigFromHf } from "../../src/model/config.ts";
import { SafetensorsFile } from "../../src/io/safetensors.ts";
import { dequantizeWeight, fromBnbTensors } from "../../src/quant/quant_state.ts";
import { Rng } from "../../src/util/random.ts";

Deno.test("export --merge folds scaling·B·A into the dequantized base", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makeTinyLlama(join(dir, "m"));
    await quantizeModel({
      modelDir: join(dir, "m"),
      outputDir: join(dir, "q"),
      quantType: "nf4",
      blocksize: 64,
      doubleQuant: true,
      skipModules: ["lm_head"],
      overwrite: false,
    });
    const cfg = llamaConfigFromHf(JSON.parse(await Deno.readTextFile(join(dir, "q/config.json"))));
    const spec = {
      r: 3,
      alpha: 6,
      dropout: 0,
      targets: ["q", "down"] as ("q" | "down")[],
      useRslora: true,
    };
    const layout = new LoraLayout(cfg, spec);
    const flat = new Float32Array(layout.totalFloats);
    const rng = new Rng(8);
    for (const s of layout.slots) {
      for (let i = 0; i < s.numel; i++) flat[s.offset + i] = rng.normal() * 0.1;
    }
    await saveAdapter(join(dir, "a"), layout, flat, "q");
    const r = await mergeAdapter({
      baseModelDir: join(dir, "q"),
      adapterDir: join(dir, "a"),
      outputDir: join(dir, "merged"),
      dtype: "F32",
      overwrite: false,
    });
    assert.equal(r.merged, 2 * 2);
    const merged = await SafetensorsFile.open(join(dir, "merged/model.safetensors"));
    const q = await SafetensorsFile.open(join(dir, "q/model.safetensors"));
    const scaling = 6 / Math.sqrt(3);
    for (
      const [module, path] of [["q", "self_attn.q_proj"], ["k", "self_attn.k_proj"], [
        "down",
        "mlp.down_proj",
      ]] as const
    ) {
      const name = `model.layers.1.${path}.weight`;
      const group = new Map<
        string,
        { dtype: string; shape: readonly number[]; data: Uint8Array }
      >();
      for (const n of q.names().filter((n) => n.startsWith(name))) {
        group.set(n, {
          dtype: q.info(n).dtype,
          shape: q.info(n).shape,
          data: await q.readBytes(n),
        });
      }
      const base = dequantizeWeight(fromBnbTensors(name.slice(0, -6), (n) => group.get(n), "q"));
      const got = await merged.readFloat32(name);
      const [rows, cols] = merged.info(name).shape;
      const a = layout.slot(1, module as "q", "A");
      const b = layout.slot(1, module as "q", "B");
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          let want = base[i * cols + j];
          if (a && b) {
            let dot = 0;
            for (let k = 0; k < 3; k++) {
              dot += flat[b.offset + i * 3 + k] * flat[a.offset + k * cols + j];
            }
            want += scaling * dot;
          }
          assert.equal(got[i * cols + j], Math.fround(want), `${name}[${i},${j}]`);
        }
      }
    }
    assert.deepEqual(
      await merged.readFloat32("model.norm.weight"),
      await q.readFloat32("model.norm.weight"),
    );
    assert.ok(!merged.names().some((n) => n.includes("absmax")));
    merged.close();
    q.close();
    const config = JSON.parse(await Deno.readTextFile(join(dir, "merged/config.json")));
    assert.equal(config.quantization_config, undefined);
    assert.equal(config.torch_dtype, "float32");
    await Deno.stat(join(dir, "merged/tokenizer.json"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
