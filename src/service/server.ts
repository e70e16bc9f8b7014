/**
 * The gRPC server: qlorad.v1.QLoRA, grpc.health.v1.Health and server reflection on one port.
 * It holds an exclusive lock on its data directory while it runs (data_lock.ts), limits open job
 * streams (streams.ts), and authenticates a call to an unknown method before saying so.
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import type { UntypedHandleCall } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, protoPath as healthProtoPath } from "grpc-health-check";
import { JobManager } from "./jobs.ts";
import type { JobStore } from "./jobs.ts";
import { consoleLogger } from "./status.ts";
import type { Logger } from "./status.ts";
import { QloradError } from "../util/errors.ts";
import { jobHandlers } from "./handlers/jobs.ts";
import { rebuildJob } from "./handlers/job_rpc.ts";
import type { ServiceContext } from "./handlers/jobs.ts";
import { quantizeHandler } from "./handlers/quantize.ts";
import { quantizeModel } from "../quant/quantize_model.ts";
import { trainHandler } from "./handlers/train.ts";
import { evaluateHandler } from "./handlers/evaluate.ts";
import { generateHandler } from "./handlers/generate.ts";
import { estimateHandler } from "./handlers/estimate.ts";
import { exportHandler } from "./handlers/export.ts";
import { exportGguf } from "../export/export_gguf.ts";
import { GpuHolder } from "./gpu.ts";
import { sweepPartials } from "../io/sweep_partials.ts";
import { wrapHandlers } from "./rpc_tracing.ts";
import { observeFleetJobs, observeGpuMemory, observeJobs } from "../telemetry/metrics.ts";
import { tokenInterceptor } from "./auth.ts";
import { serverCredentials } from "./tls.ts";
import type { TlsMaterial } from "./tls.ts";
import { lockDataDir } from "./data_lock.ts";
import { StreamLimiter } from "./streams.ts";

/** The contract. */
export const PROTO_PATH = fileURLToPath(
  new URL("../../proto/qlorad/v1/qlorad.proto", import.meta.url),
);

export const SERVICE_NAME = "qlorad.v1.QLoRA";

/** How the proto is loaded, here and in the tests' clients. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Requests and responses are small; these bounds stop a bad peer, not a real client. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * A fleet replica removes a `.partial-` file or folder (and handles an `.old-` one) only once
 * nothing has written it for a day: no live writer pauses that long, and a frozen one could not
 * commit it anyway (the store's fence). Checked at start and every hour.
 */
const FLEET_SWEEP_AGE_MS = 24 * 3600_000;
const FLEET_SWEEP_EVERY_MS = 3600_000;

/** How long close() lets a running job stop (a training job checkpoints first). */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;

/** How long close() waits for calls still open (e.g. health watches) once jobs have stopped. */
const CALLS_GRACE_MS = 2_000;

export interface ServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Root of every path in requests; created if missing. Job records go under `.qlorad/`. */
  dataDir: string;
  logger?: Logger;
  /** Jobs that may wait behind the running one. Default 16. */
  maxQueuedJobs?: number;
  /** The quantizer; default quantizeModel (tests substitute a fake). */
  quantize?: typeof quantizeModel;
  /** The GGUF exporter; default exportGguf (tests wrap it, e.g. to hold it between tensors). */
  exportGguf?: typeof exportGguf;
  /** TLS, or mutual TLS when it has a client CA (see tls.ts). Default: plaintext. */
  tls?: TlsMaterial;
  /** Every call but health's must carry `authorization: Bearer <token>` (see auth.ts). */
  authToken?: string;
  /** The largest request accepted (RESOURCE_EXHAUSTED beyond). Default MAX_MESSAGE_BYTES. */
  maxMessageBytes?: number;
  /** How long close() lets the running job stop. Default DEFAULT_SHUTDOWN_TIMEOUT_MS. */
  shutdownTimeoutMs?: number;
  /** Job streams one connection may hold open. Default DEFAULT_MAX_STREAMS_PER_CONNECTION. */
  maxStreamsPerConnection?: number;
  /** Job streams open at once on the server. Default DEFAULT_MAX_STREAMS. */
  maxStreams?: number;
  /** GPU memory a job may use (bytes); jobs estimated above it are refused. Default: no budget. */
  gpuMemoryBudgetBytes?: number;
  /** Where jobs are kept (e.g. a RedisJobStore; the caller closes it). Default: the local store. */
  store?: JobStore;
  /**
   * Tells whether the store can be reached (e.g. RedisJobStore.watchAvailability): health is
   * NOT_SERVING while it cannot. Returns a function that stops the calls.
   */
  watchStore?: (listener: (available: boolean, why?: string) => void) => () => void;
  /**
   * Fleet mode: this server is one replica of several sharing `store` and the data directory
   * (JobManager's fleet mode); its name on the leases it takes. Needs `store`.
   */
  replicaId?: string;
  /** How long a running job's lease lasts (renewed every third). Default 30 s. */
  leaseTtlMs?: number;
}

