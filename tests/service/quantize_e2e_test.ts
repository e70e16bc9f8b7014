/**
 * Quantize end to end over gRPC with the real quantizeModel on the tiny Llama fixture: per-tensor
 * events checked against the source checkpoint's header, the result's numbers checked against an
 * independent decode of the written bitsandbytes tensors (REFERENCE.md §1, §4, §5), a client that
 * disconnects and WatchJob replay, and CancelJob leaving no output behind.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { status } from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { SafetensorsFile } from "../../src/io/safetensors.ts";
import { NF4_TABLE } from "../reference/dequant_f64.ts";
import { call, follow, healthStatus, startTestServer, streamCall } from "./grpc_client.ts";
import type { Msg, TestServer } from "./grpc_client.ts";

const LINEAR = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/;

interface SourceTensor {
  name: string;
  byteLength: number;
  shape: number[];
}

async function sourceTensors(file: string): Promise<SourceTensor[]> {
  const f = await SafetensorsFile.open(file);
  try {
    return f.names().map((name) => {
      const info = f.info(name);
      return { name, byteLength: info.byteLength, shape: [...info.shape] };
    });
  } finally {
    f.close();
  }
}

/**
 * Decodes every NF4 + double-quant weight in `outFile` (float64) and compares it with the source
 * weight: the mean and max absolute error over all quantized parameters.
 */
async function decodeErrors(srcFile: string, outFile: string, names: string[]) {
  const src = await SafetensorsFile.open(srcFile);
  const out = await SafetensorsFile.open(outFile);
  try {
    let sum = 0, max = 0, n = 0;
    for (const name of names) {
      const w = await src.readFloat32(name);
      const packed = await out.readBytes(name);
      const codes = await out.readBytes(`${name}.absmax`);
      const nested = await out.readFloat32(`${name}.nested_absmax`);
      const map8 = await out.readFloat32(`${name}.nested_quant_map`);
      const state = JSON.parse(
        new TextDecoder().decode(await out.readBytes(`${name}.quant_state.bitsandbytes__nf4`)),
      );
      assert.equal(state.quant_type, "nf4");
      assert.equal(state.blocksize, 64);
      // REFERENCE §4 checks on the signed dynamic map.
      assert.deepEqual(
        [map8[0], map8[127], map8[254], map8[255]].map((x) => Math.round(x * 1e8) / 1e8),
        [-0.99296874, 0, 0.99296874, 1],
      );
      for (let i = 0; i < w.length; i++) {
        const b = Math.floor(i / 64);
        const absmax = map8[codes[b]] * nested[Math.floor(b / 256)] + state.nested_offset;
        const byte = packed[i >> 1];
        const nibble = i % 2 === 0 ? byte >> 4 : byte & 15;
        const e = Math.abs(NF4_TABLE[nibble] * absmax - w[i]);
        sum += e;
        if (e > max) max = e;
        n++;
      }
    }
    return { mean: sum / n, max, n };
  } finally {
    src.close();
    out.close();
  }
}

async function partialsIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.includes(".partial-")) out.push(e.name);
  return out;
}

async function withTiny(fn: (t: TestServer) => Promise<void>) {
  const t = await startTestServer();
  try {
    await makeTinyLlama(path.join(t.dataDir, "models", "tiny"));
    await fn(t);
    assert.equal(await healthStatus(t), "SERVING");
  } finally {
    await t.close();
  }
}

