/**
 * The qlorad command line.
 *   qlorad serve --data-dir DIR [--port N] [--host H] [--max-queued N] [--tls-cert FILE
 *                --tls-key FILE [--tls-client-ca FILE]] [--auth-token-file FILE]
 *                [--shutdown-timeout SECONDS]
 *   qlorad quantize --model DIR --out DIR [--type nf4|fp4] [--blocksize N] [--no-double-quant]
 *                   [--skip-modules a,b] [--overwrite]
 * Usage errors print the usage and exit 2; failures print the error and exit 1.
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_SHUTDOWN_TIMEOUT_MS, startServer } from "./service/server.ts";
import { setupTelemetry } from "./telemetry/setup.ts";
import { loadAuthToken } from "./service/auth.ts";
import { loadTls } from "./service/tls.ts";
import type { TlsMaterial } from "./service/tls.ts";
import { consoleLogger } from "./service/status.ts";
import { quantizeModel } from "./quant/quantize_model.ts";
import type { QuantizeProgress, QuantType } from "./quant/quantize_model.ts";
import { ALLOWED_BLOCKSIZES } from "./quant/blockwise.ts";
import { CancelledError, QloradError } from "./util/errors.ts";
import { runEstimateCommand } from "./train/estimate_cli.ts";
import { mergeAdapter } from "./train/merge.ts";
import { LOCAL_JOBS_USAGE, runEvalCommand, runTrainCommand } from "./local_jobs_cli.ts";

export const USAGE = `usage:
  qlorad serve --data-dir DIR [--port N] [--host H] [--max-queued N]
               [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
               [--auth-token-file FILE] [--shutdown-timeout SECONDS]
               [--gpu-memory-budget SIZE]
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
      Environment: QLORAD_TLS_CERT, QLORAD_TLS_KEY, QLORAD_TLS_CLIENT_CA,
      QLORAD_AUTH_TOKEN, QLORAD_AUTH_TOKEN_FILE, QLORAD_SHUTDOWN_TIMEOUT,
      QLORAD_GPU_MEMORY_BUDGET (flags win).
  qlorad quantize --model DIR --out DIR [--type nf4|fp4] [--blocksize N] [--no-double-quant]
                  [--skip-modules NAME,NAME] [--overwrite]
      Quantize a Hugging Face checkpoint folder to a bitsandbytes 4-bit folder.
      Defaults: --type nf4, --blocksize 64, double quant on, --skip-modules lm_head.
  qlorad estimate (--config config.json | --preset 7b|13b|33b|65b|70b|all) [--r N] [--batch N]
                  [--seq N] [--checkpointing] [--optimizer-budget BYTES] [--compare]
      Predict GPU memory by category for training a model (see docs/MEMORY.md).
  qlorad export --merge --base DIR --adapter DIR --out DIR [--dtype bf16|f16|f32] [--overwrite]
      Write a full-precision Hugging Face checkpoint: dequantized base + scaling*B*A.
${LOCAL_JOBS_USAGE}`;

class UsageError extends Error {}

function usageError(message: string): never {
  throw new UsageError(message);
}

function integer(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) usageError(`${flag} must be a non-negative integer, not ${value}`);
  return Number(value);
}

/** Runs the CLI; resolves to the exit code (serve resolves when the server has stopped). */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "serve":
        return await serve(rest);
      case "quantize":
        return await quantize(rest);
      case "estimate":
        return await runEstimateCommand(rest);
      case "export":
        return await exportMerged(rest);
      case "train":
        return await withInterrupt((signal) => runTrainCommand(rest, signal));
      case "eval":
        return await withInterrupt((signal) => runEvalCommand(rest, signal));
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return 0;
      default:
        usageError(command ? `unknown command ${JSON.stringify(command)}` : "no command given");
    }
  } catch (err) {
    if (
      err instanceof UsageError || (err instanceof TypeError && "code" in err &&
        String(err.code).startsWith("ERR_PARSE_ARGS"))
    ) {
      console.error(`qlorad: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof CancelledError) {
      console.error("qlorad: cancelled");
      return 130;
    }
    if (err instanceof QloradError) {
      console.error(`qlorad: ${err.message}`);
      return 1;
    }
    console.error("qlorad: unexpected error", err);
    return 1;
  }
}

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
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
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
    },
  });
  const dataDir = values["data-dir"] ?? usageError("serve needs --data-dir DIR");
  const port = integer(values.port, "--port", 50051);
  if (port > 65535) usageError(`--port must be at most 65535, not ${port}`);
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
    : integer(timeout.value, timeout.label, 0);
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
  let server;
  try {
    server = await startServer({
      host,
      port,
      dataDir,
      logger: consoleLogger,
      maxQueuedJobs: integer(values["max-queued"], "--max-queued", 16),
      tls,
      authToken,
      shutdownTimeoutMs: shutdownSeconds * 1000,
      gpuMemoryBudgetBytes,
    });
  } catch (err) {
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
      server.close().then(() => telemetry.shutdown()).finally(() => {
        for (const s of SIGNALS) Deno.removeSignalListener(s, onSignal);
        resolve();
      });
    };
    for (const s of SIGNALS) Deno.addSignalListener(s, onSignal);
  });
  await stopped;
  return 0;
}

const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Runs a local job; SIGINT/SIGTERM stop it at the next step boundary (training checkpoints). */
async function withInterrupt(fn: (signal: AbortSignal) => Promise<number>): Promise<number> {
  const abort = new AbortController();
  const onSignal = () => abort.abort(new CancelledError());
  for (const s of SIGNALS) Deno.addSignalListener(s, onSignal);
  try {
    return await fn(abort.signal);
  } finally {
    for (const s of SIGNALS) Deno.removeSignalListener(s, onSignal);
  }
}

type Setting = { value: string; label: string } | undefined;

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

async function quantize(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string" },
      out: { type: "string" },
      type: { type: "string" },
      blocksize: { type: "string" },
      "no-double-quant": { type: "boolean" },
      "skip-modules": { type: "string" },
      overwrite: { type: "boolean" },
    },
  });
  const model = values.model ?? usageError("quantize needs --model DIR");
  const out = values.out ?? usageError("quantize needs --out DIR");
  const type = (values.type ?? "nf4").toLowerCase();
  if (type !== "nf4" && type !== "fp4") usageError(`--type must be nf4 or fp4, not ${values.type}`);
  const blocksize = integer(values.blocksize, "--blocksize", 64);
  if (!ALLOWED_BLOCKSIZES.includes(blocksize)) {
    usageError(`--blocksize must be one of ${ALLOWED_BLOCKSIZES.join(", ")}, not ${blocksize}`);
  }
  const skipModules = values["skip-modules"] === undefined
    ? ["lm_head"]
    : values["skip-modules"].split(",").map((s) => s.trim()).filter((s) => s !== "");

  const abort = new AbortController();
  const onSignal = () => abort.abort(new CancelledError());
  for (const s of SIGNALS) Deno.addSignalListener(s, onSignal);
  const line = progressLine();
  try {
    const r = await quantizeModel({
      modelDir: path.resolve(model),
      outputDir: path.resolve(out),
      quantType: type as QuantType,
      blocksize,
      doubleQuant: !values["no-double-quant"],
      skipModules,
      overwrite: Boolean(values.overwrite),
      signal: abort.signal,
      onProgress: line.update,
    });
    line.done();
    console.log(
      `quantized ${r.tensorsQuantized} tensors (${r.parametersQuantized} parameters), kept ${r.tensorsKept}; ` +
        `${r.bitsPerParameter.toFixed(3)} bits/parameter; ${mib(r.bytesIn)} -> ${
          mib(r.bytesOut)
        }; ` +
        `mean |error| ${r.meanAbsError.toPrecision(3)}, max |error| ${
          r.maxAbsError.toPrecision(3)
        }; ` +
        `wrote ${out}`,
    );
    return 0;
  } catch (err) {
    line.done();
    throw err;
  } finally {
    for (const s of SIGNALS) Deno.removeSignalListener(s, onSignal);
  }
}

async function exportMerged(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      merge: { type: "boolean" },
      base: { type: "string" },
      adapter: { type: "string" },
      out: { type: "string" },
      dtype: { type: "string" },
      overwrite: { type: "boolean" },
    },
  });
  if (!values.merge) usageError("export needs --merge (the only export there is)");
  const base = values.base ?? usageError("export needs --base DIR");
  const adapter = values.adapter ?? usageError("export needs --adapter DIR");
  const out = values.out ?? usageError("export needs --out DIR");
  const dtype = (values.dtype ?? "bf16").toUpperCase();
  if (dtype !== "BF16" && dtype !== "F16" && dtype !== "F32") {
    usageError(`--dtype must be bf16, f16 or f32, not ${values.dtype}`);
  }
  const r = await mergeAdapter({
    baseModelDir: path.resolve(base),
    adapterDir: path.resolve(adapter),
    outputDir: path.resolve(out),
    dtype,
    overwrite: Boolean(values.overwrite),
  });
  console.log(
    `merged the adapter into ${r.merged} linear layers; wrote ${r.tensors} tensors to ${out}`,
  );
  return 0;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** One progress line on stderr: rewritten in place on a terminal, one line per tensor otherwise. */
function progressLine() {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let shown = false;
  return {
    update(p: QuantizeProgress) {
      const width = String(p.total).length;
      const text = `[${String(p.index).padStart(width)}/${p.total}] ${
        p.quantized ? "quantized" : "kept     "
      } ${p.tensor} (${p.bytesIn} -> ${p.bytesOut} bytes)`;
      Deno.stderr.writeSync(enc.encode(tty ? `\r\x1b[2K${text}` : `${text}\n`));
      shown = true;
    },
    done() {
      if (tty && shown) Deno.stderr.writeSync(enc.encode("\n"));
      shown = false;
    },
  };
}

if (import.meta.main) {
  const code = await main(Deno.args);
  Deno.exit(code);
}