export interface RunningServer {
  /** The bound port. */
  port: number;
  /**
   * Stops taking calls, stops the running job (a training job checkpoints and ends FAILED with a
   * resume hint; others are marked FAILED at the next start), ends streams, and stops the server.
   */
  close(): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const logger = opts.logger ?? consoleLogger;
  const host = opts.host ?? "127.0.0.1";
  const given = path.resolve(opts.dataDir);
  await Deno.mkdir(given, { recursive: true });
  const dataDir = await Deno.realPath(given);
  const hostDirs = [...new Set([given, dataDir])];
  // Before anything in the directory is touched: another server may be using it.
  if (opts.replicaId !== undefined && !opts.store) {
    throw new QloradError("invalid_argument", "replicaId: fleet mode needs a shared job store");
  }
  const lock = await lockDataDir(dataDir, opts.replicaId);
  try {
    return await serve(opts, logger, host, dataDir, hostDirs, lock.release);
  } catch (err) {
    lock.release();
    throw err;
  }
}

async function serve(
  opts: ServerOptions,
  logger: Logger,
  host: string,
  dataDir: string,
  hostDirs: string[],
  unlock: () => void,
): Promise<RunningServer> {
  // Health's proto joins ours so that reflection describes both.
  const packageDefinition = await protoLoader.load(
    [PROTO_PATH, healthProtoPath],
    PROTO_LOADER_OPTIONS,
  );
  // deno-lint-ignore no-explicit-any
  const loaded = grpc.loadPackageDefinition(packageDefinition) as any;
  const service: grpc.ServiceDefinition = loaded.qlorad.v1.QLoRA.service;

  // Temporary files a crash left behind are never under a final name; remove them now. In a
  // fleet they may be another replica's, being written now: there only those nothing has
  // written for FLEET_SWEEP_AGE_MS go, at start and every FLEET_SWEEP_EVERY_MS.
  const fleet = opts.replicaId !== undefined;
  const sweep = async () => {
    const restored: string[] = [];
    const swept = await sweepPartials(dataDir, {
      skip: [".qlorad"],
      restored,
      olderThanMs: fleet ? FLEET_SWEEP_AGE_MS : undefined,
    });
    if (swept.length) {
      logger.info(`removed ${swept.length} unfinished temporary file(s) left by a crash`);
    }
    for (const r of restored) logger.warn(`${r}: put back (a crash interrupted its replacement)`);
  };
  await sweep();
  const sweepTimer = fleet
    ? setInterval(
      () => sweep().catch((err) => logger.warn(`sweep of ${dataDir}: ${err}`)),
      FLEET_SWEEP_EVERY_MS,
    )
    : undefined;
  if (sweepTimer !== undefined) Deno.unrefTimer(sweepTimer);
  const jobs = await JobManager.open({
    dataDir,
    maxQueued: opts.maxQueuedJobs,
    logger,
    hostDirs,
    closeTimeoutMs: opts.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
    store: opts.store,
    fleet: opts.replicaId !== undefined,
    owner: opts.replicaId,
    leaseTtlMs: opts.leaseTtlMs,
    // Its worker starts below, once the handlers have registered their runners.
    startFleetWorker: false,
  });
  const unobserveJobs = observeJobs(() => jobs.list());
  // The fleet queue counts the whole fleet's jobs: the gauges an autoscaler watches.
  const unobserveFleet = jobs.fleet
    ? observeFleetJobs(async () => {
      const { waiting, active } = await jobs.fleetCounts();
      return { queued: waiting, running: active };
    })
    : () => {};
  const health = new HealthImplementation({ "": "SERVING", [SERVICE_NAME]: "SERVING" });
  // Serving needs both a GPU and, with a shared store, the store.
  let gpuOk = true;
  let storeOk = true;
  const publishHealth = () => {
    const state = gpuOk && storeOk ? "SERVING" : "NOT_SERVING";
    health.setStatus("", state);
    health.setStatus(SERVICE_NAME, state);
  };
  const gpu = new GpuHolder(logger, (ok) => {
    gpuOk = ok;
    publishHealth();
  });
  const unwatchStore = opts.watchStore?.((available, why) => {
    storeOk = available;
    if (available) logger.info("job store reachable again: SERVING");
    else logger.warn(`job store unreachable (${why ?? "no answer"}): NOT_SERVING`);
    publishHealth();
  }) ?? (() => {});
  const ctx: ServiceContext = {
    jobs,
    dataDir,
    logger,
    hostDirs,
    quantize: opts.quantize ?? quantizeModel,
    gpu: gpu.get,
    streams: new StreamLimiter(opts.maxStreamsPerConnection, opts.maxStreams),
    gpuMemoryBudgetBytes: opts.gpuMemoryBudgetBytes,
    runners: new Map(),
  };

  const server = new grpc.Server({
    "grpc.max_receive_message_length": opts.maxMessageBytes ?? MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    // Authentication runs on each call's metadata, before its handler (health stays open).
    interceptors: opts.authToken !== undefined ? [tokenInterceptor(opts.authToken)] : [],
  });
  // Every qlorad.v1 handler, in one table (wrap it here to add per-call behaviour).
  const handlers: Record<string, UntypedHandleCall> = {
    Quantize: quantizeHandler(ctx),
    Train: trainHandler(ctx),
    Evaluate: evaluateHandler(ctx),
    Generate: generateHandler(ctx),
    EstimateMemory: estimateHandler(ctx),
    Export: exportHandler(ctx, opts.exportGguf ?? exportGguf),
    ...jobHandlers(ctx),
  };
  // One span per RPC (continuing the caller's traceparent) when telemetry is configured.
  server.addService(service, wrapHandlers(handlers, service));
  // The handlers registered their kinds' runners: jobs submitted elsewhere can run here now.
  if (jobs.fleet) {
    jobs.useRebuilder({
      has: (kind) => ctx.runners?.has(kind) ?? false,
      build: (record, events) => rebuildJob(ctx, record, events),
    });
  }

  health.addToServer(server);
  new ReflectionService(packageDefinition).addToServer(server);
  answerUnknownMethodsAfterAuth(server);

  const address = host.includes(":") ? `[${host}]:${opts.port ?? 0}` : `${host}:${opts.port ?? 0}`;
  let port: number;
  try {
    // Jobs are taken from the fleet's queue only now that they can be rebuilt here.
    if (jobs.fleet) await jobs.startFleetWorker();
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        address,
        opts.tls ? serverCredentials(opts.tls) : grpc.ServerCredentials.createInsecure(),
        (err, p) => err ? reject(err) : resolve(p),
      )
    );
  } catch (err) {
    clearInterval(sweepTimer);
    unwatchStore();
    unobserveJobs();
    unobserveFleet();
    ctx.streams?.close();
    await jobs.close();
    throw err;
  }

  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      clearInterval(sweepTimer);
      unwatchStore();
      health.setStatus("", "NOT_SERVING");
      health.setStatus(SERVICE_NAME, "NOT_SERVING");
      // No new calls from here on; open ones (a Train stream) go on until their job ends.
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await jobs.close(); // the running job stops (and checkpoints); every job stream ends
      await gpu.close();
      unobserveJobs();
      unobserveFleet();
      observeGpuMemory(undefined);
      await forceAfter(server, drained, CALLS_GRACE_MS);
      ctx.streams?.close();
      unlock();
    })();
  return { port, close };
}

