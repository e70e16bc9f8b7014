/**
 * What survives a crash, with `qlorad serve` as a child process (issue 14, items 5 and 6). A job
 * the client saw SUCCEED is still SUCCEEDED after the server is killed (SIGKILL) the moment that
 * event arrives, and a restart never appends a FAILED after it. A second server on the same data
 * directory refuses to start, naming the first one's pid, in the same process and as a CLI.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { startServer } from "../../src/service/server.ts";
import { silentLogger } from "../../src/service/status.ts";
import { QloradError } from "../../src/util/errors.ts";
import { call, collect, connect, type Msg } from "./grpc_client.ts";

const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));

interface Served {
  port: number;
  child: Deno.ChildProcess;
  /** Kills the child with `signal`; resolves with its exit status and what it logged. */
  stop(signal: Deno.Signal): Promise<{ code: number; log: string }>;
}

function serveCommand(dataDir: string): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "serve", "--port", "0", "--data-dir", dataDir],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

async function serve(dataDir: string): Promise<Served> {
  const child = serveCommand(dataDir).spawn();
  const log = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let port = 0;
  while (!port) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`serve exited early: ${seen}${await log}`);
    seen += value;
    port = Number(seen.match(/listening on 127\.0\.0\.1:(\d+)/)?.[1] ?? 0);
  }
  return {
    port,
    child,
    async stop(signal) {
      child.kill(signal);
      const { code } = await child.status;
      await lines.cancel();
      return { code, log: await log };
    },
  };
}

Deno.test({
  name: "a job seen SUCCEEDED stays SUCCEEDED after a SIGKILL at that moment and a restart",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-kill-" });
    const running: Served[] = [];
    try {
      await makeTinyLlama(path.join(dataDir, "tiny"));
      for (const attempt of [1, 2]) {
        const first = await serve(dataDir);
        running.push(first);
        const c = connect(first.port);
        // Kill the server as soon as the client has the final event, before anything else.
        const seen = await new Promise<Msg>((resolve, reject) => {
          const stream = c.qlorad.Quantize({ model_path: "tiny", output_path: `out/q${attempt}` });
          stream.on("data", (ev: Msg) => {
            if (ev.state === "JOB_STATE_SUCCEEDED") {
              first.child.kill("SIGKILL");
              resolve(ev);
            }
          });
          stream.on("error", (e: Error) => reject(e));
        });
        c.close();
        await first.stop("SIGKILL").catch(() => {});
        running.pop();

        const second = await serve(dataDir);
        running.push(second);
        const d = connect(second.port);
        try {
          const job = await call(d.qlorad, "GetJob", { job_id: seen.job_id });
          assert.equal(
            job.state,
            "JOB_STATE_SUCCEEDED",
            `attempt ${attempt}: ${job.error?.message}`,
          );
          const log = await collect(d.qlorad.WatchJob({ job_id: seen.job_id }));
          const states = log.events.map((e) => e.state);
          assert.equal(states.at(-1), "JOB_STATE_SUCCEEDED", states.join(","));
          assert.ok(!states.includes("JOB_STATE_FAILED"), states.join(","));
          assert.equal(log.events.at(-1)!.seq, seen.seq);
          await Deno.stat(path.join(dataDir, `out/q${attempt}/model.safetensors`));
        } finally {
          d.close();
          await second.stop("SIGTERM");
          running.pop();
        }
      }
    } finally {
      for (const s of running) await s.stop("SIGKILL").catch(() => {});
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a second server on the same data directory refuses to start, naming the first",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "qlorad-lock-" });
    try {
      // In one process.
      const a = await startServer({ dataDir, port: 0, logger: silentLogger });
      try {
        await assert.rejects(
          startServer({ dataDir, port: 0, logger: silentLogger }),
          (err: QloradError) => {
            assert.equal(err.kind, "failed_precondition");
            assert.match(
              err.message,
              new RegExp(`in use by another qlorad server \\(pid ${Deno.pid}\\)`),
            );
            return true;
          },
        );
        const c = connect(a.port);
        assert.deepEqual((await call(c.qlorad, "ListJobs", {})).jobs, [], "the first still serves");
        c.close();
      } finally {
        await a.close();
      }
      // Released on close: the next one starts.
      const b = await startServer({ dataDir, port: 0, logger: silentLogger });
      await b.close();

      // As two `qlorad serve` processes: the second exits 1 with the reason.
      const first = await serve(dataDir);
      try {
        const out = await serveCommand(dataDir).output();
        const stderr = new TextDecoder().decode(out.stderr);
        assert.equal(out.code, 1, stderr);
        assert.match(
          stderr,
          new RegExp(`in use by another qlorad server \\(pid ${first.child.pid}\\)`),
        );
        const c = connect(first.port);
        assert.deepEqual((await call(c.qlorad, "ListJobs", {})).jobs, []);
        c.close();
      } finally {
        await first.stop("SIGTERM");
      }
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
