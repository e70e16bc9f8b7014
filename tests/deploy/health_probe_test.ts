/**
 * scripts/health_probe.ts, the container's health check: exit 0 only on SERVING, against the
 * real server, a health service turned NOT_SERVING, nothing listening, and TLS/mTLS servers;
 * and the Dockerfile's HEALTHCHECK command line, run as written (its permission flags included).
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { main } from "../../scripts/health_probe.ts";
import { startTestServer } from "../service/grpc_client.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Silences the probe's stderr lines while `fn` runs, and returns them. */
async function quietly<T>(fn: () => Promise<T>): Promise<{ value: T; stderr: string[] }> {
  const stderr: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => stderr.push(args.map(String).join(" "));
  try {
    return { value: await fn(), stderr };
  } finally {
    console.error = original;
  }
}

async function probe(args: string[]): Promise<{ code: number; stderr: string }> {
  const { value, stderr } = await quietly(() => main(args));
  return { code: value, stderr: stderr.join("\n") };
}

/** A bare gRPC server with only the health service, on 127.0.0.1. */
async function healthServer(
  statuses: Record<string, "SERVING" | "NOT_SERVING">,
  creds = grpc.ServerCredentials.createInsecure(),
): Promise<{ port: number; health: HealthImplementation; close(): Promise<void> }> {
  const server = new grpc.Server();
  const health = new HealthImplementation(statuses);
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (err, p) => err ? reject(err) : resolve(p))
  );
  return {
    port,
    health,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const s = await healthServer({});
  await s.close();
  return s.port;
}

Deno.test("probe: exit 0 for the real server and its API, 1 for a service it does not know", async () => {
  const t = await startTestServer();
  try {
    assert.deepEqual(await probe(["--port", String(t.port)]), { code: 0, stderr: "" });
    assert.equal((await probe(["--port", String(t.port), "--service", "qlorad.v1.QLoRA"])).code, 0);
    const unknown = await probe(["--port", String(t.port), "--service", "no.such.Service"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown/i);
  } finally {
    await t.close();
  }
});

Deno.test("probe: exit 1 when NOT_SERVING or when nothing listens", async () => {
  const s = await healthServer({ "": "SERVING" });
  try {
    assert.equal((await probe(["--port", String(s.port)])).code, 0);
    s.health.setStatus("", "NOT_SERVING");
    const down = await probe(["--port", String(s.port)]);
    assert.deepEqual(down, { code: 1, stderr: "health_probe: server is NOT_SERVING" });
  } finally {
    await s.close();
  }
  const refused = await probe(["--port", String(await closedPort()), "--timeout-ms", "2000"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^health_probe: /);
});

Deno.test("probe: exit 2 on usage errors", async () => {
  for (
    const args of [
      ["--port", "x"],
      ["--port", "0"],
      ["--port", "70000"],
      ["--timeout-ms", "-1"],
      ["--bogus"],
      ["extra"],
      ["--tls-cert", "c.pem"],
      ["--tls-ca", "ca.pem", "--tls-cert", "c.pem"],
    ]
  ) {
    const out = await probe(args);
    assert.equal(out.code, 2, args.join(" "));
    assert.match(out.stderr, /usage: health_probe\.ts/, args.join(" "));
  }
});

Deno.test("probe: the port comes from QLORAD_PORT when --port is absent", async () => {
  const s = await healthServer({ "": "SERVING" });
  const before = Deno.env.get("QLORAD_PORT");
  try {
    Deno.env.set("QLORAD_PORT", String(s.port));
    assert.equal((await probe([])).code, 0);
  } finally {
    if (before === undefined) Deno.env.delete("QLORAD_PORT");
    else Deno.env.set("QLORAD_PORT", before);
    await s.close();
  }
});

/** The HEALTHCHECK command of the Dockerfile's final stage (exec form). */
async function dockerHealthcheck(): Promise<string[]> {
  const text = (await Deno.readTextFile(path.join(ROOT, "Dockerfile"))).replace(/\\\n/g, " ");
  const line = text.split("\n").filter((l) => /^HEALTHCHECK\s/.test(l)).at(-1);
  assert.ok(line, "the Dockerfile has a HEALTHCHECK");
  const json = line.match(/\bCMD\s+(\[.*\])\s*$/)?.[1];
  assert.ok(json, "HEALTHCHECK CMD uses the exec form");
  return JSON.parse(json);
}

Deno.test("the Dockerfile's HEALTHCHECK command, run as written, follows the server's health", async () => {
  const [cmd, ...args] = await dockerHealthcheck();
  assert.equal(cmd, "deno");
  const t = await startTestServer();
  const run = async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT, // the image's WORKDIR holds the repository layout
      env: { QLORAD_PORT: String(t.port), NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  try {
    const up = await run();
    assert.equal(up.code, 0, up.stderr);
    await t.server.close(); // health turns NOT_SERVING, then the port closes
    const down = await run();
    assert.equal(down.code, 1, down.stderr);
    assert.match(down.stderr, /health_probe: /);
  } finally {
    await t.close();
  }
});

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
}

async function available(cmd: string, versionFlag: string): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args: [versionFlag], stdout: "null", stderr: "null" })
      .output()).success;
  } catch {
    return false;
  }
}

