/** Shared test helpers for tests/quant: bf16-valued random weights, float32 steps, the Python reference. */
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import { bf16ToF32, f32ToBf16 } from "../../src/io/dtype.ts";
import { Rng } from "../../src/util/random.ts";

/** Normal(0, scale) weights rounded to bfloat16 values, a few exact zeros mixed in. */
export function bf16Weights(rng: Rng, n: number, scale: number): Float32Array {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    w[i] = rng.next() < 0.01 ? 0 : bf16ToF32(f32ToBf16(rng.normal() * scale));
  }
  return w;
}

const bits = new Uint32Array(1);
const f32 = new Float32Array(bits.buffer);

/** The next float32 above (dir 1) or below (dir -1) a finite nonzero float32 value. */
export function nextF32(x: number, dir: 1 | -1): number {
  f32[0] = x;
  bits[0] += (x > 0) === (dir > 0) ? 1 : -1;
  return f32[0];
}

export function b64(bytes: Uint8Array | Float32Array | Float64Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

export function fromB64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, "base64"));
}

const REFERENCE = fileURLToPath(new URL("../reference/bnb_reference.py", import.meta.url));

/** Run tests/reference/bnb_reference.py on one JSON job; returns its JSON answer. */
export async function runReference(job: Record<string, unknown>): Promise<Record<string, unknown>> {
  const child = new Deno.Command("python3", {
    args: [REFERENCE],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(job)));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    throw new Error(`bnb_reference.py exited ${code}: ${new TextDecoder().decode(stderr)}`);
  }
  return JSON.parse(new TextDecoder().decode(stdout));
}
