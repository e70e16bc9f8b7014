/**
 * The kernel wrappers' argument checks (src/kernels/shape_checks.ts): one error type whose
 * message and fields name the kernel, the argument, what was expected and what came, so a
 * caller finds the tensor at fault from the message alone. Hand-written bindings (no GPU).
 */
import assert from "node:assert/strict";
import type { GpuBuffer } from "../../src/gpu/context.ts";
import {
  checkBindingLimit,
  checkBindingSize,
  checkCount,
  UnexpectedShapeError,
} from "../../src/kernels/shape_checks.ts";

/** A binding of `size` bytes in a buffer labelled `label` (only the label is read). */
function slice(label: string, size: number) {
  return { buffer: { label } as GpuBuffer, offset: 256, size };
}

function shapeError(
  fn: () => void,
  want: { kernel: string; argument: string; expected: string; got: string; message: string },
): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof UnexpectedShapeError, `not an UnexpectedShapeError: ${e}`);
    assert.equal(e.kind, "invalid_argument");
    assert.deepEqual(
      { kernel: e.kernel, argument: e.argument, expected: e.expected, got: e.got },
      { kernel: want.kernel, argument: want.argument, expected: want.expected, got: want.got },
    );
    assert.equal(e.message, want.message);
    return true;
  });
}

Deno.test("a short binding names the kernel, argument, bytes needed and the buffer", () => {
  shapeError(() => checkBindingSize("rmsnorm", "rstd", slice("layer3.rstd", 20), 7), {
    kernel: "rmsnorm",
    argument: "rstd",
    expected: "at least 7 elements of 4 bytes (28 bytes)",
    got: "20 bytes (buffer layer3.rstd)",
    message: "rmsnorm: rstd: expected at least 7 elements of 4 bytes (28 bytes), " +
      "got 20 bytes (buffer layer3.rstd)",
  });
  // f16 operands count 2 bytes each; the detail says where the count came from.
  shapeError(() => checkBindingSize("matmul_f16", "b", slice("w", 29), 15, 2, "k=3, n=5"), {
    kernel: "matmul_f16",
    argument: "b",
    expected: "at least 15 elements of 2 bytes (30 bytes) for k=3, n=5",
    got: "29 bytes (buffer w)",
    message: "matmul_f16: b: expected at least 15 elements of 2 bytes (30 bytes) for k=3, n=5, " +
      "got 29 bytes (buffer w)",
  });
  // Exactly enough, or more, passes.
  checkBindingSize("rmsnorm", "rstd", slice("r", 28), 7);
  checkBindingSize("rmsnorm", "rstd", slice("r", 4096), 7);
});

Deno.test("a count that is not a positive integer names the argument and the value", () => {
  for (const bad of [0, -3, 2.5, NaN]) {
    shapeError(() => checkCount("rope", "heads", bad), {
      kernel: "rope",
      argument: "heads",
      expected: "a positive integer",
      got: String(bad),
      message: `rope: heads: expected a positive integer, got ${bad}`,
    });
  }
  // min 0: empty is fine, negative is not.
  checkCount("adamw", "n", 0, 0);
  shapeError(() => checkCount("adamw", "n", -1, 0), {
    kernel: "adamw",
    argument: "n",
    expected: "an integer >= 0",
    got: "-1",
    message: "adamw: n: expected an integer >= 0, got -1",
  });
});

Deno.test("a binding over the device limit names the limit and the remedy", () => {
  shapeError(
    () =>
      checkBindingLimit(
        "encodeMatmul4bit: q_proj",
        "x",
        slice("acts", 200),
        128,
        "maxB",
        "split m",
      ),
    {
      kernel: "encodeMatmul4bit: q_proj",
      argument: "x",
      expected: "at most maxB = 128 bytes (split m)",
      got: "200 bytes (buffer acts)",
      message: "encodeMatmul4bit: q_proj: x: expected at most maxB = 128 bytes (split m), " +
        "got 200 bytes (buffer acts)",
    },
  );
  checkBindingLimit("k", "x", slice("acts", 128), 128, "maxB");
});
