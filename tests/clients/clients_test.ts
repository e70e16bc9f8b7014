/**
 * The client packages in clients/ against a real `qlorad serve` process on 127.0.0.1, the tiny
 * Llama in its data dir: the Python package pip-installed offline into a scratch venv (Debian's
 * python3-venv, grpcio, protobuf, setuptools), the Go package tested and the Go example built
 * offline from Debian's sources. Their committed stubs must equal freshly generated ones. The
 * packages' own tests run (unit tests, then live ones: a stream dropped mid-job and resumed from
 * the last seq gives the job's log exactly, a bad request is the typed InvalidArgument naming the
 * field, a greedy Generate's streamed pieces make its final text, an Export of the tiny model to
 * GGUF F16 writes the file it reports; on a second server with mutual TLS and a bearer token, the
 * token gets through and its absence is Unauthenticated). Then each orchestrator example, on its
 * package, must print job ids that the server knows as SUCCEEDED, write the 4-bit model and the adapter, print eval losses, stream a sample whose
 * text is the one their summary quotes, replay a dropped stream without a gap, and exit non-zero
 * when a request is refused.
 *
 * Needs the client toolchains: bash scripts/install_client_toolchains.sh
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { makeTinyLlama } from "../../scripts/tiny_llama/mod.ts";
import { call, connect, streamCall } from "../service/grpc_client.ts";
import type { Msg } from "../service/grpc_client.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLI = path.join(ROOT, "src/cli/main.ts");
/** Debian's Python: it has python3-grpcio and python3-protobuf, which the venv reuses. */
const SYSTEM_PYTHON = "/usr/bin/python3";

/**
 * Train and Evaluate arrived after the clients did: while the server answers them with
 * UNIMPLEMENTED, the orchestrators run with --quantize-only. Set this to true to require the
 * full flow (the probe is then skipped).
 */
const REQUIRE_FULL_FLOW = false;

const UNIMPLEMENTED = 12;
/** Each job's first stream is dropped after this many events and resumed with WatchJob. */
const DROP_AFTER = 3;
const LORA_R = 4;
/** The sample the orchestrators generate after training. */
const SAMPLE_PROMPT = "The capital of France is";
const SAMPLE_TOKENS = 7;

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Output> {
  const out = await new Deno.Command(cmd, { args, cwd: ROOT, env, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** An orchestrator run; Python leaves no __pycache__ behind. */
function orchestrate(cmd: string, args: string[]): Promise<Output> {
  return run(cmd, args, { PYTHONDONTWRITEBYTECODE: "1" });
}

async function readJson(file: string): Promise<Msg> {
  return JSON.parse(await Deno.readTextFile(file));
}

async function mustRun(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Output> {
  const r = await run(cmd, args, { PYTHONDONTWRITEBYTECODE: "1", ...env });
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")}:\n${r.stdout}${r.stderr}`);
  return r;
}

/** Every file under `dir`, relative path -> contents. */
async function readTree(dir: string, under = ""): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for await (const entry of Deno.readDir(path.join(dir, under))) {
    const rel = path.join(under, entry.name);
    if (entry.isDirectory) {
      for (const [k, v] of await readTree(dir, rel)) files.set(k, v);
    } else files.set(rel, await Deno.readTextFile(path.join(dir, rel)));
  }
  return files;
}

/** The committed stubs in `committed` equal what `script OUT` generates now from proto/. */
async function checkStubs(script: string, committed: string, scratch: string): Promise<void> {
  const fresh = path.join(scratch, "stubs", path.basename(path.dirname(script)));
  await mustRun("bash", [script, fresh]);
  const want = await readTree(fresh);
  // __init__.py of the Python stubs' package is written by hand, not generated.
  const have = new Map(
    [...await readTree(path.join(ROOT, committed))].filter(([f]) => f !== "__init__.py"),
  );
  assert.ok(want.size >= 2, `${script} generated ${[...want.keys()]}`);
  assert.deepEqual([...have.keys()].sort(), [...want.keys()].sort(), committed);
  for (const [file, text] of want) {
    assert.ok(
      have.get(file) === text,
      `${committed}/${file} differs from the proto: run bash ${script} and commit the result`,
    );
  }
}

/** Fails with the fix when a toolchain is missing (a skipped test would hide it). */
async function checkToolchains(): Promise<void> {
  const probes: [string, string[]][] = [
    [SYSTEM_PYTHON, ["-c", "import grpc, google.protobuf, ensurepip, setuptools, wheel"]],
    ["go", ["version"]],
    ["protoc", ["--version"]],
  ];
  for (const [cmd, args] of probes) {
    let ok = false;
    try {
      ok = (await run(cmd, args)).code === 0;
    } catch {
      // not installed
    }
    assert.ok(ok, `${cmd} is missing: run bash scripts/install_client_toolchains.sh`);
  }
}

/**
 * `qlorad serve` on 127.0.0.1, a free port, with `flags` and `env` added; its output is collected
 * until it stops.
 */
async function startServe(dataDir: string, flags: string[] = [], env: Record<string, string> = {}) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...["run", "-A", CLI, "serve", "--port", "0", "--host", "127.0.0.1", "--data-dir", dataDir],
      ...flags,
    ],
    env,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let stdout = "";
  const port = Promise.withResolvers<number>();
  const drained = (async () => {
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      stdout += text;
      const m = stdout.match(/^qlorad listening on 127\.0\.0\.1:(\d+)$/m);
      if (m) port.resolve(Number(m[1]));
    }
  })();
  const exited = child.status.then(async () => {
    await drained;
    throw new Error(`serve exited early:\n${stdout}${await stderr}`);
  });
  return {
    port: await Promise.race([port.promise, exited]),
    async stop(): Promise<string> {
      exited.catch(() => {});
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
      await drained;
      return stdout + await stderr;
    },
  };
}

