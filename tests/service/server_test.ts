import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import * as path from "node:path";
import type { QuantizeOptions, QuantizeResult } from "../../src/quant/quantize_model.ts";
import {
  call,
  healthStatus,
  reflectedFileCount,
  reflectedServices,
  startTestServer,
  streamCall,
  writeData,
} from "./grpc_client.ts";
import type { TestServer } from "./grpc_client.ts";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";

Deno.test("health is SERVING for the server and qlorad.v1.QLoRA", async () => {
  const t = await startTestServer();
  try {
    assert.equal(await healthStatus(t, ""), "SERVING");
    assert.equal(await healthStatus(t, "qlorad.v1.QLoRA"), "SERVING");
  } finally {
    await t.close();
  }
});

Deno.test("reflection lists qlorad.v1.QLoRA and health, and describes the contract", async () => {
  const t = await startTestServer();
  try {
    const services = await reflectedServices(t);
    assert.ok(services.includes("qlorad.v1.QLoRA"), services.join(","));
    assert.ok(services.includes("grpc.health.v1.Health"), services.join(","));
    // qlorad.proto and google/protobuf/timestamp.proto
    assert.ok(await reflectedFileCount(t, "qlorad.v1.QLoRA") >= 2);
  } finally {
    await t.close();
  }
});

/** A server whose quantizer must never be called: every request below is refused first. */
async function withRefusingServer(fn: (t: TestServer, outside: string) => Promise<void>) {
  const calls: QuantizeOptions[] = [];
  const t = await startTestServer({
    quantize: (o: QuantizeOptions): Promise<QuantizeResult> => {
      calls.push(o);
      return Promise.reject(new Error("must not be called"));
    },
  });
  const outside = await Deno.makeTempDir({ prefix: "qlorad-outside-" });
  try {
    await makeTinyLlama(path.join(t.dataDir, "models", "tiny"));
    await makeTinyLlama(path.join(outside, "model"));
    await Deno.symlink(path.join(outside, "model"), path.join(t.dataDir, "escape"));
    await Deno.symlink(outside, path.join(t.dataDir, "models", "out-link"));
    await fn(t, outside);
    assert.equal(calls.length, 0);
    assert.deepEqual((await call(t.qlorad, "ListJobs", {})).jobs, [], "no job was created");
    // Nothing was written outside the server's own folder.
    const top = [];
    for await (const e of Deno.readDir(t.dataDir)) top.push(e.name);
    assert.deepEqual(top.sort(), [".qlorad", "escape", "models"]);
    assert.deepEqual([...Deno.readDirSync(outside)].map((e) => e.name), ["model"]);
  } finally {
    await t.close();
    await Deno.remove(outside, { recursive: true });
  }
}

/** Quantize is refused with `code`, no events, a message with `parts`, no host path; still healthy. */
async function refused(
  t: TestServer,
  outside: string,
  req: Record<string, unknown>,
  code: status,
  ...parts: string[]
): Promise<void> {
  const out = await streamCall(t.qlorad, "Quantize", {
    model_path: "models/tiny",
    output_path: "out/tiny-nf4",
    ...req,
  });
  const what = `${JSON.stringify(req)} -> ${status[out.code]}: ${out.details}`;
  assert.equal(out.code, code, what);
  assert.equal(out.events.length, 0, what);
  for (const p of parts) {
    assert.ok(out.details.includes(p), `missing ${JSON.stringify(p)} in ${what}`);
  }
  const hostDirs = [t.dataDir, await Deno.realPath(t.dataDir), outside];
  const sent = Object.values(req).filter((v) => typeof v === "string") as string[];
  if (!sent.some((v) => v.startsWith("/"))) {
    for (const h of hostDirs) assert.ok(!out.details.includes(h), `host path in ${what}`);
  }
  assert.equal(await healthStatus(t), "SERVING", `after ${what}`);
  assert.equal(await healthStatus(t, "qlorad.v1.QLoRA"), "SERVING");
}

type Case = [req: Record<string, unknown>, code: status, ...parts: string[]];

Deno.test("Quantize refuses paths outside the data directory, naming the field", async () => {
  await withRefusingServer(async (t, outside) => {
    const { INVALID_ARGUMENT, PERMISSION_DENIED } = status;
    const cases: Case[] = [
      [{ model_path: "../x" }, INVALID_ARGUMENT, 'model_path "../x"', ".."],
      [{ model_path: "models/../../x" }, INVALID_ARGUMENT, 'model_path "models/../../x"'],
      [{ model_path: "/etc" }, INVALID_ARGUMENT, 'model_path "/etc"', "relative"],
      [{ output_path: "../out" }, INVALID_ARGUMENT, 'output_path "../out"'],
      [{ output_path: "/tmp/out" }, INVALID_ARGUMENT, 'output_path "/tmp/out"'],
      [{ model_path: "escape" }, PERMISSION_DENIED, 'model_path "escape"', "symlink"],
      [{ output_path: "models/out-link/new" }, PERMISSION_DENIED, "output_path", "symlink"],
      [{ output_path: ".qlorad/jobs" }, PERMISSION_DENIED, 'output_path ".qlorad/jobs"'],
      [{ model_path: "" }, INVALID_ARGUMENT, "model_path is required"],
      [{ output_path: "" }, INVALID_ARGUMENT, "output_path is required"],
    ];
    for (const [req, code, ...parts] of cases) await refused(t, outside, req, code, ...parts);
  });
});

