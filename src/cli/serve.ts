/**
 * `qlorad serve`: the gRPC service (qlorad.v1.QLoRA, health, reflection) on one port, until
 * SIGTERM/SIGINT. Its settings come from flags, or from QLORAD_* environment variables.
 */
import { DEFAULT_SHUTDOWN_TIMEOUT_MS, startServer } from "../service/server.ts";
import { setupTelemetry } from "../telemetry/setup.ts";
import { loadAuthToken } from "../service/auth.ts";
import { loadTls } from "../service/tls.ts";
import type { TlsMaterial } from "../service/tls.ts";
import { consoleLogger } from "../service/status.ts";
import { redisStoreSettings } from "../service/jobs/redis_settings.ts";
import { RedisJobStore } from "../service/jobs/redis_store.ts";
import { QloradError } from "../util/errors.ts";
import { type Command, integerFlag, parseFlags, STOP_SIGNALS, usageError } from "./command.ts";

export const SERVE: Command = {
  name: "serve",
  usage: `  qlorad serve --data-dir DIR [--port N] [--host H] [--max-queued N]
               [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
               [--auth-token-file FILE] [--shutdown-timeout SECONDS]
               [--gpu-memory-budget SIZE] [--store redis://HOST:PORT/DB]
               [--replica-id ID [--lease-ttl-ms MS]]
      Serve the gRPC API (qlorad.v1.QLoRA, health, reflection). Request paths are relative to
      DIR. Defaults: --port 50051, --host 127.0.0.1, --max-queued 16, plaintext, no token,
      --shutdown-timeout ${DEFAULT_SHUTDOWN_TIMEOUT_MS / 1000}.
      --tls-cert/--tls-key (PEM) turn on TLS; --tls-client-ca adds mutual TLS: clients must
      present an X.509 v3 certificate issued by that CA. With a token (QLORAD_AUTH_TOKEN, or
      --auth-token-file / QLORAD_AUTH_TOKEN_FILE), every call but grpc.health.v1.Health needs
      the metadata "authorization: Bearer <token>". On SIGTERM/SIGINT the server stops taking
      calls, stops the running job (training checkpoints first), waits for it up to
      --shutdown-timeout seconds and exits 0; a second signal exits at once.
      --gpu-memory-budget (bytes, or with a KiB/MiB/GiB suffix: the pod's GPU memory) refuses
      Train and Evaluate jobs whose estimated GPU memory is over it, before they load the model,
      naming the setting to lower; without it only the adapter's buffer limits are checked.
      --store keeps jobs in Redis (redis://, or rediss:// for TLS) instead of DIR/.qlorad/jobs;
      its password comes from QLORAD_STORE_PASSWORD or QLORAD_STORE_PASSWORD_FILE (a URL with
      a password only in QLORAD_STORE_URL: a flag shows in ps). See docs/SETTINGS.md.
      --replica-id (with --store) makes this server one replica of a fleet sharing the store
      and DIR (a ReadWriteMany volume): a free replica runs the next job of the fleet, one whose
      replica died is taken over once its lease (--lease-ttl-ms, default 30000) lapses, and every
      replica answers for every job. Use a name unique in the fleet (e.g. the pod's name).
      Environment: QLORAD_TLS_CERT, QLORAD_TLS_KEY, QLORAD_TLS_CLIENT_CA,
      QLORAD_AUTH_TOKEN, QLORAD_AUTH_TOKEN_FILE, QLORAD_SHUTDOWN_TIMEOUT,
      QLORAD_GPU_MEMORY_BUDGET, QLORAD_STORE_URL, QLORAD_REPLICA_ID, QLORAD_LEASE_TTL_MS
      (flags win).`,
  run: (args) => serve(args),
};

