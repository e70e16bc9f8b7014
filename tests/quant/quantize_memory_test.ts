/**
 * Quantizing streams tensor by tensor: on a ~45M-parameter checkpoint the process's peak
 * memory grows by well under the checkpoint's f32 size. The probe runs with the same V8
 * flags as the service (`--expose-gc`, see src/util/gc_hint.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { makeTinyLlama, SMALL_LLAMA_PRESET } from "../../scripts/tiny_llama/mod.ts";

Deno.test("quantizing a tens-of-millions-parameter checkpoint keeps peak memory well under its f32 size", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-mem-" });
  try {
    await makeTinyLlama(join(dir, "model"), { ...SMALL_LLAMA_PRESET, layers: 16, shards: 3 });
    await makeTinyLlama(join(dir, "warm"));
    const probe = new URL("./quantize_memory_probe.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        probe,
        join(dir, "warm"),
        join(dir, "model"),
        join(dir, "q"),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.equal(out.code, 0);
    const { before, peak, params } = JSON.parse(new TextDecoder().decode(out.stdout));
    const index = JSON.parse(
      await Deno.readTextFile(join(dir, "model", "model.safetensors.index.json")),
    );
    const totalParams = index.metadata.total_size / 2; // bf16
    const f32Size = totalParams * 4;
    assert.ok(params > 30e6, `quantized ${params} parameters`);
    const growth = peak - before;
    console.log(`growth ${growth} of ${f32Size}`);
    assert.ok(growth < f32Size / 4, `peak grew by ${growth} bytes; f32 size is ${f32Size}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
