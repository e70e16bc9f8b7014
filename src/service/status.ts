/**
 * Errors to gRPC statuses. A QloradError keeps its message (it was written for the user); a full
 * disk is RESOURCE_EXHAUSTED; any other error becomes INTERNAL with a generic message, and its
 * stack goes to the server log only.
 * Host paths never leave the server: messages pass through `redactPaths`.
 */
import { Metadata, status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { QloradError } from "../util/errors.ts";
import type { ErrorKind } from "../util/errors.ts";
import { isDiskFullError } from "../io/atomic.ts";

/** Where the service writes its diagnostics. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, err?: unknown): void;
  /** Step-by-step detail; not printed by consoleLogger. */
  debug?(message: string): void;
}

/** Logs to stderr with a level prefix. */
export const consoleLogger: Logger = {
  info: (m) => console.error(`qlorad: ${m}`),
  warn: (m) => console.error(`qlorad: warning: ${m}`),
  error: (m, err) => {
    const stack = err instanceof Error ? `\n${err.stack ?? err.message}` : err ? `\n${err}` : "";
    console.error(`qlorad: error: ${m}${stack}`);
  },
};

/** Logs nothing (tests). */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

const CODE_OF_KIND: Record<ErrorKind, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  permission_denied: status.PERMISSION_DENIED,
  cancelled: status.CANCELLED,
  unavailable: status.UNAVAILABLE,
  internal: status.INTERNAL,
};

/** The gRPC status code for an error kind. */
export function grpcCodeOf(kind: ErrorKind): status {
  return CODE_OF_KIND[kind] ?? status.INTERNAL;
}

/** The canonical name of a gRPC status code ("INVALID_ARGUMENT"), as JobError.code carries it. */
export function codeName(code: status): string {
  return status[code] ?? "UNKNOWN";
}

/** The message sent for errors that are not QloradErrors (details stay in the server log). */
export const INTERNAL_MESSAGE = "internal error (details are in the server log)";

/**
 * Replaces each of `hostDirs` (absolute paths, e.g. the data directory and its realpath) in a
 * message with the path relative to it, so lower layers may name absolute files freely.
 */
export function redactPaths(message: string, hostDirs: readonly string[]): string {
  let out = message;
  // Longest first, so a realpath that extends the given path is replaced whole.
  for (const dir of [...hostDirs].sort((a, b) => b.length - a.length)) {
    if (!dir || dir === "/") continue;
    const base = escapeRegExp(dir.endsWith("/") ? dir.slice(0, -1) : dir);
    // Whole paths only: "/data" must match neither inside "/data2" nor inside "/x/data".
    out = out.replace(new RegExp(`(?<![\\w./-])${base}/`, "g"), "")
      .replace(new RegExp(`(?<![\\w./-])${base}(?![\\w.-])`, "g"), ".");
  }
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** An error as the client will see it: a kind and a message safe to send. */
export interface PublicError {
  kind: ErrorKind;
  message: string;
}

/**
 * The client-facing form of any thrown value. Unknown errors are logged with their stack under
 * `context` and replaced by a generic INTERNAL message.
 */
export function publicError(
  err: unknown,
  opts: { logger: Logger; hostDirs?: readonly string[]; context?: string },
): PublicError {
  if (err instanceof QloradError) {
    return { kind: err.kind, message: redactPaths(err.message, opts.hostDirs ?? []) };
  }
  if (isDiskFullError(err)) {
    // Where the write was is not known here (jobs name their output; see diskFullError).
    opts.logger.error(
      `no space left on the device${opts.context ? ` in ${opts.context}` : ""}`,
      err,
    );
    return {
      kind: "resource_exhausted",
      message: "no space left on the device (free some space, then try again)",
    };
  }
  opts.logger.error(`unexpected error${opts.context ? ` in ${opts.context}` : ""}`, err);
  return { kind: "internal", message: INTERNAL_MESSAGE };
}

/** A grpc-js ServiceError (what `callback(err)` and `call.emit("error", err)` take). */
/** Status details go in an HTTP/2 header: long ones break the client's connection. */
const MAX_DETAILS = 1024;

export function toServiceError(code: status, message: string): ServiceError {
  if (message.length > MAX_DETAILS) message = `${message.slice(0, MAX_DETAILS - 3)}...`;
  return Object.assign(new Error(message), {
    code,
    details: message,
    metadata: new Metadata(),
  });
}

/** The ServiceError for any thrown value (see `publicError`). */
export function serviceErrorOf(
  err: unknown,
  opts: { logger: Logger; hostDirs?: readonly string[]; context?: string },
): ServiceError {
  const e = publicError(err, opts);
  return toServiceError(grpcCodeOf(e.kind), e.message);
}
