/**
 * Bearer-token auth on a real server: without the token, or with a wrong one, every RPC kind
 * (unary, server streaming, reflection's bidi stream) ends UNAUTHENTICATED before its handler
 * runs, so a refused call has no effect; the right token works; health answers without a token;
 * the token can come from a file, also through `qlorad serve`.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import {
  loadAuthToken,
  MISSING_TOKEN_MESSAGE,
  TokenCheck,
  WRONG_TOKEN_MESSAGE,
} from "../../src/service/auth.ts";
import { startServer } from "../../src/service/server.ts";
import { silentLogger } from "../../src/service/status.ts";
import { QloradError } from "../../src/util/errors.ts";
import { type Clients, collect, connect, healthStatus, type Msg } from "./grpc_client.ts";

const S = grpc.status;
const TOKEN = "qlorad-test-token-3f9a1c77e2b84d06a5";

function withToken(token?: string, scheme = "Bearer"): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", `${scheme} ${token}`);
  return md;
}

interface Answer {
  code: grpc.status;
  details: string;
  messages: Msg[];
}

function unary(client: grpc.Client, method: string, req: Msg, md: grpc.Metadata): Promise<Answer> {
  return new Promise((resolve) =>
    // deno-lint-ignore no-explicit-any
    (client as any)[method](req, md, (err: grpc.ServiceError | null, res: Msg) =>
      resolve({
        code: err?.code ?? S.OK,
        details: err?.details ?? "",
        messages: err ? [] : [res],
      }))
  );
}

async function stream(
  client: grpc.Client,
  method: string,
  req: Msg,
  md: grpc.Metadata,
): Promise<Answer> {
  // deno-lint-ignore no-explicit-any
  const o = await collect((client as any)[method](req, md));
  return { code: o.code, details: o.details, messages: o.events };
}

/** Reflection's bidi stream: asks for the service list. */
function reflect(c: Clients, md: grpc.Metadata): Promise<Answer> {
  return new Promise((resolve) => {
    const messages: Msg[] = [];
    const s = c.reflection.ServerReflectionInfo(md);
    s.on("data", (m: Msg) => {
      messages.push(m);
      s.end();
    });
    s.on("error", () => {});
    s.on(
      "status",
      (st: grpc.StatusObject) => resolve({ code: st.code, details: st.details, messages }),
    );
    s.write({ list_services: "*" });
  });
}

const QUANTIZE = { model_path: "models/tiny", output_path: "out/tiny-nf4" };

/** One call of every kind, as (name, call) pairs. */
function everyKind(c: Clients): [string, (md: grpc.Metadata) => Promise<Answer>][] {
  return [
    ["Quantize", (md) => stream(c.qlorad, "Quantize", QUANTIZE, md)],
    ["Train", (md) => stream(c.qlorad, "Train", { base_model_path: "models/tiny" }, md)],
    ["Evaluate", (md) => stream(c.qlorad, "Evaluate", { base_model_path: "models/tiny" }, md)],
    ["Generate", (md) => stream(c.qlorad, "Generate", { base_model_path: "models/tiny" }, md)],
    ["Export", (md) => stream(c.qlorad, "Export", { base_model_path: "models/tiny" }, md)],
    ["WatchJob", (md) => stream(c.qlorad, "WatchJob", { job_id: "x" }, md)],
    ["GetJob", (md) => unary(c.qlorad, "GetJob", { job_id: "x" }, md)],
    ["ListJobs", (md) => unary(c.qlorad, "ListJobs", {}, md)],
    ["CancelJob", (md) => unary(c.qlorad, "CancelJob", { job_id: "x" }, md)],
    ["EstimateMemory", (md) => unary(c.qlorad, "EstimateMemory", {}, md)],
    ["ServerReflectionInfo", (md) => reflect(c, md)],
  ];
}

