/**
 * Bearer-token authentication: with a token configured, every call must carry the metadata
 * `authorization: Bearer <token>`, or it ends UNAUTHENTICATED before its handler runs (and before
 * its request is used). The token is compared in constant time: both sides are hashed with
 * SHA-256 and the digests compared with timingSafeEqual, so neither the token's length nor its
 * contents show in the timing.
 *
 * grpc.health.v1.Health stays open without a token: the kubelet's gRPC probes and Docker's
 * HEALTHCHECK cannot send metadata, and health reveals only SERVING / NOT_SERVING. Everything
 * else, reflection included, needs the token.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { QloradError } from "../util/errors.ts";

/** Services that answer without a token. */
export const OPEN_SERVICES: readonly string[] = ["grpc.health.v1.Health"];

/** The largest token accepted (a token file is read whole). */
export const MAX_TOKEN_BYTES = 4096;

export const MISSING_TOKEN_MESSAGE =
  'missing bearer token: send the metadata "authorization: Bearer <token>"';
export const WRONG_TOKEN_MESSAGE = "invalid bearer token";

/**
 * The token from `token` (e.g. QLORAD_AUTH_TOKEN) or the file `tokenFile` (e.g.
 * QLORAD_AUTH_TOKEN_FILE or --auth-token-file; surrounding whitespace, such as a final newline,
 * is dropped); undefined when neither is given. Both at once is an error, as is an empty token or
 * one with characters a metadata value cannot carry. Labels name the sources in errors.
 */
export async function loadAuthToken(src: {
  token?: string;
  tokenFile?: string;
  tokenLabel?: string;
  fileLabel?: string;
}): Promise<string | undefined> {
  const tokenLabel = src.tokenLabel ?? "auth token";
  const fileLabel = src.fileLabel ?? "auth token file";
  if (src.token !== undefined && src.tokenFile !== undefined) {
    throw new QloradError(
      "invalid_argument",
      `give ${tokenLabel} or ${fileLabel}, not both`,
    );
  }
  if (src.token !== undefined) return checkToken(src.token, tokenLabel);
  if (src.tokenFile === undefined) return undefined;
  const file = src.tokenFile;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (err) {
    const why = err instanceof Deno.errors.NotFound
      ? "not found"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : `cannot be read (${err instanceof Error ? err.message : err})`;
    throw new QloradError("invalid_argument", `${fileLabel} ${file}: ${why}`);
  }
  if (bytes.length > MAX_TOKEN_BYTES) {
    throw new QloradError(
      "invalid_argument",
      `${fileLabel} ${file}: larger than ${MAX_TOKEN_BYTES} bytes; is it the right file?`,
    );
  }
  return checkToken(new TextDecoder().decode(bytes).trim(), `${fileLabel} ${file}`);
}

/** A usable token: non-empty, at most MAX_TOKEN_BYTES, visible ASCII only (no spaces). */
function checkToken(token: string, label: string): string {
  if (token.length === 0) throw new QloradError("invalid_argument", `${label}: empty token`);
  if (token.length > MAX_TOKEN_BYTES) {
    throw new QloradError("invalid_argument", `${label}: longer than ${MAX_TOKEN_BYTES} bytes`);
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new QloradError(
      "invalid_argument",
      `${label}: the token may only hold visible ASCII characters (no spaces or control codes)`,
    );
  }
  return token;
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/** Checks bearer tokens against one expected token, in constant time. */
export class TokenCheck {
  readonly #expected: Buffer;

  constructor(token: string) {
    this.#expected = digest(token);
  }

  /** undefined when the metadata carries the token; otherwise the reason, for the client. */
  refusal(metadata: grpc.Metadata): string | undefined {
    const values = metadata.get("authorization");
    const header = values.length === 1 && typeof values[0] === "string" ? values[0] : undefined;
    const m = header?.match(/^\s*bearer\s+(\S+)\s*$/i);
    if (!m) return MISSING_TOKEN_MESSAGE;
    return timingSafeEqual(digest(m[1]), this.#expected) ? undefined : WRONG_TOKEN_MESSAGE;
  }
}

/**
 * A server interceptor that ends every call without the token UNAUTHENTICATED, except calls to
 * OPEN_SERVICES. The check runs on the call's metadata, before any request message is read.
 */
export function tokenInterceptor(token: string): grpc.ServerInterceptor {
  const check = new TokenCheck(token);
  return (method, call) => {
    const service = method.path.replace(/^\//, "").split("/")[0];
    if (OPEN_SERVICES.includes(service)) return new grpc.ServerInterceptingCall(call);
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const refusal = check.refusal(metadata);
        if (refusal === undefined) next(metadata);
        else call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: refusal });
      })
      .build();
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}
