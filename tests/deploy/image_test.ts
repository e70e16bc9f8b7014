/**
 * The container image, built and run for real: scripts/test_image.sh builds a Debian base from
 * Debian's packages and the Dockerfile on it with buildah (no daemon, no registry), starts the
 * server from the image on the CPU adapter, asks the image's HEALTHCHECK, runs the Python
 * client's Quantize, Train and Evaluate against it, and checks that the server runs as the
 * image's unprivileged user and writes nowhere but its volumes. It needs root on Debian 12 (amd64)
 * with apt's archive reachable, as CI has; elsewhere the test is skipped and says why.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** How long a connection to apt's archive may take before it counts as unreachable. */
const REACH_TIMEOUT_MS = 5000;

/** The first http(s) URI of the machine's apt sources (deb822 `URIs:` or one-line `deb`). */
async function aptSourceUri(): Promise<URL | undefined> {
  const files = ["/etc/apt/sources.list"];
  try {
    for await (const e of Deno.readDir("/etc/apt/sources.list.d")) {
      if (/\.(list|sources)$/.test(e.name)) files.push(`/etc/apt/sources.list.d/${e.name}`);
    }
  } catch {
    // no sources.list.d
  }
  for (const file of files.sort()) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch {
      continue;
    }
    const m = text.match(/^\s*URIs:\s*(https?:\/\/\S+)/m) ??
      text.match(/^\s*deb\s+(?:\[[^\]]*\]\s+)?(https?:\/\/\S+)/m);
    if (m) return new URL(m[1]);
  }
  return undefined;
}

/** Whether a TCP connection to the URI's host opens within REACH_TIMEOUT_MS. */
async function reachable(uri: URL): Promise<boolean> {
  const port = Number(uri.port || (uri.protocol === "https:" ? 443 : 80));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), REACH_TIMEOUT_MS);
  });
  const connecting = Deno.connect({ hostname: uri.hostname, port }).catch(() => undefined);
  const conn = await Promise.race([connecting, timeout]);
  clearTimeout(timer);
  if (conn) {
    conn.close();
    return true;
  }
  // A connection that opens after the timeout is closed when it does.
  connecting.then((late) => late?.close());
  return false;
}

/** Why the image cannot be built here, or undefined when it can. */
async function whyNotHere(): Promise<string | undefined> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `needs Linux on x86_64 (this is ${Deno.build.os}/${Deno.build.arch})`;
  }
  if (Deno.uid() !== 0) return "needs root (buildah's chroot isolation, mmdebstrap, apt-get)";
  let osRelease = "";
  try {
    osRelease = await Deno.readTextFile("/etc/os-release");
  } catch {
    // not Debian
  }
  if (!/^VERSION_CODENAME=bookworm$/m.test(osRelease)) return "needs Debian 12 (bookworm)";
  const uri = await aptSourceUri();
  if (!uri) return "no http(s) apt source in /etc/apt";
  if (!(await reachable(uri))) return `apt's archive (${uri.host}) is not reachable`;
  return undefined;
}

const skipReason = await whyNotHere();
if (skipReason) console.log(`image_test: skipped: ${skipReason}`);

Deno.test({
  name: "image: built from a Debian base with no registry, serves jobs as its unprivileged user",
  ignore: skipReason !== undefined,
  async fn() {
    const out = await new Deno.Command("bash", {
      args: ["scripts/test_image.sh"],
      cwd: ROOT,
      env: { DENO: Deno.execPath() },
      stdin: "null",
    }).output();
    const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `scripts/test_image.sh failed:\n${log.slice(-12000)}`);
    // The script ends with the image's size and contents and the time of each phase (its whole
    // output is in tmp/image/last-run.log).
    const summary = /^test_image: (image localhost|in the image|PASSED)/;
    for (const line of log.split("\n").filter((l) => summary.test(l))) console.log(line);
  },
});