/** The server name in the secure server's certificate (and nowhere else, not its address). */
const SERVER_NAME = "qlorad.test";

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
    .output();
  assert.equal(out.code, 0, `openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

/**
 * A CA, a server certificate for SERVER_NAME and a client certificate (X.509 v3, as mutual TLS
 * requires), all P-256 keys, in `dir`.
 */
async function makeCertificates(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl(
    dir,
    ["req", "-x509", ...key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]
      .concat(["-subj", "/CN=qlorad clients test CA"]),
  );
  const issue = async (name: string, ext: string) => {
    await Deno.writeTextFile(path.join(dir, `${name}.ext`), ext);
    await openssl(
      dir,
      ["req", ...key, "-keyout", `${name}.key`, "-out", `${name}.csr`]
        .concat(["-subj", `/CN=${name}`]),
    );
    await openssl(
      dir,
      ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key"]
        .concat([
          "-CAcreateserial",
          "-out",
          `${name}.crt`,
          "-days",
          "2",
          "-extfile",
          `${name}.ext`,
        ]),
    );
  };
  await issue("server", `subjectAltName=DNS:${SERVER_NAME}\nextendedKeyUsage=serverAuth\n`);
  await issue("client", "extendedKeyUsage=clientAuth\n");
}

/** Job ids and final states from the summary the orchestrators print, by row name. */
function summaryRows(
  stdout: string,
): Map<string, { jobId: string; state: string; detail: string }> {
  const summary = stdout.slice(stdout.lastIndexOf("\nsummary:\n"));
  const rows = new Map();
  for (const m of summary.matchAll(/^ {2}(\S+) +job (\S+) ([A-Z]+)(?: {2}(.*))?$/gm)) {
    rows.set(m[1], { jobId: m[2], state: m[3], detail: m[4] ?? "" });
  }
  return rows;
}

/** A loss from "loss 6.123456" in a summary detail. */
function lossIn(detail: string): number {
  const m = detail.match(/\bloss (\d+\.\d+)/);
  assert.ok(m, `no loss in ${JSON.stringify(detail)}`);
  return Number(m[1]);
}

Deno.test("clients: the Python and Go packages and their examples on a live server", async (t) => {
  await checkToolchains();
  const scratch = await Deno.makeTempDir({ prefix: "qlorad-clients-" });
  const dataDir = path.join(scratch, "data");
  const goBinary = path.join(scratch, "orchestrator");
  const venv = path.join(scratch, "venv");
  const python = path.join(venv, "bin", "python");
  let server: Awaited<ReturnType<typeof startServe>> | undefined;
  let secureServer: Awaited<ReturnType<typeof startServe>> | undefined;
  let grpc: ReturnType<typeof connect> | undefined;
  let passed = false;
  try {
    passed = await t.step("the committed stubs match proto/", async () => {
      await checkStubs("clients/python/generate.sh", "clients/python/src/qlorad/v1", scratch);
      await checkStubs("clients/go/generate.sh", "clients/go/gen/qloradv1", scratch);
    });

    passed =
      await t.step("pip installs the Python package offline; its unit tests pass", async () => {
        // Installed from a copy: pip's in-tree build would leave build/ and *.egg-info behind.
        const source = path.join(scratch, "python-src");
        await mustRun("cp", ["-r", "clients/python", source]);
        await mustRun(SYSTEM_PYTHON, ["-m", "venv", "--system-site-packages", venv]);
        await mustRun(python, [
          ...["-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-index", source],
        ]);
        // The package the tests import is the installed one, not a source tree.
        const where = await mustRun(python, ["-c", "import qlorad; print(qlorad.__file__)"]);
        assert.ok(where.stdout.trim().startsWith(venv + "/"), where.stdout);
        const unit = await mustRun(python, [
          "-m",
          "unittest",
          "discover",
          "-s",
          "clients/python/tests",
        ]);
        assert.match(unit.stderr, /^Ran \d+ tests/m, unit.stderr);
      }) && passed;

    await mustRun("bash", ["clients/go/build.sh", goBinary]);
    await makeTinyLlama(path.join(dataDir, "tiny"));
    server = await startServe(dataDir);
    grpc = connect(server.port);
    const target = ["--target", `127.0.0.1:${server.port}`];
    // A second server (its own data dir: a data dir has one server) with mutual TLS and a bearer
    // token, for the packages' connection options.
    const certs = path.join(scratch, "certs");
    await makeCertificates(certs);
    const token = "clients-test-token";
    secureServer = await startServe(path.join(scratch, "secure-data"), [
      ...[
        "--tls-cert",
        path.join(certs, "server.crt"),
        "--tls-key",
        path.join(certs, "server.key"),
      ],
      ...["--tls-client-ca", path.join(certs, "ca.crt")],
    ], { QLORAD_AUTH_TOKEN: token });
    const live = {
      QLORAD_TEST_TARGET: `127.0.0.1:${server.port}`,
      QLORAD_TEST_MODEL: "tiny",
      QLORAD_TEST_DATA_DIR: dataDir,
      QLORAD_TEST_SECURE_TARGET: `127.0.0.1:${secureServer.port}`,
      QLORAD_TEST_TOKEN: token,
      QLORAD_TEST_CERTS: certs,
      QLORAD_TEST_SERVER_NAME: SERVER_NAME,
    };

    passed = await t.step(
      "the Python package on the server: resume, typed errors, Generate, Export, mTLS + token",
      async () => {
        const r = await mustRun(python, ["clients/python/tests/live_server.py", "-v"], live);
        for (
          const name of [
            "test_watch_resumes_after_the_client_closed_its_stream",
            "test_a_dropped_stream_resumes_by_itself",
            "test_a_bad_request_raises_invalid_argument_naming_the_field",
            "test_an_unknown_job_raises_not_found",
            "test_a_greedy_generate_streams_pieces_that_make_its_text",
            "test_an_export_of_the_model_to_gguf_f16_writes_the_file",
            "test_a_bad_generate_or_export_raises_invalid_argument_naming_the_field",
            "test_with_the_token_calls_reach_the_service",
            "test_without_the_token_calls_are_unauthenticated",
          ]
        ) assert.match(r.stderr, new RegExp(`^${name} .* \\.\\.\\. ok$`, "m"), r.stderr);
      },
    ) && passed;

    passed = await t.step(
      "the Go package: unit tests, and on the server: resume, typed errors, Generate, Export, " +
        "mTLS + token",
      async () => {
        const r = await mustRun("bash", ["clients/go/test.sh", "-v", "-count=1"], live);
        const log = r.stdout + r.stderr;
        assert.doesNotMatch(log, /^--- (SKIP|FAIL)/m, log);
        for (
          const name of [
            "TestLiveWatchResumesAfterTheClientClosedItsStream",
            "TestLiveADroppedStreamResumesByItself",
            "TestLiveABadRequestIsInvalidArgumentNamingTheField",
            "TestLiveAnUnknownJobIsNotFound",
            "TestLiveAGreedyGenerateStreamsPiecesThatMakeItsText",
            "TestLiveAnExportToGgufF16WritesTheFile",
            "TestLiveABadGenerateOrExportIsInvalidArgumentNamingTheField",
            "TestFollowTextGivesThePiecesThenTheResult",
            "TestFollowTextOfACancelledGenerationIsJobFailed",
            "TestLiveSecureWithTheTokenReachesTheService",
            "TestLiveSecureWithoutTheTokenIsUnauthenticated",
            "TestABrokenStreamResumesAfterTheLastSeq",
            "TestEveryCodeHasItsSentinel",
          ]
        ) assert.match(log, new RegExp(`^--- PASS: ${name} `, "m"), log);
      },
    ) && passed;

    const clients: [string, string, string[]][] = [
      ["python", python, ["clients/python/orchestrator.py", ...target]],
      ["go", goBinary, target],
    ];

    let full = REQUIRE_FULL_FLOW;
    if (!full) {
      // Empty requests: an implemented RPC refuses them at once, creating no job.
      const train = await streamCall(grpc.qlorad, "Train", {});
      const evaluate = await streamCall(grpc.qlorad, "Evaluate", {});
      full = train.code !== UNIMPLEMENTED && evaluate.code !== UNIMPLEMENTED;
    }

    for (const [name, cmd, args] of clients) {
      const title = `${name}: ${
        full ? "Quantize, Train, Evaluate, a sample" : "Quantize (--quantize-only)"
      }`;
      passed = await t.step(title, async () => {
        const r = await orchestrate(cmd, [
          ...args,
          ...["--model", "tiny", "--workdir", name],
          ...["--data", "tiny/train.jsonl", "--eval-data", "tiny/eval.jsonl"],
          ...["--steps", "3", "--max-seq-len", "64", "--lora-r", String(LORA_R)],
          ...["--drop-after", String(DROP_AFTER)],
          ...["--sample-prompt", SAMPLE_PROMPT, "--sample-tokens", String(SAMPLE_TOKENS)],
          ...(full ? [] : ["--quantize-only"]),
        ]);
        const log = `${r.stdout}${r.stderr}`;
        assert.equal(r.code, 0, log);

        const kinds: Record<string, string> = full
          ? {
            quantize: "JOB_KIND_QUANTIZE",
            train: "JOB_KIND_TRAIN",
            "eval-base": "JOB_KIND_EVALUATE",
            "eval-adapter": "JOB_KIND_EVALUATE",
            sample: "JOB_KIND_GENERATE",
          }
          : { quantize: "JOB_KIND_QUANTIZE" };
        const rows = summaryRows(r.stdout);
        assert.deepEqual([...rows.keys()], Object.keys(kinds), log);
        for (const [row, kind] of Object.entries(kinds)) {
          const { jobId, state } = rows.get(row)!;
          assert.equal(state, "SUCCEEDED", `${row}: ${log}`);
          const job: Msg = await call(grpc!.qlorad, "GetJob", { job_id: jobId });
          assert.equal(job.kind, kind, row);
          assert.equal(job.state, "JOB_STATE_SUCCEEDED", row);
          // The first stream was dropped and the job followed on from the next seq (not the
          // sample's: a Generate follows its call, so its stream is never dropped).
          if (row === "sample") continue;
          const resumed = `reconnecting: WatchJob(${jobId}, from_seq=${DROP_AFTER + 1})`;
          assert.ok(r.stdout.includes(resumed), `${row}: no "${resumed}"\n${log}`);
        }

        // Each tensor's progress line exactly once across the drop: no gap, no repeat.
        const begin = r.stdout.indexOf("== quantize\n");
        const quantizeLog = r.stdout.slice(begin, r.stdout.indexOf("\n== ", begin + 1));
        const progress = [...quantizeLog.matchAll(/^ {2}\[ *(\d+)\/(\d+)\] (?:quantized|kept) /gm)];
        const total = Number(progress[0]?.[2]);
        assert.ok(total > 1, log);
        assert.deepEqual(
          progress.map((m) => Number(m[1])),
          Array.from({ length: total }, (_, i) => i + 1),
          quantizeLog,
        );
        const config = await readJson(path.join(dataDir, name, "model-nf4", "config.json"));
        assert.equal(config.quantization_config.bnb_4bit_quant_type, "nf4");
        if (!full) return;

        const adapterDir = path.join(dataDir, name, "adapter");
        assert.equal((await readJson(path.join(adapterDir, "adapter_config.json"))).r, LORA_R);
        assert.ok((await Deno.stat(path.join(adapterDir, "adapter_model.safetensors"))).isFile);
        assert.match(r.stdout, /^ {2}step 3\/3 {2}loss \d+\.\d{4} /m, log);
        for (const row of ["eval-base", "eval-adapter"]) {
          const loss = lossIn(rows.get(row)!.detail);
          assert.ok(Number.isFinite(loss) && loss > 0, `${row}: loss ${loss}`);
        }
        // The sample: its streamed text, after the prompt, is the text its summary quotes.
        const sample = rows.get("sample")!.detail.match(
          /^(\d+) tokens, (eos|stop|length): (".*")$/,
        );
        assert.ok(sample, `sample: ${rows.get("sample")!.detail}`);
        const tokens = Number(sample[1]);
        assert.ok(tokens >= 1 && tokens <= SAMPLE_TOKENS, `sample: ${tokens} tokens`);
        assert.equal(sample[2] === "length", tokens === SAMPLE_TOKENS, sample[0]);
        const streamed = `  > ${SAMPLE_PROMPT}${JSON.parse(sample[3])}\n`;
        assert.ok(r.stdout.includes(streamed), `no ${JSON.stringify(streamed)}\n${log}`);
      }) && passed;
    }

    passed = await t.step("a refused request: no job, exit status 1", async () => {
      for (const [name, cmd, args] of clients) {
        const r = await orchestrate(cmd, [
          ...args,
          ...["--model", "no-such-model", "--data", "tiny/train.jsonl", "--workdir", name],
        ]);
        assert.equal(r.code, 1, `${name}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /^ {2}quantize +no job {2}refused [A-Z_]+: .*no-such-model/m, name);
      }
    }) && passed;
  } finally {
    grpc?.close();
    const log = await server?.stop();
    const secureLog = await secureServer?.stop();
    if (!passed && log) console.error(`--- qlorad serve output ---\n${log.slice(-6000)}`);
    if (!passed && secureLog) {
      console.error(`--- secure serve output ---\n${secureLog.slice(-3000)}`);
    }
    await Deno.remove(scratch, { recursive: true });
  }
});
