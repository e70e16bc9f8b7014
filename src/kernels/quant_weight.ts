/**
 * A bitsandbytes 4-bit weight on the GPU, as the 4-bit kernels read it
 * (shaders/dequant_4bit.wgsl): packed codes, absmax (f32, or 8-bit codes with double quant) and
 * nested absmax in buffers; the code tables become shader constants and the nested offset a
 * uniform value. Never a full-precision copy of W.
 */
import type { GpuBuffer, GpuContext } from "../gpu/context.ts";
import { invalidArgument } from "../util/errors.ts";
import { f32Bits } from "../io/dtype.ts";

/** The in-memory quantized weight (structurally src/quant/quant_state.ts's type). */
export interface QuantWeightHost {
  quantType: "nf4" | "fp4";
  blocksize: number;
  /** [out, in]. */
  shape: readonly number[];
  /** ceil(n/2) bytes; element 2j in the high nibble of byte j, flattened row-major. */
  packed: Uint8Array;
  /** Without double quant: one per block of `blocksize` flattened elements. */
  absmax?: Float32Array;
  dq?: {
    codes: Uint8Array;
    nestedAbsmax: Float32Array;
    offset: number;
    nestedMap: Float32Array;
  };
  quantMap: Float32Array;
}

export interface GpuQuantWeight {
  readonly label: string;
  readonly quantType: "nf4" | "fp4";
  readonly blocksize: number;
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly doubleQuant: boolean;
  /** u32 words, little-endian bytes of the packed codes. */
  readonly packed: GpuBuffer;
  /** f32 absmax, or 8-bit codes four to a word (byte b%4 of word b/4) with double quant. */
  readonly absmax: GpuBuffer;
  /** f32 per 256 blocks; a 16-byte dummy without double quant. */
  readonly nestedAbsmax: GpuBuffer;
  /** The three buffers in binding order 0..2 of dequant_4bit.wgsl. */
  readonly bindings: readonly GpuBuffer[];
  /** The 16-entry code table, the nested map (zeros without double quant) and offset. */
  readonly quantMap: Float32Array;
  readonly nestedMap: Float32Array;
  readonly offset: number;
  destroy(): void;
}

/** Checks the host weight's sizes; errors name the weight and the field. */
export function validateQuantWeight(q: QuantWeightHost, label: string): void {
  const bad = (field: string, why: string) => invalidArgument(`${label}: ${field}: ${why}`);
  if (q.quantType !== "nf4" && q.quantType !== "fp4") {
    throw bad("quantType", `"${q.quantType}" is not nf4 or fp4`);
  }
  const bs = q.blocksize;
  if (!Number.isInteger(bs) || bs < 32 || bs > 4096 || (bs & (bs - 1)) !== 0) {
    throw bad("blocksize", `${bs} is not a power of two in 32..4096`);
  }
  if (q.shape.length !== 2 || !q.shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw bad("shape", `[${q.shape.join(", ")}] is not [out, in] with positive sizes`);
  }
  const n = q.shape[0] * q.shape[1];
  if (n >= 2 ** 32) throw bad("shape", `${n} elements exceed 2^32`);
  const nblocks = Math.ceil(n / bs);
  if (q.packed.length !== Math.ceil(n / 2)) {
    throw bad("packed", `${q.packed.length} bytes, expected ${Math.ceil(n / 2)}`);
  }
  if (q.quantMap.length !== 16 || !q.quantMap.every(Number.isFinite)) {
    throw bad("quantMap", `expected 16 finite values, got ${q.quantMap.length} entries`);
  }
  if (q.dq) {
    if (q.dq.codes.length !== nblocks) {
      throw bad("dq.codes", `${q.dq.codes.length} codes, expected ${nblocks}`);
    }
    const nested = Math.ceil(nblocks / 256);
    if (q.dq.nestedAbsmax.length !== nested) {
      throw bad("dq.nestedAbsmax", `${q.dq.nestedAbsmax.length} values, expected ${nested}`);
    }
    if (q.dq.nestedMap.length !== 256 || !q.dq.nestedMap.every(Number.isFinite)) {
      throw bad("dq.nestedMap", `expected 256 finite values, got ${q.dq.nestedMap.length}`);
    }
    if (!Number.isFinite(q.dq.offset)) throw bad("dq.offset", `${q.dq.offset} is not finite`);
  } else if (!q.absmax || q.absmax.length !== nblocks) {
    throw bad("absmax", `${q.absmax?.length ?? "no"} values, expected ${nblocks}`);
  }
}

/** Uploads the weight's quantized form (category base_weights). */
export function uploadQuantWeight(
  ctx: GpuContext,
  q: QuantWeightHost,
  label: string,
): GpuQuantWeight {
  validateQuantWeight(q, label);
  const [outFeatures, inFeatures] = q.shape;
  const made: GpuBuffer[] = [];
  const up = (name: string, data: ArrayBufferView) => {
    const b = ctx.upload(`${label}.${name}`, "base_weights", data);
    made.push(b);
    return b;
  };
  try {
    // Uint8Array bytes go up as they are: on the little-endian GPU, byte j is bits 8*(j%4).
    const packed = up("packed", q.packed);
    const absmax = q.dq ? up("absmax_codes", q.dq.codes) : up("absmax", q.absmax!);
    const nestedAbsmax = q.dq
      ? up("nested_absmax", q.dq.nestedAbsmax)
      : up("nested_absmax_unused", new Float32Array(4));
    return {
      label,
      quantType: q.quantType,
      blocksize: q.blocksize,
      outFeatures,
      inFeatures,
      doubleQuant: Boolean(q.dq),
      packed,
      absmax,
      nestedAbsmax,
      bindings: [packed, absmax, nestedAbsmax],
      quantMap: Float32Array.from(q.quantMap),
      nestedMap: q.dq ? Float32Array.from(q.dq.nestedMap) : new Float32Array(256),
      offset: q.dq ? Math.fround(q.dq.offset) : 0,
      destroy() {
        for (const b of made) b.destroy();
      },
    };
  } catch (e) {
    for (const b of made) b.destroy();
    throw e;
  }
}

/** A float32 value as a WGSL float literal that parses back to exactly that value. */
export function wgslF32(v: number): string {
  if (!Number.isFinite(v)) throw invalidArgument(`shader constant ${v} is not finite`);
  if (Object.is(v, -0)) return "-0.0";
  const s = String(Math.fround(v));
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** Template parameters of shaders/dequant_4bit.wgsl for this weight. */
export function dequantShaderParams(w: GpuQuantWeight): Record<string, string | number> {
  return {
    DOUBLE_QUANT: String(w.doubleQuant),
    QUANT_MAP: Array.from(w.quantMap, wgslF32).join(", "),
    NESTED_MAP: Array.from(w.nestedMap, wgslF32).join(", "),
  };
}

/** The f32 bits of the weight's double-quant offset, for a kernel's uniform. */
export function offsetBits(w: GpuQuantWeight): number {
  return f32Bits(w.offset);
}
