/**
 * Health probe for the container (Docker HEALTHCHECK, or a Kubernetes exec probe when the server
 * runs with TLS, which the kubelet's native gRPC probe cannot speak): calls
 * grpc.health.v1.Health/Check on the local server and exits 0 only when the answer is SERVING.
 *
 *   deno run --allow-net --allow-read --allow-env --allow-sys scripts/health_probe.ts [--host H]
 *     [--port N] [--service NAME] [--timeout-ms N] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
 *     [--tls-server-name NAME]
 *
 * Defaults: --host 127.0.0.1, --port $QLORAD_PORT or 50051, --service "" (the whole server),
 * --timeout-ms 5000, plaintext; with TLS the certificate must name --tls-server-name, by default
 * "localhost" for an IP host. Exit 0 SERVING; 1 any other status, unreachable or timed out
 * (the reason on stderr); 2 usage error.
 */
import type { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";

export interface HealthCheckOptions {
  host?: string;
  port: number;
  /** "" asks about the whole server; "qlorad.v1.QLoRA" about the API. */
  service?: string;
  timeoutMs?: number;
  /**
   * PEM contents; a CA turns TLS on, a cert and key add a client certificate (mTLS). The server's
   * certificate is checked for `serverName`, by default "localhost" when the host is an IP address.
   */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer; serverName?: string };
}

/** Asks Health/Check once; resolves to the status name (SERVING, NOT_SERVING, ...). */
export function checkHealth(opts: HealthCheckOptions): Promise<string> {
  const host = opts.host ?? "127.0.0.1";
  const address = host.includes(":") ? `[${host}]:${opts.port}` : `${host}:${opts.port}`;
  const definition = protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: String });
  // deno-lint-ignore no-explicit-any
  const Health = (grpc.loadPackageDefinition(definition) as any).grpc.health.v1.Health;
  const creds = opts.tls
    ? grpc.credentials.createSsl(opts.tls.ca, opts.tls.key ?? null, opts.tls.cert ?? null)
    : grpc.credentials.createInsecure();
  // TLS verifies a name: the given one, else "localhost" for an IP address (which cannot be a
  // TLS server name), else the host.
  const serverName = opts.tls?.serverName ?? (isIP(host) ? "localhost" : undefined);
  const channelOptions: grpc.ChannelOptions = opts.tls && serverName
    ? { "grpc.ssl_target_name_override": serverName, "grpc.default_authority": serverName }
    : {};
  const client: grpc.Client = new Health(address, creds, channelOptions);
  const deadline = new Date(Date.now() + (opts.timeoutMs ?? 5_000));
  return new Promise<string>((resolve, reject) => {
    // deno-lint-ignore no-explicit-any
    (client as any).Check(
      { service: opts.service ?? "" },
      { deadline },
      (err: grpc.ServiceError | null, res: { status: string }) => {
        client.close();
        if (err) reject(err);
        else resolve(res.status);
      },
    );
  });
}

const USAGE = "usage: health_probe.ts [--host H] [--port N] [--service NAME] [--timeout-ms N] " +
  "[--tls-ca FILE [--tls-cert FILE --tls-key FILE]] [--tls-server-name NAME]";

function parse(args: string[]): HealthCheckOptions {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      service: { type: "string" },
      "timeout-ms": { type: "string" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-server-name": { type: "string" },
    },
  });
  const int = (raw: string, flag: string, max: number) => {
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) {
      throw new Error(`${flag} must be an integer from 1 to ${max}, not ${raw}`);
    }
    return Number(raw);
  };
  const port = int(values.port ?? Deno.env.get("QLORAD_PORT") ?? "50051", "--port", 65535);
  const timeoutMs = int(values["timeout-ms"] ?? "5000", "--timeout-ms", 600_000);
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) {
    throw new Error("--tls-cert and --tls-key go together");
  }
  if (values["tls-cert"] !== undefined && values["tls-ca"] === undefined) {
    throw new Error("--tls-cert needs --tls-ca");
  }
  const tls = values["tls-ca"] === undefined ? undefined : {
    ca: readFileSync(values["tls-ca"]),
    cert: values["tls-cert"] === undefined ? undefined : readFileSync(values["tls-cert"]),
    key: values["tls-key"] === undefined ? undefined : readFileSync(values["tls-key"]),
    serverName: values["tls-server-name"],
  };
  return { host: values.host, port, service: values.service, timeoutMs, tls };
}

/** Runs the probe; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  let opts: HealthCheckOptions;
  try {
    opts = parse(args);
  } catch (err) {
    console.error(`health_probe: ${err instanceof Error ? err.message : err}\n${USAGE}`);
    return 2;
  }
  try {
    const status = await checkHealth(opts);
    if (status === "SERVING") return 0;
    console.error(`health_probe: ${opts.service || "server"} is ${status}`);
    return 1;
  } catch (err) {
    const e = err as Partial<grpc.ServiceError>;
    console.error(`health_probe: ${e.details ?? e.message ?? String(err)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
