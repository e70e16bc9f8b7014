import assert from "node:assert/strict";
import * as path from "node:path";
import { resolveDataPath } from "../../src/service/paths.ts";
import type { ErrorKind, QloradError } from "../../src/util/errors.ts";

interface Dirs {
  /** The data dir as given (a symlink to `real`, to check realpath handling). */
  dataDir: string;
  real: string;
  outside: string;
}

async function withDirs(fn: (d: Dirs) => Promise<void>): Promise<void> {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "qlorad-paths-" }));
  const real = path.join(base, "data-real");
  const outside = path.join(base, "outside");
  const dataDir = path.join(base, "data-link");
  await Deno.mkdir(path.join(real, "models", "tiny"), { recursive: true });
  await Deno.writeTextFile(path.join(real, "models", "tiny", "config.json"), "{}");
  await Deno.mkdir(outside);
  await Deno.writeTextFile(path.join(outside, "secret"), "s");
  await Deno.symlink(real, dataDir);
  try {
    await fn({ dataDir, real, outside });
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

/** Asserts a refusal of the right kind whose message names the field and the user's path only. */
async function refused(
  d: Dirs,
  userPath: string,
  kind: ErrorKind,
  opts: { mustExist?: boolean; field?: string } = {},
): Promise<void> {
  const field = opts.field ?? "model_path";
  await assert.rejects(
    resolveDataPath(d.dataDir, userPath, field, { mustExist: opts.mustExist }),
    (err: QloradError) => {
      assert.equal(err.kind, kind, `${userPath}: ${err.message}`);
      assert.ok(err.message.startsWith(field), err.message);
      if (userPath) assert.ok(err.message.includes(JSON.stringify(userPath)), err.message);
      // Host paths appear only where the user sent them.
      const rest = err.message.replace(JSON.stringify(userPath), "");
      for (const host of [d.dataDir, d.real, d.outside]) {
        assert.ok(!rest.includes(host), `host path leaked: ${err.message}`);
      }
      return true;
    },
  );
}

Deno.test("relative paths resolve inside the data directory's realpath", async () => {
  await withDirs(async (d) => {
    const opts = { mustExist: true };
    assert.equal(
      await resolveDataPath(d.dataDir, "models/tiny", "model_path", opts),
      path.join(d.real, "models", "tiny"),
    );
    assert.equal(
      await resolveDataPath(d.dataDir, "./models//tiny/", "model_path", opts),
      path.join(d.real, "models", "tiny"),
    );
    // Not existing yet is fine for outputs.
    assert.equal(
      await resolveDataPath(d.dataDir, "out/a/b", "output_path"),
      path.join(d.real, "out", "a", "b"),
    );
  });
});

Deno.test("missing paths are not_found naming the field and the path", async () => {
  await withDirs(async (d) => {
    await refused(d, "models/nope", "not_found", { mustExist: true });
    await refused(d, "nope/deeper/still", "not_found", { mustExist: true });
  });
});

Deno.test("absolute paths and '..' are invalid_argument", async () => {
  await withDirs(async (d) => {
    for (const p of ["/etc", "/etc/passwd", d.real, "C:/x", "\\\\server\\share"]) {
      await refused(d, p, "invalid_argument");
    }
    for (const p of ["..", "../x", "models/../../x", "models/..", "a/../b", "..\\x"]) {
      await refused(d, p, "invalid_argument", { field: "output_path" });
    }
    for (const p of ["", ".", "./", "a\0b"]) await refused(d, p, "invalid_argument");
  });
});

Deno.test("symlinks that lead outside the data directory are permission_denied", async () => {
  await withDirs(async (d) => {
    await Deno.symlink(d.outside, path.join(d.real, "escape"));
    await Deno.symlink(path.join(d.outside, "secret"), path.join(d.real, "models", "file-escape"));
    await Deno.symlink("../../outside", path.join(d.real, "models", "relative-escape"));
    await Deno.symlink(path.join(d.outside, "missing"), path.join(d.real, "dangling"));
    await Deno.symlink(d.real, path.join(d.real, "root-link"));
    await refused(d, "escape", "permission_denied", { mustExist: true });
    await refused(d, "escape", "permission_denied", { field: "output_path" });
    await refused(d, "escape/secret", "permission_denied");
    await refused(d, "escape/not/yet/there", "permission_denied", { field: "output_path" });
    await refused(d, "models/file-escape", "permission_denied");
    await refused(d, "models/relative-escape/secret", "permission_denied");
    await refused(d, "dangling", "permission_denied", { field: "output_path" });
    await refused(d, "root-link", "permission_denied", { field: "output_path" });
  });
});

Deno.test("symlinks within the data directory are followed", async () => {
  await withDirs(async (d) => {
    await Deno.symlink(path.join(d.real, "models"), path.join(d.real, "m"));
    assert.equal(
      await resolveDataPath(d.dataDir, "m/tiny", "model_path", { mustExist: true }),
      path.join(d.real, "models", "tiny"),
    );
  });
});

Deno.test("the server's .qlorad folder is permission_denied", async () => {
  await withDirs(async (d) => {
    await refused(d, ".qlorad", "permission_denied", { field: "output_path" });
    await refused(d, ".qlorad/jobs/x.json", "permission_denied");
  });
});
