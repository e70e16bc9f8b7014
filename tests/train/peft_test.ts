/**
 * PEFT adapter files: exactly the keys, shapes and dtypes peft writes (from REFERENCE §6,
 * listed by hand here), the config fields, and reading back (also peft's ".default" keys and
 * bf16 tensors as Python may write them).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { LoraLayout } from "../../src/model/lora.ts";
import { loadAdapter, saveAdapter } from "../../src/train/peft.ts";
import { SafetensorsFile, writeSafetensors } from "../../src/io/safetensors.ts";
import { asBytes, bf16ArrayToF32, f32ArrayToBf16 } from "../../src/io/dtype.ts";
import { TINY } from "../model/setup.ts";
import { Rng } from "../../src/util/random.ts";

const spec = {
  r: 4,
  alpha: 16,
  dropout: 0.05,
  targets: ["q", "k", "down"] as ("q" | "k" | "down")[],
  useRslora: false,
};

Deno.test("saved adapter has peft's keys, shapes, dtypes and config fields", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const layout = new LoraLayout(TINY, spec);
    const noise = new Rng(3).normals(layout.totalFloats, 0.1);
    const flat = new Float32Array(layout.totalFloats); // alignment padding stays zero
    for (const s of layout.slots) {
      flat.set(noise.subarray(s.offset, s.offset + s.numel), s.offset);
    }
    await saveAdapter(dir, layout, flat, "models/tiny-nf4");
    const f = await SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
    const expected: Record<string, number[]> = {};
    for (let l = 0; l < 2; l++) {
      const attn = `base_model.model.model.layers.${l}.self_attn`;
      expected[`${attn}.q_proj.lora_A.weight`] = [4, 80];
      expected[`${attn}.q_proj.lora_B.weight`] = [80, 4];
      expected[`${attn}.k_proj.lora_A.weight`] = [4, 80];
      expected[`${attn}.k_proj.lora_B.weight`] = [40, 4];
      expected[`base_model.model.model.layers.${l}.mlp.down_proj.lora_A.weight`] = [4, 216];
      expected[`base_model.model.model.layers.${l}.mlp.down_proj.lora_B.weight`] = [80, 4];
    }
    assert.deepEqual(f.names().sort(), Object.keys(expected).sort());
    for (const [name, shape] of Object.entries(expected)) {
      assert.deepEqual(f.info(name).shape, shape, name);
      assert.equal(f.info(name).dtype, "F32");
    }
    assert.deepEqual(f.metadata, { format: "pt" });
    f.close();
    const text = await Deno.readTextFile(join(dir, "adapter_config.json"));
    const cfg = JSON.parse(text);
    assert.deepEqual(Object.keys(cfg), Object.keys(cfg).sort(), "sorted keys");
    assert.equal(cfg.peft_type, "LORA");
    assert.equal(cfg.task_type, "CAUSAL_LM");
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 16);
    assert.equal(cfg.lora_dropout, 0.05);
    assert.deepEqual(cfg.target_modules, ["q_proj", "k_proj", "down_proj"]);
    assert.equal(cfg.bias, "none");
    assert.equal(cfg.use_rslora, false);
    assert.equal(cfg.fan_in_fan_out, false);
    assert.equal(cfg.inference_mode, true);
    assert.equal(cfg.base_model_name_or_path, "models/tiny-nf4");

    const back = await loadAdapter(dir, TINY);
    assert.deepEqual(back.flat, flat);
    assert.deepEqual(back.spec, spec);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reads adapters as Python peft may write them: bf16, '.default' keys", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const layout = new LoraLayout(TINY, spec);
    const flat = new Rng(4).normals(layout.totalFloats, 0.1);
    const tensors = layout.toPeftTensors(flat).map((t) => ({
      name: t.name.replace(/\.lora_([AB])\.weight$/, ".lora_$1.default.weight"),
      dtype: "BF16" as const,
      shape: t.shape,
      data: asBytes(f32ArrayToBf16(t.data)),
    }));
    await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
    await Deno.writeTextFile(
      join(dir, "adapter_config.json"),
      JSON.stringify({
        peft_type: "LORA",
        r: 4,
        lora_alpha: 16,
        lora_dropout: 0.05,
        target_modules: ["k_proj", "q_proj", "down_proj"],
        bias: "none",
      }),
    );
    const back = await loadAdapter(dir, TINY);
    for (const s of layout.slots) {
      const want = bf16ArrayToF32(f32ArrayToBf16(flat.subarray(s.offset, s.offset + s.numel)));
      assert.deepEqual(back.flat.subarray(s.offset, s.offset + s.numel), want);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a bad adapter folder is refused naming the file and field", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadAdapter(dir, TINY), /adapter_config\.json: not found/);
    const layout = new LoraLayout(TINY, spec);
    await saveAdapter(dir, layout, new Float32Array(layout.totalFloats), "x");
    const cfgPath = join(dir, "adapter_config.json");
    const good = JSON.parse(await Deno.readTextFile(cfgPath));
    await Deno.writeTextFile(cfgPath, JSON.stringify({ ...good, r: 0 }));
    await assert.rejects(loadAdapter(dir, TINY), /adapter_config\.json: field "r"/);
    await Deno.writeTextFile(cfgPath, JSON.stringify({ ...good, r: 8 }));
    await assert.rejects(
      loadAdapter(dir, TINY),
      /lora_A\.weight has shape \[4,80\], expected \[8,80\]/,
    );
    await Deno.writeTextFile(cfgPath, JSON.stringify({ ...good, target_modules: ["qkv"] }));
    await assert.rejects(loadAdapter(dir, TINY), /target_modules: unknown module "qkv"/);
    await Deno.writeTextFile(cfgPath, JSON.stringify({ ...good, target_modules: ["q_proj"] }));
    await assert.rejects(loadAdapter(dir, TINY), /unexpected tensor/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
