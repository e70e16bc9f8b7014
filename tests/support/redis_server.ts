/**
 * A real `redis-server` (Debian's package; scripts/qlorad.sh installs it for the test suite) for
 * tests of the Redis job store: on a free loopback port, its data in a folder of its own, the
 * append-only file on and fsynced on every write, so a test can kill it (SIGKILL) and start it
 * again on the same data, as a crash and restart of Redis.
 */

/** The redis-server binary, or undefined when none is installed. */
export function findRedisServer(): string | undefined {
  for (const dir of [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/bin", "/usr/sbin"]) {
    if (!dir) continue;
    const candidate = `${dir}/redis-server`;
    try {
      if (Deno.statSync(candidate).isFile) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A port nothing listens on right now (the kernel's choice). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

export interface RedisServerOptions {
  /** Sets `requirepass`. */
  password?: string;
  /** PEM files: the server then listens with TLS only (clients need not present certificates). */
  tls?: { cert: string; key: string; ca: string };
  /** Extra redis-server arguments. */
  args?: string[];
}

export class RedisServer {
  readonly binary: string;
  readonly dir: string;
  readonly port: number;
  readonly #options: RedisServerOptions;
  #child?: Deno.ChildProcess;

  private constructor(binary: string, dir: string, port: number, options: RedisServerOptions) {
    this.binary = binary;
    this.dir = dir;
    this.port = port;
    this.#options = options;
  }

  /** Starts a server on a fresh folder and a free port, and waits until it answers. */
  static async start(binary: string, options: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = await Deno.makeTempDir({ prefix: "qlorad-redis-" });
    // The free port can be taken between freePort() and redis-server's bind: try another.
    for (let attempt = 1;; attempt++) {
      const server = new RedisServer(binary, dir, freePort(), options);
      try {
        await server.restart();
        return server;
      } catch (err) {
        await server.kill();
        if (attempt >= 3) {
          await Deno.remove(dir, { recursive: true }).catch(() => {});
          throw err;
        }
      }
    }
  }

  get url(): string {
    return `${this.#options.tls ? "rediss" : "redis"}://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again) on the same folder and port; the AOF brings its data back. */
  async restart(): Promise<void> {
    if (this.#child) throw new Error("redis-server is already running");
    const tls = this.#options.tls;
    const args = [
      ...(tls
        ? [
          "--port",
          "0",
          "--tls-port",
          String(this.port),
          "--tls-cert-file",
          tls.cert,
          "--tls-key-file",
          tls.key,
          "--tls-ca-cert-file",
          tls.ca,
          "--tls-auth-clients",
          "no",
        ]
        : ["--port", String(this.port)]),
      "--bind",
      "127.0.0.1",
      "--dir",
      this.dir,
      "--appendonly",
      "yes",
      "--appendfsync",
      "always",
      "--save",
      "",
      "--daemonize",
      "no",
      "--logfile",
      `${this.dir}/redis.log`,
      ...(this.#options.password ? ["--requirepass", this.#options.password] : []),
      ...(this.#options.args ?? []),
    ];
    this.#child = new Deno.Command(this.binary, { args, stdout: "null", stderr: "null" }).spawn();
    await this.#waitReady();
  }

  /** Kills the server at once (no shutdown save): a crash. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    try {
      child.kill("SIGKILL");
    } catch {
      // it had exited already (e.g. it could not bind its port)
    }
    await child.status;
  }

  /** Kills the server and removes its folder. */
  async dispose(): Promise<void> {
    await this.kill();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** Polls with a raw PING until the server answers PONG (or NOAUTH: up, wants a password). */
  async #waitReady(): Promise<void> {
    const child = this.#child!;
    let exited = false;
    child.status.then(() => exited = true);
    for (let attempt = 0; attempt < 400; attempt++) {
      if (exited) break;
      try {
        const tls = this.#options.tls;
        const conn = tls
          ? await Deno.connectTls({
            hostname: "127.0.0.1",
            port: this.port,
            caCerts: [await Deno.readTextFile(tls.ca)],
          })
          : await Deno.connect({ hostname: "127.0.0.1", port: this.port });
        try {
          await conn.write(new TextEncoder().encode("PING\r\n"));
          const buf = new Uint8Array(64);
          const n = await conn.read(buf);
          const reply = new TextDecoder().decode(buf.subarray(0, n ?? 0));
          if (reply.startsWith("+PONG") || reply.startsWith("-NOAUTH")) return;
        } finally {
          conn.close();
        }
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const log = await Deno.readTextFile(`${this.dir}/redis.log`).catch(() => "");
    throw new Error(`redis-server on port ${this.port} did not start:\n${log.slice(-2000)}`);
  }
}