Deno.test("Quantize: a missing or bad model is refused at once, naming the file", async () => {
  await withRefusingServer(async (t, outside) => {
    const models = path.join(t.dataDir, "models");
    const tiny = path.join(models, "tiny");
    await writeData(t.dataDir, "models/noconfig/model.safetensors", "x");
    await writeData(t.dataDir, "models/badconfig/config.json", '{\n  "model_type": llama\n}');
    await writeData(t.dataDir, "models/listconfig/config.json", "[1, 2]");
    await writeData(t.dataDir, "models/noweights/config.json", "{}");
    // Truncated: the tensor data ends early. Corrupt: the header length is garbage.
    const weights = await Deno.readFile(path.join(tiny, "model.safetensors"));
    for (
      const [name, bytes] of [
        ["truncated", weights.subarray(0, weights.length - 1000)],
        ["corrupt", new Uint8Array([...new Array(8).fill(0xff), ...weights.subarray(8)])],
      ] as const
    ) {
      await Deno.mkdir(path.join(models, name));
      await Deno.copyFile(path.join(tiny, "config.json"), path.join(models, name, "config.json"));
      await Deno.writeFile(path.join(models, name, "model.safetensors"), bytes);
    }
    const { INVALID_ARGUMENT, NOT_FOUND } = status;
    const cases: Case[] = [
      [{ model_path: "models/nope" }, NOT_FOUND, 'model_path "models/nope"', "not found"],
      [
        { model_path: "models/noconfig" },
        NOT_FOUND,
        'model_path "models/noconfig": models/noconfig/config.json',
      ],
      [{ model_path: "models/noweights" }, NOT_FOUND, "models/noweights", "model.safetensors"],
      [
        { model_path: "models/badconfig" },
        INVALID_ARGUMENT,
        'model_path "models/badconfig": models/badconfig/config.json: invalid JSON',
        "line 2",
      ],
      [{ model_path: "models/listconfig" }, INVALID_ARGUMENT, "config.json", "object"],
      [
        { model_path: "models/truncated" },
        INVALID_ARGUMENT,
        'model_path "models/truncated": models/truncated/model.safetensors',
      ],
      [
        { model_path: "models/corrupt" },
        INVALID_ARGUMENT,
        'model_path "models/corrupt": models/corrupt/model.safetensors',
        "header length",
      ],
      [{ model_path: "models/tiny/config.json" }, INVALID_ARGUMENT, "not a folder"],
      [{ output_path: "models/tiny" }, INVALID_ARGUMENT, 'output_path "models/tiny"'],
      [{ output_path: "models/tiny/q" }, INVALID_ARGUMENT, 'output_path "models/tiny/q"'],
      [{ output_path: "models" }, INVALID_ARGUMENT, 'output_path "models"'],
    ];
    for (const [req, code, ...parts] of cases) await refused(t, outside, req, code, ...parts);
  });
});

Deno.test("Quantize: unsupported blocksize or quant_type is INVALID_ARGUMENT naming the field", async () => {
  await withRefusingServer(async (t, outside) => {
    for (const blocksize of [16, 100, 8192, 65]) {
      await refused(t, outside, { blocksize }, status.INVALID_ARGUMENT, `blocksize: ${blocksize}`);
    }
    await refused(t, outside, { quant_type: 7 }, status.INVALID_ARGUMENT, "quant_type 7");
    await refused(
      t,
      outside,
      { skip_modules: ["lm_head", ""] },
      status.INVALID_ARGUMENT,
      "skip_modules",
    );
  });
});

Deno.test("Quantize: an existing output is FAILED_PRECONDITION unless overwrite", async () => {
  await withRefusingServer(async (t, outside) => {
    await writeData(t.dataDir, "models/done/keep.txt", "precious");
    await refused(
      t,
      outside,
      { output_path: "models/done" },
      status.FAILED_PRECONDITION,
      'output_path "models/done"',
      "overwrite",
    );
    assert.equal(await Deno.readTextFile(path.join(t.dataDir, "models/done/keep.txt")), "precious");
  });
});

Deno.test("job RPCs: unknown ids NOT_FOUND, missing ids INVALID_ARGUMENT", async () => {
  const t = await startTestServer();
  try {
    const code = async (p: Promise<unknown>) => {
      try {
        await p;
        return status.OK;
      } catch (err) {
        return (err as { code: status }).code;
      }
    };
    assert.equal(await code(call(t.qlorad, "GetJob", { job_id: "nope" })), status.NOT_FOUND);
    assert.equal(await code(call(t.qlorad, "CancelJob", { job_id: "nope" })), status.NOT_FOUND);
    assert.equal(await code(call(t.qlorad, "GetJob", {})), status.INVALID_ARGUMENT);
    assert.equal(await code(call(t.qlorad, "CancelJob", {})), status.INVALID_ARGUMENT);
    assert.equal(await code(call(t.qlorad, "ListJobs", { kind: 9 })), status.INVALID_ARGUMENT);
    assert.equal(await code(call(t.qlorad, "ListJobs", { states: [42] })), status.INVALID_ARGUMENT);
    const watch = await streamCall(t.qlorad, "WatchJob", { job_id: "nope" });
    assert.equal(watch.code, status.NOT_FOUND);
    assert.match(watch.details, /job_id "nope"/);
    assert.equal((await streamCall(t.qlorad, "WatchJob", {})).code, status.INVALID_ARGUMENT);
    assert.deepEqual((await call(t.qlorad, "ListJobs", {})).jobs, []);
    assert.equal(await healthStatus(t), "SERVING");
  } finally {
    await t.close();
  }
});
