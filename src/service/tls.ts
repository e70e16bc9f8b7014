/**
 * TLS and mutual TLS for the gRPC server: the certificate chain, its key and (for mTLS) the CA
 * that client certificates must chain to, read from files and checked at startup, so that a
 * wrong file is an error naming it rather than a handshake that fails later.
 *
 * What Deno 2.9.6's node:tls does differently from Node (measured with grpc-js 1.14.7; see
 * tests/service/tls_test.ts):
 * - The certificates given as `ca` are sent to clients as part of the server's own chain, and an
 *   unset `ca` means Deno's whole root store. grpc-js's `ServerCredentials.createSsl(null, ...)`
 *   leaves `ca` unset, so the handshake's Certificate message grows to hundreds of KiB and clients
 *   give up ("excessive message size" in OpenSSL, "HandshakePayloadTooLarge" in rustls). Plain TLS
 *   here passes an empty buffer instead; mTLS passes the client CA, which clients then also
 *   receive (public data; harmless).
 * - Client certificates must be X.509 v3 (carry at least one extension, e.g. subjectAltName or
 *   extendedKeyUsage=clientAuth). A v1 certificate (what `openssl x509 -req` makes without
 *   `-extfile`) is refused even when the client CA signed it: the server closes the connection
 *   without a TLS alert right after the client's side of the handshake completed, so the client
 *   sees a finished handshake and then UNAVAILABLE on every call. Node (OpenSSL) accepts v1.
 *   Expired certificates, other CAs' certificates and certificates whose extendedKeyUsage lacks
 *   clientAuth are refused, as in Node.
 */
import { Buffer } from "node:buffer";
import { createPrivateKey, X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { QloradError } from "../util/errors.ts";

/** Where the PEM files are, and how to name each in errors (a flag or an env variable). */
export interface TlsFiles {
  cert: string;
  key: string;
  /** Turns on mutual TLS: clients must present a certificate issued by this CA. */
  clientCa?: string;
  labels?: { cert?: string; key?: string; clientCa?: string };
}

/** PEM contents, checked. */
export interface TlsMaterial {
  /** The server's certificate, then any intermediates. */
  certChain: Buffer;
  privateKey: Buffer;
  /** Present: client certificates are required and must chain to one of these. */
  clientCa?: Buffer;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Reads and checks the files; errors name the file and what is wrong with it. */
export async function loadTls(files: TlsFiles): Promise<TlsMaterial> {
  const certLabel = files.labels?.cert ?? "TLS certificate";
  const keyLabel = files.labels?.key ?? "TLS key";
  const caLabel = files.labels?.clientCa ?? "TLS client CA";

  const certChain = await readPem(files.cert, certLabel);
  const certs = certificates(certChain, files.cert, certLabel);
  const privateKey = await readPem(files.key, keyLabel);
  let key;
  try {
    key = createPrivateKey(privateKey);
  } catch {
    throw bad(files.key, keyLabel, "not a PEM private key (an encrypted key is not supported)");
  }
  if (!certs[0].checkPrivateKey(key)) {
    throw bad(files.key, keyLabel, `does not match the first certificate in ${files.cert}`);
  }

  let clientCa: Buffer | undefined;
  if (files.clientCa !== undefined) {
    clientCa = await readPem(files.clientCa, caLabel);
    certificates(clientCa, files.clientCa, caLabel);
  }
  return { certChain, privateKey, clientCa };
}

/** grpc-js credentials for the material: TLS, or mTLS when a client CA is given. */
export function serverCredentials(tls: TlsMaterial): grpc.ServerCredentials {
  const pairs = [{ cert_chain: tls.certChain, private_key: tls.privateKey }];
  // Never null: see the note at the top (Deno would send its whole root store).
  return grpc.ServerCredentials.createSsl(tls.clientCa ?? Buffer.alloc(0), pairs, !!tls.clientCa);
}

async function readPem(file: string, label: string): Promise<Buffer> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw bad(file, label, "not found");
    if (err instanceof Deno.errors.PermissionDenied) throw bad(file, label, "permission denied");
    if (err instanceof Deno.errors.IsADirectory) throw bad(file, label, "is a folder, not a file");
    throw bad(file, label, `cannot be read (${err instanceof Error ? err.message : err})`);
  }
  return Buffer.from(bytes);
}

/** The PEM certificates in a file: at least one, each parsable and currently valid. */
function certificates(pem: Buffer, file: string, label: string): X509Certificate[] {
  const blocks = pem.toString("latin1").match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw bad(file, label, "no PEM certificate in it");
  const now = Date.now();
  return blocks.map((block, i) => {
    const which = blocks.length > 1 ? `certificate ${i + 1}` : "the certificate";
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch {
      throw bad(file, label, `${which} is not a valid X.509 certificate`);
    }
    if (Date.parse(cert.validTo) < now) {
      throw bad(file, label, `${which} (${cert.subject}) expired on ${cert.validTo}`);
    }
    if (Date.parse(cert.validFrom) > now) {
      throw bad(file, label, `${which} (${cert.subject}) is not valid before ${cert.validFrom}`);
    }
    return cert;
  });
}

function bad(file: string, label: string, what: string): QloradError {
  return new QloradError("invalid_argument", `${label} ${file}: ${what}`);
}