/** A throwaway CA and two certificates it signed: the server's, for "localhost", and a client's. */
async function makeCerts(dir: string): Promise<void> {
  const days = ["-days", "2"];
  await openssl(
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"]
      .concat(["-subj", "/CN=qlorad test CA", ...days]),
    dir,
  );
  for (const [name, ext] of [["server", "subjectAltName=DNS:localhost"], ["client", ""]]) {
    await openssl(
      ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`]
        .concat(["-subj", `/CN=qlorad ${name}`]),
      dir,
    );
    await Deno.writeTextFile(path.join(dir, `${name}.ext`), `${ext}\n`);
    await openssl(
      ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key"]
        .concat(["-CAcreateserial", "-out", `${name}.pem`, "-extfile", `${name}.ext`, ...days]),
      dir,
    );
  }
}

/**
 * A TLS health server run by Node with the repository's grpc-js: the probe is the client under
 * test, and Deno 2.9's node:http2 server side does not carry gRPC over mutual TLS.
 */
const NODE_TLS_SERVER = `
const [modules, dir, mutual] = process.argv.slice(1);
const grpc = require(modules + "/@grpc/grpc-js");
const { HealthImplementation } = require(modules + "/grpc-health-check");
const fs = require("fs");
const read = (name) => fs.readFileSync(dir + "/" + name);
const server = new grpc.Server();
new HealthImplementation({ "": "SERVING" }).addToServer(server);
const creds = grpc.ServerCredentials.createSsl(
  read("ca.pem"),
  [{ private_key: read("server.key"), cert_chain: read("server.pem") }],
  mutual === "mutual",
);
server.bindAsync("127.0.0.1:0", creds, (err, port) => {
  if (err) throw err;
  console.log(port);
});
process.stdin.on("end", () => process.exit(0)).resume();
`;

async function nodeTlsServer(dir: string, mutual: boolean) {
  const child = new Deno.Command("node", {
    args: ["-e", NODE_TLS_SERVER, path.join(ROOT, "node_modules"), dir, mutual ? "mutual" : "tls"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the Node TLS server exited before listening");
    text += value;
  }
  return {
    port: Number(text.trim()),
    async close() {
      await child.stdin.close();
      await reader.cancel();
      await child.status;
    },
  };
}

Deno.test({
  name: "probe: TLS and mutual TLS with --tls-ca, --tls-cert and --tls-key",
  ignore: !(await available("openssl", "version")) || !(await available("node", "--version")),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-probe-tls-" });
    try {
      await makeCerts(dir);
      const file = (name: string) => path.join(dir, name);
      const tlsArgs = ["--tls-ca", file("ca.pem")];
      const clientArgs = ["--tls-cert", file("client.pem"), "--tls-key", file("client.key")];

      const tls = await nodeTlsServer(dir, false);
      try {
        const port = ["--port", String(tls.port), "--timeout-ms", "5000"];
        assert.deepEqual(await probe([...port, ...tlsArgs]), { code: 0, stderr: "" });
        // Plaintext to a TLS server, and a certificate checked for another name, both fail.
        assert.equal((await probe(port)).code, 1);
        const wrongName = await probe([...port, ...tlsArgs, "--tls-server-name", "qlorad.example"]);
        assert.equal(wrongName.code, 1);
      } finally {
        await tls.close();
      }

      const mtls = await nodeTlsServer(dir, true);
      try {
        const port = ["--port", String(mtls.port), "--timeout-ms", "5000"];
        assert.deepEqual(await probe([...port, ...tlsArgs, ...clientArgs]), {
          code: 0,
          stderr: "",
        });
        assert.equal((await probe([...port, ...tlsArgs])).code, 1, "no client certificate");
      } finally {
        await mtls.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