Deno.test("e2e: Quantize streams one event per tensor and a result that matches the output", async () => {
  await withTiny(async (t) => {
    const srcFile = path.join(t.dataDir, "models", "tiny", "model.safetensors");
    const tensors = await sourceTensors(srcFile);
    const out = await streamCall(t.qlorad, "Quantize", {
      model_path: "models/tiny",
      output_path: "out/tiny-nf4",
    });
    assert.equal(out.code, status.OK, out.details);
    const ev = out.events;
    assert.deepEqual(ev.map((e) => e.seq), ev.map((_, i) => i + 1));
    assert.deepEqual(ev.slice(0, 2).map((e) => e.state), ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING"]);

    // One Progress per tensor of the source, in order, with its size.
    const progress = ev.filter((e) => e.payload === "progress").map((e) => e.progress);
    assert.deepEqual(progress.map((p: Msg) => p.tensor).sort(), tensors.map((x) => x.name).sort());
    assert.deepEqual(progress.map((p: Msg) => p.index), tensors.map((_, i) => i + 1));
    assert.ok(progress.every((p: Msg) => p.total === tensors.length));
    const byName = new Map(tensors.map((x) => [x.name, x]));
    for (const p of progress) {
      assert.equal(p.bytes_in, byName.get(p.tensor)!.byteLength, p.tensor);
      assert.equal(p.quantized, LINEAR.test(p.tensor), p.tensor);
    }

    const last = ev.at(-1)!;
    assert.equal(last.state, "JOB_STATE_SUCCEEDED");
    assert.equal(last.payload, "quantize_result");
    const r = last.quantize_result;
    const linear = tensors.filter((x) => LINEAR.test(x.name));
    const sizes = linear.map((x) => x.shape[0] * x.shape[1]);
    const params = sizes.reduce((a, b) => a + b, 0);
    assert.equal(r.parameters_quantized, params);
    assert.equal(r.tensors_quantized, linear.length);
    assert.equal(r.tensors_kept, tensors.length - linear.length);
    assert.equal(r.bytes_in, tensors.reduce((a, x) => a + x.byteLength, 0));
    assert.equal(r.output_path, "out/tiny-nf4");
    // 4-bit codes + 8-bit absmax per 64 + f32 nested absmax per 256 blocks (REFERENCE §4).
    const bits = sizes.reduce(
      (a, n) => a + 8 * Math.ceil(n / 2) + 8 * Math.ceil(n / 64) + 32 * Math.ceil(n / 64 / 256),
      0,
    );
    assert.ok(Math.abs(r.bits_per_parameter - bits / params) < 1e-9, `${r.bits_per_parameter}`);

    // The output is in place under its final name, complete, with nothing half-written around.
    const outDir = path.join(t.dataDir, "out", "tiny-nf4");
    const outFile = path.join(outDir, "model.safetensors");
    const config = JSON.parse(await Deno.readTextFile(path.join(outDir, "config.json")));
    assert.equal(config.quantization_config.bnb_4bit_quant_type, "nf4");
    assert.equal(r.bytes_out, (await Deno.stat(outFile)).size);
    assert.deepEqual(await partialsIn(path.join(t.dataDir, "out")), []);

    const decoded = await decodeErrors(srcFile, outFile, linear.map((x) => x.name));
    assert.equal(decoded.n, params);
    assert.ok(decoded.mean > 0);
    assert.ok(
      Math.abs(r.mean_abs_error - decoded.mean) <= 1e-6 * decoded.mean,
      `${r.mean_abs_error} vs ${decoded.mean}`,
    );
    assert.ok(
      Math.abs(r.max_abs_error - decoded.max) <= 1e-6 * decoded.max,
      `${r.max_abs_error} vs ${decoded.max}`,
    );

    const job = await call(t.qlorad, "GetJob", { job_id: last.job_id });
    assert.equal(job.state, "JOB_STATE_SUCCEEDED");
    assert.deepEqual(job.last_event, last);

    // Again without overwrite: refused before any job, and the output is untouched.
    const again = await streamCall(t.qlorad, "Quantize", {
      model_path: "models/tiny",
      output_path: "out/tiny-nf4",
    });
    assert.equal(again.code, status.FAILED_PRECONDITION);
    assert.equal((await Deno.stat(outFile)).size, r.bytes_out);
  });
});

Deno.test("e2e: the job outlives its client; WatchJob replays it from any seq", async () => {
  await withTiny(async (t) => {
    const first = follow(t.qlorad.Quantize({
      model_path: "models/tiny",
      output_path: "out/tiny-fp4",
      quant_type: "QUANT_TYPE_FP4",
      double_quant: false,
    }));
    const jobId = (await first.until((e) => e.state === "JOB_STATE_QUEUED")).job_id;
    first.stream.cancel();
    await first.done;

    const all = await streamCall(t.qlorad, "WatchJob", { job_id: jobId });
    assert.equal(all.code, status.OK);
    const last = all.events.at(-1)!;
    assert.equal(last.state, "JOB_STATE_SUCCEEDED");
    assert.deepEqual(all.events.map((e) => e.seq), all.events.map((_, i) => i + 1));
    const tail = await streamCall(t.qlorad, "WatchJob", { job_id: jobId, from_seq: 3 });
    assert.deepEqual(tail.events, all.events.slice(2));

    // 4 bits + an f32 absmax per 64 values, without double quant.
    assert.ok(Math.abs(last.quantize_result.bits_per_parameter - 4.5) < 1e-9);
    const config = JSON.parse(
      await Deno.readTextFile(path.join(t.dataDir, "out", "tiny-fp4", "config.json")),
    );
    assert.equal(config.quantization_config.bnb_4bit_quant_type, "fp4");
    assert.equal(config.quantization_config.bnb_4bit_use_double_quant, false);
  });
});

Deno.test("e2e: CancelJob stops a running quantize and leaves no output", async () => {
  const t = await startTestServer();
  try {
    // Big enough that quantizing takes a while after the first tensor is reported.
    await makeTinyLlama(path.join(t.dataDir, "models", "bigger"), {
      layers: 12,
      hidden: 256,
      intermediate: 688,
      heads: 8,
      kvHeads: 4,
    });
    const q = follow(t.qlorad.Quantize({ model_path: "models/bigger", output_path: "out/big" }));
    const jobId = (await q.until((e) => e.payload === "progress")).job_id;
    await call(t.qlorad, "CancelJob", { job_id: jobId });
    const outcome = await q.done;
    assert.equal(outcome.code, status.CANCELLED, outcome.details);
    const job = await call(t.qlorad, "GetJob", { job_id: jobId });
    assert.equal(job.state, "JOB_STATE_CANCELLED");
    assert.equal(job.error.code, "CANCELLED");
    // Nothing under the final name, nothing half-written beside it.
    const outParent = path.join(t.dataDir, "out");
    const left = await Array.fromAsync(Deno.readDir(outParent)).catch(() => []);
    assert.deepEqual(left.map((e) => e.name), []);
    assert.equal(await healthStatus(t), "SERVING");
  } finally {
    await t.close();
  }
});
