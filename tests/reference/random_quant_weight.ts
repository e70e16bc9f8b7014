/**
 * A random bitsandbytes 4-bit weight for kernel tests: random codes (every code is a valid
 * weight), absmax or double-quant codes with nested absmax and offset, and the real NF4/FP4 and
 * nested tables, from the seeded PRNG.
 */
import type { QuantWeightHost } from "../../src/kernels/quant_weight.ts";
import type { Rng } from "../../src/util/random.ts";
import { FP4_TABLE, NF4_TABLE, signedDynamicMap } from "./dequant_f64.ts";

/** Random codes, absmax (or absmax codes + nested absmax + offset), the real tables. */
export function randomQuantWeight(
  rng: Rng,
  quantType: "nf4" | "fp4",
  doubleQuant: boolean,
  blocksize: number,
  nOut: number,
  nIn: number,
): QuantWeightHost {
  const n = nOut * nIn;
  const nblocks = Math.ceil(n / blocksize);
  const packed = new Uint8Array(Math.ceil(n / 2));
  for (let j = 0; j < packed.length; j++) packed[j] = rng.int(256);
  if (n % 2) packed[packed.length - 1] &= 0xf0; // the padding nibble is zero
  const quantMap = quantType === "nf4" ? NF4_TABLE : FP4_TABLE;
  const shape = [nOut, nIn];
  if (!doubleQuant) {
    const absmax = new Float32Array(nblocks);
    for (let b = 0; b < nblocks; b++) absmax[b] = rng.uniform(0.01, 2);
    return { quantType, blocksize, shape, packed, absmax, quantMap };
  }
  const codes = new Uint8Array(nblocks);
  for (let b = 0; b < nblocks; b++) codes[b] = rng.int(256);
  const nestedAbsmax = new Float32Array(Math.ceil(nblocks / 256));
  for (let i = 0; i < nestedAbsmax.length; i++) nestedAbsmax[i] = rng.uniform(0.05, 0.5);
  const offset = Math.fround(rng.uniform(0.02, 0.3));
  return {
    quantType,
    blocksize,
    shape,
    packed,
    dq: { codes, nestedAbsmax, offset, nestedMap: signedDynamicMap() },
    quantMap,
  };
}
