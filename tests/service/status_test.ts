import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { QloradError } from "../../src/util/errors.ts";
import type { ErrorKind } from "../../src/util/errors.ts";
import {
  codeName,
  grpcCodeOf,
  INTERNAL_MESSAGE,
  publicError,
  redactPaths,
  serviceErrorOf,
} from "../../src/service/status.ts";
import type { Logger } from "../../src/service/status.ts";

Deno.test("every error kind has its gRPC status code", () => {
  const expected: Record<ErrorKind, [number, string]> = {
    invalid_argument: [3, "INVALID_ARGUMENT"],
    not_found: [5, "NOT_FOUND"],
    failed_precondition: [9, "FAILED_PRECONDITION"],
    resource_exhausted: [8, "RESOURCE_EXHAUSTED"],
    permission_denied: [7, "PERMISSION_DENIED"],
    cancelled: [1, "CANCELLED"],
    unavailable: [14, "UNAVAILABLE"],
    internal: [13, "INTERNAL"],
  };
  for (const [kind, [code, name]] of Object.entries(expected)) {
    assert.equal(grpcCodeOf(kind as ErrorKind), code, kind);
    assert.equal(codeName(code), name);
  }
  assert.equal(codeName(status.UNIMPLEMENTED), "UNIMPLEMENTED");
});

Deno.test("redactPaths replaces whole host folders only", () => {
  const dirs = ["/srv/data", "/mnt/real/data"];
  assert.equal(
    redactPaths("/srv/data/m/model.safetensors: truncated", dirs),
    "m/model.safetensors: truncated",
  );
  assert.equal(redactPaths("cannot open /mnt/real/data", dirs), "cannot open .");
  assert.equal(redactPaths("'/srv/data/x' and \"/srv/data\"", dirs), "'x' and \".\"");
  // Not a prefix of another folder, not inside another path.
  assert.equal(redactPaths("/srv/data2/x /y/srv/data/z", dirs), "/srv/data2/x /y/srv/data/z");
  assert.equal(redactPaths("/srv/data/", ["/srv/data/"]), "");
});

Deno.test("unknown errors become INTERNAL with a generic message; the stack is logged", () => {
  const logged: unknown[] = [];
  const logger: Logger = { info() {}, warn() {}, error: (_m, err) => logged.push(err) };
  const bug = new TypeError("cannot read x of undefined at /srv/data/secret");
  assert.deepEqual(publicError(bug, { logger }), { kind: "internal", message: INTERNAL_MESSAGE });
  assert.deepEqual(logged, [bug]);

  const e = serviceErrorOf(new QloradError("not_found", 'model_path "m": not found'), {
    logger,
  });
  assert.equal(e.code, status.NOT_FOUND);
  assert.equal(e.details, 'model_path "m": not found');
  const i = serviceErrorOf(new Error("boom /srv/data"), { logger });
  assert.equal(i.code, status.INTERNAL);
  assert.equal(i.details, INTERNAL_MESSAGE);
});
