/**
 * The argument checks every kernel wrapper runs before it records a dispatch, in one place with
 * one error: UnexpectedShapeError names the kernel, the argument, what was expected and what
 * came, so a wrong shape fails on the host with a message pointing at the caller's tensor
 * instead of a GPU reading past a binding or a silent short write.
 */
import type { Binding } from "../gpu/context.ts";
import { QloradError } from "../util/errors.ts";
import { bindingParts } from "./bindings.ts";

/** A kernel argument of the wrong size or value: `<kernel>: <argument>: expected X, got Y`. */
export class UnexpectedShapeError extends QloradError {
  constructor(
    readonly kernel: string,
    readonly argument: string,
    readonly expected: string,
    readonly got: string,
  ) {
    super("invalid_argument", `${kernel}: ${argument}: expected ${expected}, got ${got}`);
    this.name = "UnexpectedShapeError";
  }
}

/** A count (rows, columns, elements) that must be an integer >= `min` (default 1). */
export function checkCount(kernel: string, argument: string, value: number, min = 1): void {
  if (!Number.isInteger(value) || value < min) {
    const expected = min === 1 ? "a positive integer" : `an integer >= ${min}`;
    throw new UnexpectedShapeError(kernel, argument, expected, String(value));
  }
}

/**
 * A binding that must hold at least `elems` elements of `bytesPerElement` bytes (4: f32, u32,
 * i32; 2: f16). `detail` says where the count comes from (e.g. the shapes it was computed from).
 */
export function checkBindingSize(
  kernel: string,
  argument: string,
  b: Binding,
  elems: number,
  bytesPerElement = 4,
  detail?: string,
): void {
  const { buffer, size } = bindingParts(b);
  const need = elems * bytesPerElement;
  if (size < need) {
    throw new UnexpectedShapeError(
      kernel,
      argument,
      `at least ${elems} elements of ${bytesPerElement} bytes (${need} bytes)${
        detail ? ` for ${detail}` : ""
      }`,
      `${size} bytes (buffer ${buffer.label})`,
    );
  }
}

/** A binding that must fit the device's largest binding (`limit` bytes, named by `limitName`). */
export function checkBindingLimit(
  kernel: string,
  argument: string,
  b: Binding,
  limit: number,
  limitName: string,
  remedy?: string,
): void {
  const { buffer, size } = bindingParts(b);
  if (size > limit) {
    throw new UnexpectedShapeError(
      kernel,
      argument,
      `at most ${limitName} = ${limit} bytes${remedy ? ` (${remedy})` : ""}`,
      `${size} bytes (buffer ${buffer.label})`,
    );
  }
}