/**
 * grpc-js answers a method it has no handler for with UNIMPLEMENTED before any interceptor runs,
 * so without a token a client could tell real methods (UNAUTHENTICATED) from made-up ones. Here
 * an unknown method gets a handler of its own that answers UNIMPLEMENTED, so it goes through the
 * interceptors (authentication first) like every other call. (This wraps grpc-js's internal
 * handler lookup, pinned at the version in deno.json; tests/service/reliability_test.ts checks it.)
 */
function answerUnknownMethodsAfterAuth(server: grpc.Server): void {
  // deno-lint-ignore no-explicit-any
  const internals = server as any;
  const lookup = internals._retrieveHandler;
  if (typeof lookup !== "function") return;
  internals._retrieveHandler = function (path: string) {
    const found = lookup.call(this, path);
    if (found) return found;
    return {
      type: "bidi",
      path,
      serialize: (value: unknown) => value,
      deserialize: (bytes: unknown) => bytes,
      func: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        call.on("error", () => {});
        call.emit("error", {
          code: grpc.status.UNIMPLEMENTED,
          details: `the server does not implement ${String(path).slice(0, 200)}`,
          metadata: new grpc.Metadata(),
        });
      },
    };
  };
}

/** Waits for `drained`, forcing the server down when calls are still open after `graceMs`. */
async function forceAfter(
  server: grpc.Server,
  drained: Promise<void>,
  graceMs: number,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    drained,
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
    }),
  ]);
  clearTimeout(timer);
}