Deno.test({
  name: "token auth: every RPC refused without the right token, none has effects; health is open",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-auth-" });
    const server = await startServer({ dataDir, port: 0, logger: silentLogger, authToken: TOKEN });
    const c = connect(server.port);
    try {
      await makeTinyLlama(path.join(dataDir, "models", "tiny"));
      const refusals: [string, grpc.Metadata, string][] = [
        ["no metadata", withToken(), MISSING_TOKEN_MESSAGE],
        ["an empty bearer", withToken(""), MISSING_TOKEN_MESSAGE],
        ["another scheme", withToken(TOKEN, "Basic"), MISSING_TOKEN_MESSAGE],
        ["a wrong token", withToken("not-the-token"), WRONG_TOKEN_MESSAGE],
        ["a prefix of the token", withToken(TOKEN.slice(0, -1)), WRONG_TOKEN_MESSAGE],
        ["the token and more", withToken(TOKEN + "x"), WRONG_TOKEN_MESSAGE],
        ["the token in upper case", withToken(TOKEN.toUpperCase()), WRONG_TOKEN_MESSAGE],
      ];
      for (const [kind, send] of everyKind(c)) {
        for (const [how, md, message] of refusals) {
          const a = await send(md);
          assert.equal(a.code, S.UNAUTHENTICATED, `${kind} with ${how}: ${a.code} ${a.details}`);
          assert.equal(a.details, message, `${kind} with ${how}`);
          assert.deepEqual(a.messages, [], `${kind} with ${how}`);
        }
      }
      // Health needs no token, and a wrong one does not hurt it.
      assert.equal(await healthStatus(c), "SERVING");
      assert.equal(await healthStatus(c, "qlorad.v1.QLoRA"), "SERVING");
      const h = await unary(c.health, "Check", { service: "" }, withToken("wrong"));
      assert.equal(h.messages[0]?.status, "SERVING");

      // The refused calls did nothing: no job, no output.
      const ok = withToken(TOKEN);
      const listed = await unary(c.qlorad, "ListJobs", {}, ok);
      assert.equal(listed.code, S.OK, listed.details);
      assert.deepEqual(listed.messages[0].jobs, []);
      await assert.rejects(Deno.stat(path.join(dataDir, "out")), Deno.errors.NotFound);

      // With the token every kind reaches its handler (the scheme in any case).
      const answers = new Map<string, Answer>();
      for (const [kind, send] of everyKind(c)) {
        answers.set(kind, await send(withToken(TOKEN, "bEaReR")));
      }
      const code = (k: string) => S[answers.get(k)!.code];
      assert.equal(code("Quantize"), "OK", answers.get("Quantize")!.details);
      assert.equal(answers.get("Quantize")!.messages.at(-1)!.state, "JOB_STATE_SUCCEEDED");
      await Deno.stat(path.join(dataDir, "out/tiny-nf4/model.safetensors"));
      assert.equal(code("Train"), "INVALID_ARGUMENT"); // dataset_path is missing
      assert.equal(code("Evaluate"), "INVALID_ARGUMENT");
      assert.equal(code("Generate"), "INVALID_ARGUMENT"); // neither prompt nor messages
      assert.equal(code("Export"), "INVALID_ARGUMENT"); // output_path is missing
      assert.equal(code("WatchJob"), "NOT_FOUND");
      assert.equal(code("GetJob"), "NOT_FOUND");
      assert.equal(code("ListJobs"), "OK");
      assert.equal(answers.get("ListJobs")!.messages[0].jobs.length, 1);
      assert.equal(code("CancelJob"), "NOT_FOUND");
      assert.equal(code("EstimateMemory"), "INVALID_ARGUMENT");
      assert.equal(code("ServerReflectionInfo"), "OK");
      const services = answers.get("ServerReflectionInfo")!.messages[0].list_services_response
        .service.map((s: Msg) => s.name);
      assert.ok(services.includes("qlorad.v1.QLoRA"), services.join());
    } finally {
      c.close();
      await server.close();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test("TokenCheck: only the exact token passes, as the one authorization value", () => {
  const check = new TokenCheck(TOKEN);
  assert.equal(check.refusal(withToken(TOKEN)), undefined);
  assert.equal(check.refusal(withToken(TOKEN, "bearer")), undefined);
  assert.equal(check.refusal(withToken()), MISSING_TOKEN_MESSAGE);
  assert.equal(check.refusal(withToken(`${TOKEN} extra`)), MISSING_TOKEN_MESSAGE);
  assert.equal(check.refusal(withToken("")), MISSING_TOKEN_MESSAGE);
  for (const wrong of ["", "a", TOKEN.slice(1), TOKEN + TOKEN, TOKEN.replace(/.$/, "0")]) {
    if (wrong === "") continue;
    assert.equal(check.refusal(withToken(wrong)), WRONG_TOKEN_MESSAGE, wrong);
  }
  const twice = withToken(TOKEN);
  twice.add("authorization", `Bearer ${TOKEN}`);
  assert.equal(check.refusal(twice), MISSING_TOKEN_MESSAGE);
});

Deno.test("loadAuthToken: from a value or a file; errors name the source", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-auth-" });
  try {
    const file = path.join(dir, "token");
    await Deno.writeTextFile(file, `${TOKEN}\n`);
    assert.equal(await loadAuthToken({}), undefined);
    assert.equal(await loadAuthToken({ token: TOKEN }), TOKEN);
    assert.equal(await loadAuthToken({ tokenFile: file }), TOKEN);

    const refused = async (src: Parameters<typeof loadAuthToken>[0], pattern: RegExp) => {
      await assert.rejects(
        loadAuthToken(src),
        (e: Error) => e instanceof QloradError && pattern.test(e.message),
        `${JSON.stringify(src)} should fail with ${pattern}`,
      );
    };
    await refused(
      { token: TOKEN, tokenFile: file, tokenLabel: "QLORAD_AUTH_TOKEN", fileLabel: "--f" },
      /QLORAD_AUTH_TOKEN or --f, not both/,
    );
    await refused(
      { tokenFile: path.join(dir, "missing"), fileLabel: "--auth-token-file" },
      /^--auth-token-file .*missing: not found$/,
    );
    await refused({ token: "", tokenLabel: "QLORAD_AUTH_TOKEN" }, /QLORAD_AUTH_TOKEN: empty/);
    await refused({ token: "two words" }, /visible ASCII/);
    await refused({ token: "caf\u00e9" }, /visible ASCII/);
    await Deno.writeTextFile(path.join(dir, "blank"), " \n\n");
    await refused({ tokenFile: path.join(dir, "blank") }, /blank: empty token/);
    await Deno.writeTextFile(path.join(dir, "big"), "x".repeat(5000));
    await refused({ tokenFile: path.join(dir, "big") }, /larger than 4096 bytes/);
    await refused({ tokenFile: dir }, new RegExp(`${dir}: `));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ------------------------------------------------------------------ through `qlorad serve`

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

/** `qlorad serve` on a free port; resolves once it listens. */
async function serve(args: string[], env: Record<string, string> = {}) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "serve", "--port", "0", ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let port = 0;
  while (!port) {
    const { value, done } = await lines.read();
    if (done) {
      await lines.cancel();
      return { port: 0, code: (await child.status).code, stderr: await stderr, stop: undefined };
    }
    seen += value;
    port = Number(seen.match(/listening on 127\.0\.0\.1:(\d+)/)?.[1] ?? 0);
  }
  return {
    port,
    code: undefined,
    stderr: "",
    async stop() {
      child.kill("SIGTERM");
      const code = (await child.status).code;
      await lines.cancel();
      return { code, stderr: await stderr };
    },
  };
}

Deno.test({
  name: "qlorad serve: --auth-token-file turns auth on; conflicting or bad sources exit 1",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-auth-" });
    try {
      const file = path.join(dir, "token");
      await Deno.writeTextFile(file, `${TOKEN}\n`);
      const dataDir = path.join(dir, "data");
      const s = await serve(["--data-dir", dataDir, "--auth-token-file", file]);
      assert.ok(s.stop, s.stderr);
      const c = connect(s.port);
      try {
        assert.equal(await healthStatus(c), "SERVING");
        const refused = await unary(c.qlorad, "ListJobs", {}, withToken());
        assert.equal(refused.code, S.UNAUTHENTICATED);
        const ok = await unary(c.qlorad, "ListJobs", {}, withToken(TOKEN));
        assert.equal(ok.code, S.OK, ok.details);
      } finally {
        c.close();
        const end = await s.stop();
        assert.equal(end.code, 0, end.stderr);
        assert.match(end.stderr, /bearer token required/);
      }

      const both = await serve(["--data-dir", dataDir, "--auth-token-file", file], {
        QLORAD_AUTH_TOKEN: TOKEN,
      });
      assert.equal(both.code, 1);
      assert.match(both.stderr, /QLORAD_AUTH_TOKEN or --auth-token-file, not both/);
      const missing = await serve(["--data-dir", dataDir], {
        QLORAD_AUTH_TOKEN_FILE: path.join(dir, "nope"),
      });
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /QLORAD_AUTH_TOKEN_FILE .*nope: not found/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