/** "80GiB", "512 MiB", "1000000": a positive byte count; anything else is a usage error. */
function byteSize(raw: string, label: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB)?\s*$/i.exec(raw);
  const units: Record<string, number> = {
    b: 1,
    kib: 2 ** 10,
    mib: 2 ** 20,
    gib: 2 ** 30,
    tib: 2 ** 40,
  };
  const bytes = m ? Math.floor(Number(m[1]) * units[(m[2] ?? "b").toLowerCase()]) : NaN;
  if (!(bytes >= 1) || !Number.isSafeInteger(bytes)) {
    usageError(
      `${label} must be a size such as 80GiB, 512MiB or a byte count, not ${JSON.stringify(raw)}`,
    );
  }
  return bytes;
}

async function serve(args: string[]): Promise<number> {
  const values = parseFlags(args, {
    port: { type: "string" },
    host: { type: "string" },
    "data-dir": { type: "string" },
    "max-queued": { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "tls-client-ca": { type: "string" },
    "auth-token-file": { type: "string" },
    "shutdown-timeout": { type: "string" },
    "gpu-memory-budget": { type: "string" },
    store: { type: "string" },
    "replica-id": { type: "string" },
    "lease-ttl-ms": { type: "string" },
  });
  const dataDir = values["data-dir"] ?? usageError("serve needs --data-dir DIR");
  const port = integerFlag(values.port, "--port", 50051, 0, 65535);
  const host = values.host ?? "127.0.0.1";
  const setting = (flag: string, env: string) => {
    const v = values[flag as keyof typeof values] as string | undefined;
    if (v !== undefined) return { value: v, label: `--${flag}` };
    const e = Deno.env.get(env);
    return e !== undefined && e !== "" ? { value: e, label: env } : undefined;
  };
  const timeout = setting("shutdown-timeout", "QLORAD_SHUTDOWN_TIMEOUT");
  const shutdownSeconds = timeout === undefined
    ? DEFAULT_SHUTDOWN_TIMEOUT_MS / 1000
    : integerFlag(timeout.value, timeout.label, 0);
  if (shutdownSeconds < 1 || shutdownSeconds > 86_400) {
    usageError(`${timeout?.label} must be 1..86400 seconds, not ${shutdownSeconds}`);
  }
  const budget = setting("gpu-memory-budget", "QLORAD_GPU_MEMORY_BUDGET");
  const gpuMemoryBudgetBytes = budget === undefined
    ? undefined
    : byteSize(budget.value, budget.label);
  const tls = await tlsSettings(
    setting("tls-cert", "QLORAD_TLS_CERT"),
    setting("tls-key", "QLORAD_TLS_KEY"),
    setting("tls-client-ca", "QLORAD_TLS_CLIENT_CA"),
  );
  const tokenFile = setting("auth-token-file", "QLORAD_AUTH_TOKEN_FILE");
  const envToken = Deno.env.get("QLORAD_AUTH_TOKEN");
  const authToken = await loadAuthToken({
    token: envToken === "" ? undefined : envToken,
    tokenLabel: "QLORAD_AUTH_TOKEN",
    tokenFile: tokenFile?.value,
    fileLabel: tokenFile?.label,
  });
  // OpenTelemetry from the standard OTEL_* variables; off (and free) when none is set.
  const telemetry = await setupTelemetry({
    serviceName: "qlorad",
    warn: (m) => consoleLogger.warn(`telemetry: ${m}`),
  });
  if (telemetry.tracing || telemetry.metrics) consoleLogger.info(telemetry.description);
  const replica = setting("replica-id", "QLORAD_REPLICA_ID");
  if (replica && !/^[\w.:-]{1,128}$/.test(replica.value)) {
    usageError(`${replica.label}: 1..128 letters, digits, '.', ':', '_' or '-'`);
  }
  const ttl = setting("lease-ttl-ms", "QLORAD_LEASE_TTL_MS");
  const leaseTtlMs = ttl ? integerFlag(ttl.value, ttl.label, 30_000, 300, 3_600_000) : undefined;
  let server;
  let store: RedisJobStore | undefined;
  try {
    store = await openStore(values.store);
    if (replica && !store) {
      usageError(`${replica.label} needs --store (a store shared by the fleet)`);
    }
    server = await startServer({
      host,
      port,
      dataDir,
      logger: consoleLogger,
      maxQueuedJobs: integerFlag(values["max-queued"], "--max-queued", 16),
      tls,
      authToken,
      shutdownTimeoutMs: shutdownSeconds * 1000,
      gpuMemoryBudgetBytes,
      store,
      watchStore: store && ((listener) => store!.watchAvailability(listener)),
      replicaId: replica?.value,
      leaseTtlMs,
    });
  } catch (err) {
    await store?.close();
    await telemetry.shutdown();
    throw err;
  }
  const shown = host.includes(":") ? `[${host}]` : host;
  console.log(`qlorad listening on ${shown}:${server.port}`);
  consoleLogger.info(
    `${tls ? (tls.clientCa ? "mutual TLS" : "TLS") : "plaintext"}, ${
      authToken ? "bearer token required (health open)" : "no token"
    }, shutdown timeout ${shutdownSeconds} s`,
  );

  // The first SIGINT/SIGTERM closes gracefully; a second one exits at once.
  // Each closing step runs even when one before it failed; a failure is logged and exits 1
  // (a rejection left unhandled here would crash the process with a stack trace instead).
  const closeAll = async () => {
    try {
      await server.close();
    } finally {
      try {
        await store?.close();
      } finally {
        await telemetry.shutdown();
      }
    }
  };
  let closeFailed = false;
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = () => {
      if (stopping) Deno.exit(130);
      stopping = true;
      consoleLogger.info(`shutting down (waiting up to ${shutdownSeconds} s for the running job)`);
      // A last resort, should closing itself hang (it bounds every wait it makes).
      Deno.unrefTimer(setTimeout(() => {
        consoleLogger.error("shutdown did not finish in time; exiting");
        Deno.exit(1);
      }, shutdownSeconds * 1000 + 15_000));
      closeAll().catch((err) => {
        closeFailed = true;
        consoleLogger.error(`shutdown failed: ${err instanceof Error ? err.message : err}`);
      }).finally(() => {
        for (const s of STOP_SIGNALS) Deno.removeSignalListener(s, onSignal);
        resolve();
      });
    };
    for (const s of STOP_SIGNALS) Deno.addSignalListener(s, onSignal);
  });
  await stopped;
  return closeFailed ? 1 : 0;
}

