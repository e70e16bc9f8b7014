/**
 * The QLORAD_* settings parser (src/util/settings.ts): defaults when a variable is unset or
 * empty, typed values when set, and for each bad value an error that names the variable. The
 * environment is a Map, so nothing here depends on the process environment.
 */
import assert from "node:assert/strict";
import {
  gpuBackendSetting,
  gpuSettings,
  ladderCachePath,
  ladderSettings,
  parseVariantOverrides,
} from "../../src/util/settings.ts";
import { QloradError } from "../../src/util/errors.ts";

const env = (vars: Record<string, string>) => new Map(Object.entries(vars));

Deno.test("settings: defaults when nothing is set (or a variable is empty)", () => {
  for (const e of [env({}), env({ QLORAD_GPU_BACKEND: "", QLORAD_GPU_TIMEOUT_S: "" })]) {
    assert.deepEqual(gpuSettings(e), {
      backend: "auto",
      dawnPoll: "paced",
      maxBindingBytes: undefined,
      stallWarnS: 10,
      timeoutS: 600,
    });
  }
  const l = ladderSettings(env({ HOME: "/home/q" }));
  assert.deepEqual([...l.overrides], []);
  assert.equal(l.mode, "time");
  assert.equal(l.cachePath, "/home/q/.cache/qlorad/ladder.json");
  assert.equal(l.log, false);
  assert.equal(ladderSettings(env({})).cachePath, null); // no HOME, no XDG: memory only
});

Deno.test("settings: values as set", () => {
  const g = gpuSettings(env({
    QLORAD_GPU_BACKEND: "Vulkan",
    QLORAD_DAWN_POLL: "unpaced",
    QLORAD_MAX_BINDING_BYTES: "5000",
    QLORAD_GPU_STALL_WARN_S: "2.5",
    QLORAD_GPU_TIMEOUT_S: "90",
  }));
  assert.deepEqual(g, {
    backend: "vulkan",
    dawnPoll: "unpaced",
    maxBindingBytes: 5000,
    stallWarnS: 2.5,
    timeoutS: 90,
  });
  const l = ladderSettings(env({
    QLORAD_KERNEL_VARIANTS: " matmul = tiled,attention=row ,",
    QLORAD_LADDER: "prior",
    QLORAD_LADDER_CACHE: "/tmp/x/ladder.json",
    QLORAD_LADDER_LOG: "1",
    XDG_CACHE_HOME: "/xdg",
  }));
  assert.deepEqual([...l.overrides], [["matmul", "tiled"], ["attention", "row"]]);
  assert.equal(l.mode, "prior");
  assert.equal(l.cachePath, "/tmp/x/ladder.json");
  assert.equal(l.log, true);
  assert.equal(ladderCachePath(env({ QLORAD_LADDER_CACHE: "off", HOME: "/h" })), null);
  assert.equal(
    ladderCachePath(env({ XDG_CACHE_HOME: "/xdg", HOME: "/h" })),
    "/xdg/qlorad/ladder.json",
  );
});

Deno.test("settings: a bad value is an invalid_argument error naming the variable", () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ QLORAD_GPU_BACKEND: "cuda" }, /^QLORAD_GPU_BACKEND=cuda is not one of auto, dawn, vulkan/],
    [{ QLORAD_DAWN_POLL: "fast" }, /^QLORAD_DAWN_POLL=fast is not one of paced, unpaced/],
    [{ QLORAD_MAX_BINDING_BYTES: "lots" }, /^QLORAD_MAX_BINDING_BYTES must be an integer >= 16/],
    [{ QLORAD_MAX_BINDING_BYTES: "8" }, /^QLORAD_MAX_BINDING_BYTES must be an integer >= 16/],
    [{ QLORAD_MAX_BINDING_BYTES: "100.5" }, /^QLORAD_MAX_BINDING_BYTES must be an integer/],
    [{ QLORAD_GPU_STALL_WARN_S: "-1" }, /^QLORAD_GPU_STALL_WARN_S must be a positive number/],
    [{ QLORAD_GPU_TIMEOUT_S: "ten" }, /^QLORAD_GPU_TIMEOUT_S must be a positive number/],
    [{ QLORAD_GPU_TIMEOUT_S: "0" }, /^QLORAD_GPU_TIMEOUT_S must be a positive number/],
  ];
  for (const [vars, message] of cases) {
    assert.throws(() => gpuSettings(env(vars)), (e) => {
      assert.ok(e instanceof QloradError, String(e));
      assert.equal(e.kind, "invalid_argument");
      assert.match(e.message, message);
      return true;
    });
  }
  assert.throws(() => gpuBackendSetting(env({ QLORAD_GPU_BACKEND: "cuda" })), /QLORAD_GPU_BACKEND/);
  assert.throws(
    () => ladderSettings(env({ QLORAD_LADDER: "fastest" })),
    /QLORAD_LADDER: "fastest" is not one of time, prior/,
  );
  assert.throws(
    () => ladderSettings(env({ QLORAD_KERNEL_VARIANTS: "matmul" })),
    /QLORAD_KERNEL_VARIANTS: "matmul" is not kernel=variant/,
  );
  assert.throws(
    () => parseVariantOverrides("matmul=tiled;attention=row"),
    /QLORAD_KERNEL_VARIANTS/,
  );
});
