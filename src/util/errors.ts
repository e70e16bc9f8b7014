/**
 * Errors that carry a status kind. The service maps `kind` to a gRPC status code;
 * nothing below src/service knows gRPC.
 */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "permission_denied"
  | "cancelled"
  | "unavailable"
  | "internal";

export class QloradError extends Error {
  readonly kind: ErrorKind;

  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = "QloradError";
  }
}

export function invalidArgument(message: string): QloradError {
  return new QloradError("invalid_argument", message);
}

export function notFound(message: string): QloradError {
  return new QloradError("not_found", message);
}

export function failedPrecondition(message: string): QloradError {
  return new QloradError("failed_precondition", message);
}

/** Thrown when an AbortSignal fires; jobs end CANCELLED rather than FAILED. */
export class CancelledError extends QloradError {
  constructor(message = "cancelled") {
    super("cancelled", message);
    this.name = "CancelledError";
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new CancelledError();
}
