/**
 * The quantize pipeline end to end: a random bf16 (also f16, f32) Llama folder in, a bitsandbytes
 * folder out,
 * every 4-bit group byte-identical to the independent Python model of bitsandbytes
 * (tests/reference/bnb_reference.py), kept tensors untouched, config.json extended.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import {
  cpuQuantizer,
  quantizeModel,
  type WeightQuantizer,
} from "../../src/quant/quantize_model.ts";
import { SafetensorsFile } from "../../src/io/safetensors.ts";
import { b64, fromB64, runReference } from "./helpers.ts";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import { gpuQuantizer } from "../../src/quant/gpu_quantizer.ts";

async function fixture(opts: Record<string, unknown> = {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-qm-" });
  await makeTinyLlama(join(dir, "model"), { seed: 77, ...opts });
  return dir;
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export async function checkAgainstPython(
  quantizer: WeightQuantizer,
  quantType: "nf4" | "fp4",
  doubleQuant: boolean,
  blocksize: number,
  dtype: "BF16" | "F16" | "F32" = "BF16",
): Promise<void> {
  const torchDtype = { BF16: "bfloat16", F16: "float16", F32: "float32" }[dtype];
  const dir = await fixture({ dtype });
  try {
    const out = join(dir, "q");
    const result = await quantizeModel({
      modelDir: join(dir, "model"),
      outputDir: out,
      quantType,
      blocksize,
      doubleQuant,
      skipModules: ["lm_head"],
      overwrite: false,
      quantizer,
    });
    const src = await SafetensorsFile.open(join(dir, "model", "model.safetensors"));
    const dst = await SafetensorsFile.open(join(out, "model.safetensors"));
    const maps = await runReference({ mode: "maps" });
    try {
      let quantized = 0;
      for (const name of src.names()) {
        const info = src.info(name);
        const is4bit = name.includes("_proj.weight");
        if (!is4bit) {
          assert.equal(dst.info(name).dtype, info.dtype, name);
          assert.deepEqual(await dst.readBytes(name), await src.readBytes(name), name);
          continue;
        }
        quantized++;
        const w = await src.readFloat32(name);
        const r = await runReference({
          mode: "quantize",
          weights_b64: b64(w),
          shape: info.shape,
          quant_type: quantType,
          blocksize,
          double_quant: doubleQuant,
          dtype: torchDtype,
        });
        assert.deepEqual(await dst.readBytes(name), fromB64(r.packed as string), `${name} codes`);
        const absmax = await dst.readBytes(`${name}.absmax`);
        if (doubleQuant) {
          assert.deepEqual(absmax, fromB64(r.absmax_codes as string), `${name} absmax codes`);
          assert.deepEqual(
            await dst.readBytes(`${name}.nested_absmax`),
            fromB64(r.nested_absmax as string),
            `${name} nested absmax`,
          );
          assert.deepEqual(
            await dst.readBytes(`${name}.nested_quant_map`),
            f32Bytes(new Float32Array(fromB64(maps.dynamic as string).buffer)),
            `${name} nested map`,
          );
        } else {
          assert.deepEqual(absmax, fromB64(r.absmax as string), `${name} absmax`);
          assert.ok(!dst.has(`${name}.nested_absmax`));
        }
        const qs = `${name}.quant_state.bitsandbytes__${quantType}`;
        assert.equal(
          new TextDecoder().decode(await dst.readBytes(qs)),
          new TextDecoder().decode(fromB64(r.quant_state as string)),
          `${name} quant_state JSON`,
        );
      }
      assert.equal(quantized, result.tensorsQuantized);
      assert.ok(!dst.has("lm_head.weight.absmax"), "lm_head is skipped");
    } finally {
      src.close();
      dst.close();
    }
    const config = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
    assert.equal(config.quantization_config.quant_method, "bitsandbytes");
    assert.equal(config.quantization_config.load_in_4bit, true);
    assert.equal(config.quantization_config.bnb_4bit_quant_type, quantType);
    assert.equal(config.quantization_config.bnb_4bit_use_double_quant, doubleQuant);
    assert.equal(config.quantization_config.bnb_4bit_compute_dtype, torchDtype);
    assert.equal(config.quantization_config.bnb_4bit_quant_storage, "uint8");
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      assert.deepEqual(
        await Deno.readFile(join(out, f)),
        await Deno.readFile(join(dir, "model", f)),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// The service quantizes on the GPU: every combination the issue names goes through the kernel.
for (const quantType of ["nf4", "fp4"] as const) {
  for (const doubleQuant of [true, false]) {
    for (const blocksize of [64, 128]) {
      gpuTest(
        `quantizeModel (gpu) ${quantType} dq=${doubleQuant} bs=${blocksize}: byte-identical to the Python model`,
        (ctx) => checkAgainstPython(gpuQuantizer(ctx), quantType, doubleQuant, blocksize),
      );
    }
  }
}

Deno.test(
  "quantizeModel (cpu reference) nf4 dq=true bs=64: byte-identical to the Python model",
  () => checkAgainstPython(cpuQuantizer, "nf4", true, 64),
);

// Published checkpoints come in bf16, f16 and f32: each input dtype through the GPU kernel.
for (const dtype of ["F16", "F32"] as const) {
  gpuTest(
    `quantizeModel (gpu) from ${dtype} weights: byte-identical to the Python model`,
    (ctx) => checkAgainstPython(gpuQuantizer(ctx), "nf4", true, 64, dtype),
  );
}

Deno.test("quantizeModel reports 4.127 bits/param for NF4+DQ at blocksize 64 on large tensors", async () => {
  const dir = await fixture({ hidden: 256, intermediate: 1024, layers: 1, heads: 4, kvHeads: 4 });
  try {
    const r = await quantizeModel({
      modelDir: join(dir, "model"),
      outputDir: join(dir, "q"),
      quantType: "nf4",
      blocksize: 64,
      doubleQuant: true,
      skipModules: ["lm_head"],
      overwrite: false,
    });
    assert.ok(Math.abs(r.bitsPerParameter - 4.127) < 0.01, `${r.bitsPerParameter}`);
    assert.equal(r.parametersQuantized, 4 * 256 * 256 + 3 * 256 * 1024);
    assert.ok(r.meanAbsError > 0 && r.maxAbsError >= r.meanAbsError);
    const noDq = await quantizeModel({
      modelDir: join(dir, "model"),
      outputDir: join(dir, "q2"),
      quantType: "nf4",
      blocksize: 64,
      doubleQuant: false,
      skipModules: ["lm_head"],
      overwrite: false,
    });
    assert.equal(noDq.bitsPerParameter, 4.5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantizeModel refuses an existing output unless overwrite, and never leaves partial output", async () => {
  const dir = await fixture();
  try {
    const opts = {
      modelDir: join(dir, "model"),
      outputDir: join(dir, "q"),
      quantType: "nf4" as const,
      blocksize: 64,
      doubleQuant: true,
      skipModules: ["lm_head"],
      overwrite: false,
    };
    await quantizeModel(opts);
    await assert.rejects(quantizeModel(opts), /already exists/);
    const first = await Deno.readFile(join(dir, "q", "model.safetensors"));
    await quantizeModel({ ...opts, overwrite: true, quantType: "fp4" });
    assert.notDeepEqual(await Deno.readFile(join(dir, "q", "model.safetensors")), first);
    // Cancelled mid-way: nothing under the final name, no temporary folder left behind.
    const controller = new AbortController();
    await assert.rejects(
      quantizeModel({
        ...opts,
        outputDir: join(dir, "cancelled"),
        signal: controller.signal,
        onProgress: (p) => {
          if (p.index === 5) controller.abort();
        },
      }),
      /cancelled/,
    );
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names.sort(), ["model", "q"]);
    // A model that is already quantized is refused.
    await assert.rejects(
      quantizeModel({ ...opts, modelDir: join(dir, "q"), outputDir: join(dir, "qq") }),
      /already quantized/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

closeGpuAfterTests();