type Setting = { value: string; label: string } | undefined;

/** The Redis job store named by --store or QLORAD_STORE_URL, or undefined for the local one. */
async function openStore(flag: string | undefined): Promise<RedisJobStore | undefined> {
  let settings;
  try {
    settings = await redisStoreSettings({ flag });
  } catch (err) {
    if (err instanceof QloradError && err.kind === "invalid_argument") usageError(err.message);
    throw err;
  }
  if (!settings) return undefined;
  const store = await RedisJobStore.open(settings, consoleLogger);
  consoleLogger.info(`job store: ${store.location}`);
  return store;
}

/** TLS from the flags (or env): a cert and a key together, a client CA only with them. */
async function tlsSettings(
  cert: Setting,
  key: Setting,
  clientCa: Setting,
): Promise<TlsMaterial | undefined> {
  if (!cert && !key) {
    if (clientCa) usageError(`${clientCa.label} needs --tls-cert and --tls-key`);
    return undefined;
  }
  if (!cert) usageError(`${key!.label} needs --tls-cert (or QLORAD_TLS_CERT) too`);
  if (!key) usageError(`${cert.label} needs --tls-key (or QLORAD_TLS_KEY) too`);
  return await loadTls({
    cert: cert.value,
    key: key.value,
    clientCa: clientCa?.value,
    labels: { cert: cert.label, key: key.label, clientCa: clientCa?.label },
  });
}
