/**
 * Test helpers: a real server on 127.0.0.1:0 over a temp data dir, and real grpc-js clients
 * loaded from the proto files (QLoRA, Health, Reflection).
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { PROTO_LOADER_OPTIONS, PROTO_PATH, startServer } from "../../src/service/server.ts";
import type { RunningServer, ServerOptions } from "../../src/service/server.ts";
import { silentLogger } from "../../src/service/status.ts";

// deno-lint-ignore no-explicit-any
export type Msg = Record<string, any>;
// deno-lint-ignore no-explicit-any
type AnyClient = any;

const REFLECTION_PROTO = fileURLToPath(
  new URL("../proto/grpc/reflection/v1/reflection.proto", import.meta.resolve("@grpc/reflection")),
);

function loadPackage(file: string): AnyClient {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, PROTO_LOADER_OPTIONS));
}

export interface Clients {
  /** qlorad.v1.QLoRA client. */
  qlorad: AnyClient;
  /** grpc.health.v1.Health client. */
  health: AnyClient;
  /** grpc.reflection.v1.ServerReflection client. */
  reflection: AnyClient;
  close(): void;
}

/**
 * Clients for a server on 127.0.0.1:`port`. grpc-js shares one connection among clients of the
 * same target; with `ownConnection` these clients get a connection of their own.
 */
export function connect(port: number, opts: { ownConnection?: boolean } = {}): Clients {
  const address = `127.0.0.1:${port}`;
  const creds = grpc.credentials.createInsecure();
  const options = opts.ownConnection ? { "grpc.use_local_subchannel_pool": 1 } : {};
  const made: AnyClient[] = [];
  const make = (ctor: AnyClient) => {
    const c = new ctor(address, creds, options);
    made.push(c);
    return c;
  };
  try {
    return {
      qlorad: make(loadPackage(PROTO_PATH).qlorad.v1.QLoRA),
      health: make(loadPackage(healthProtoPath).grpc.health.v1.Health),
      reflection: make(loadPackage(REFLECTION_PROTO).grpc.reflection.v1.ServerReflection),
      close: () => made.forEach((c) => c.close()),
    };
  } catch (err) {
    made.forEach((c) => c.close());
    throw err;
  }
}

export interface TestServer {
  server: RunningServer;
  dataDir: string;
  port: number;
  /** qlorad.v1.QLoRA client. */
  qlorad: AnyClient;
  /** grpc.health.v1.Health client. */
  health: AnyClient;
  /** grpc.reflection.v1.ServerReflection client. */
  reflection: AnyClient;
  /** Closes the clients and the server, and removes the data dir it made. */
  close(): Promise<void>;
}

export async function startTestServer(
  opts: {
    dataDir?: string;
    maxQueuedJobs?: number;
    quantize?: ServerOptions["quantize"];
    /** Any other server option (logger, limits, ...). */
    server?: Partial<ServerOptions>;
  } = {},
): Promise<TestServer> {
  const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: "qlorad-test-" });
  const server = await startServer({
    dataDir,
    port: 0,
    logger: silentLogger,
    maxQueuedJobs: opts.maxQueuedJobs,
    quantize: opts.quantize,
    ...opts.server,
  });
  let clients: Clients;
  try {
    clients = connect(server.port);
  } catch (err) {
    await server.close();
    throw err;
  }
  const { qlorad, health, reflection } = clients;
  return {
    server,
    dataDir,
    port: server.port,
    qlorad,
    health,
    reflection,
    async close() {
      clients.close();
      await server.close();
      if (!opts.dataDir) await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** A unary call as a promise. */
export function call(client: AnyClient, method: string, req: Msg): Promise<Msg> {
  return new Promise((resolve, reject) =>
    client[method](
      req,
      (err: grpc.ServiceError | null, res: Msg) => err ? reject(err) : resolve(res),
    )
  );
}

export interface StreamOutcome {
  events: Msg[];
  /** The status the stream ended with (code 0 when OK). */
  code: grpc.status;
  details: string;
}

/** Reads a server stream to its end: every message, then the status. */
export function collect(stream: grpc.ClientReadableStream<Msg>): Promise<StreamOutcome> {
  return new Promise((resolve) => {
    const events: Msg[] = [];
    let error: grpc.ServiceError | undefined;
    let final: grpc.StatusObject | undefined;
    let drained = false;
    const settle = () => {
      if (!final || !drained) return;
      resolve({
        events,
        code: error?.code ?? final.code,
        details: error?.details ?? final.details,
      });
    };
    stream.on("data", (ev: Msg) => events.push(ev));
    stream.on("error", (err: grpc.ServiceError) => error = err);
    // The status can come before buffered messages are delivered: wait for both.
    stream.on("status", (s: grpc.StatusObject) => {
      final = s;
      settle();
    });
    const onDrained = () => {
      drained = true;
      settle();
    };
    stream.on("end", onDrained);
    stream.on("close", onDrained);
  });
}

/** Calls a server-streaming RPC and reads it to its end. */
export function streamCall(client: AnyClient, method: string, req: Msg): Promise<StreamOutcome> {
  return collect(client[method](req));
}

/** The health status of a service ("" for the whole server). */
export async function healthStatus(t: { health: AnyClient }, service = ""): Promise<string> {
  return (await call(t.health, "Check", { service })).status;
}

/** Service names listed by server reflection. */
export function reflectedServices(t: TestServer): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const stream = t.reflection.ServerReflectionInfo();
    stream.on("data", (res: Msg) => {
      if (res.error_response) reject(new Error(res.error_response.error_message));
      else resolve(res.list_services_response.service.map((s: Msg) => s.name));
      stream.end();
    });
    stream.on("error", reject);
    stream.write({ list_services: "*" });
  });
}

/** How many file descriptors reflection returns for a symbol (its file and dependencies). */
export function reflectedFileCount(t: TestServer, symbol: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = t.reflection.ServerReflectionInfo();
    stream.on("data", (res: Msg) => {
      if (res.error_response) reject(new Error(res.error_response.error_message));
      else resolve(res.file_descriptor_response.file_descriptor_proto.length);
      stream.end();
    });
    stream.on("error", reject);
    stream.write({ file_containing_symbol: symbol });
  });
}

/** Writes a file under the data dir, creating folders. */
export async function writeData(dataDir: string, rel: string, text: string): Promise<void> {
  const file = path.join(dataDir, rel);
  await Deno.mkdir(path.dirname(file), { recursive: true });
  await Deno.writeTextFile(file, text);
}

/** A server stream being read: its events so far, a wait for a given event, and its end. */
export interface FollowedStream {
  events: Msg[];
  /** Resolves with the first event (seen or to come) that matches; rejects if the stream ends. */
  until(match: (ev: Msg) => boolean): Promise<Msg>;
  done: Promise<StreamOutcome>;
  stream: grpc.ClientReadableStream<Msg>;
}

export function follow(stream: grpc.ClientReadableStream<Msg>): FollowedStream {
  const events: Msg[] = [];
  const waiters: {
    match: (ev: Msg) => boolean;
    resolve: (ev: Msg) => void;
    reject: (e: Error) => void;
  }[] = [];
  let ended = false;
  stream.on("data", (ev: Msg) => {
    events.push(ev);
    for (const w of [...waiters]) {
      if (w.match(ev)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(ev);
      }
    }
  });
  const done = collect(stream).then((outcome) => {
    ended = true;
    for (const w of waiters.splice(0)) {
      w.reject(new Error(`stream ended (${outcome.code} ${outcome.details}) before the event`));
    }
    return outcome;
  });
  return {
    events,
    done,
    stream,
    until(match) {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      if (ended) return Promise.reject(new Error("stream already ended"));
      return new Promise((resolve, reject) => waiters.push({ match, resolve, reject }));
    },
  };
}
