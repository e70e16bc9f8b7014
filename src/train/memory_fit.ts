/**
 * Memory known before a job starts: the engine's buffers are sized from the data's real
 * lengths (not only `max_seq_len`), estimated without a GPU (src/train/estimate.ts), and the job
 * is refused up front, naming the setting to change, when a buffer would exceed what the adapter
 * can allocate or bind, or the total would exceed a given GPU memory budget. Without this an
 * oversized job failed late, inside its first step, with a GPU out-of-memory error.
 */
import type { MemoryEstimate } from "./estimate.ts";
import { QloradError } from "../util/errors.ts";
import { resolveActivationPrecision } from "../model/graph.ts";

/**
 * The layer-input checkpoint precision a TrainingEngine with the default ("auto") takes on this
 * device, f16 where it has shader-f16: what the estimate checked against the device must assume.
 */
export function deviceActivationPrecision(
  capabilities: { f16: boolean },
  gradientCheckpointing: boolean,
): "f32" | "f16" {
  return resolveActivationPrecision("auto", capabilities.f16, gradientCheckpointing);
}

/** The adapter limits a single buffer must respect (a GPUSupportedLimits subset). */
export interface BufferLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

/** How the user spells the settings that size the buffers, for the error message. */
export interface SizingSettingNames {
  microBatchSize: string;
  maxSeqLen: string;
  gradientCheckpointing?: string;
  budget: string;
}

export interface FitOptions {
  limits: BufferLimits;
  /** Bytes of GPU memory the job may use; 0 or undefined: no budget. */
  budgetBytes?: number;
  names: SizingSettingNames;
  /** The shape the estimate was made for, quoted in errors. */
  shape: { batch: number; seq: number; gradientCheckpointing: boolean };
}

/** 1.50 GiB, 12.0 MiB, 640 KiB: two or three significant digits in the largest fitting unit. */
function gib(bytes: number): string {
  const units: Array<[string, number]> = [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]];
  for (const [name, size] of units) {
    if (bytes >= size) return `${(bytes / size).toFixed(bytes >= 10 * size ? 1 : 2)} ${name}`;
  }
  return `${bytes} bytes`;
}

function resourceExhausted(message: string): QloradError {
  return new QloradError("resource_exhausted", message);
}

/** What to lower, in the user's words, for buffers that grow with the tokens of a micro-batch. */
function shrinkAdvice(o: FitOptions): string {
  const n = o.names;
  const parts = [`lower ${n.maxSeqLen} (${o.shape.seq}) or ${n.microBatchSize} (${o.shape.batch})`];
  if (!o.shape.gradientCheckpointing && n.gradientCheckpointing) {
    parts.push(`turn on ${n.gradientCheckpointing}`);
  }
  return parts.join(", or ");
}

/** Throws a resource_exhausted QloradError naming the setting when the estimate cannot fit. */
export function checkMemoryFits(estimate: MemoryEstimate, o: FitOptions): void {
  // Every buffer is bound whole (tables are estimated as the row chunks the loader makes).
  for (const d of estimate.details) {
    const grows = d.category === "activations" || d.category === "scratch";
    const limit = Math.min(o.limits.maxBufferSize, o.limits.maxStorageBufferBindingSize);
    if (d.each > limit) {
      const which = limit === o.limits.maxBufferSize
        ? "maxBufferSize"
        : "maxStorageBufferBindingSize";
      throw resourceExhausted(
        `the GPU buffer "${d.name}" would need ${d.each} bytes, over this adapter's ${which} ` +
          `of ${limit} bytes` +
          (grows ? `: ${shrinkAdvice(o)}` : " (the model is too large for it)"),
      );
    }
  }
  const budget = o.budgetBytes ?? 0;
  if (budget > 0 && estimate.total > budget) {
    const base = estimate.bytes.base_weights;
    const growing = estimate.bytes.activations + estimate.bytes.scratch;
    const advice = base > budget
      ? `the frozen base alone needs ${gib(base)}`
      : `activations and scratch take ${gib(growing)} of it: ${shrinkAdvice(o)}`;
    throw resourceExhausted(
      `the job needs an estimated ${gib(estimate.total)} of GPU memory, over the ` +
        `${o.names.budget} of ${gib(budget)}; ${advice}`,
    );
  }
}

/**
 * Tokens per sequence the engine's buffers need: the longest example (rows are padded to the
 * longest in their micro-batch, so the longest overall bounds every micro-batch), or the whole
 * `maxSeqLen` when packing fills rows up to it. Never more than `maxSeqLen`.
 */
export function activationSeqLen(
  lengths: Iterable<number>,
  maxSeqLen: number,
  packing = false,
): number {
  if (packing) return maxSeqLen;
  let longest = 1;
  for (const n of lengths) longest = Math.max(longest, n);
  return Math.min(longest, maxSeqLen);
}

/** nf4/fp4 and double quant as a bitsandbytes folder's config.json records them (defaults else). */
export function quantSettingsOf(
  rawConfig: unknown,
): { quantType: "nf4" | "fp4"; doubleQuant: boolean } {
  const q = (rawConfig as { quantization_config?: Record<string, unknown> } | null)
    ?.quantization_config;
  return {
    quantType: q?.bnb_4bit_quant_type === "fp4" ? "fp4" : "nf4",
    doubleQuant: q?.bnb_4bit_use_double_quant !== false,
  };
}
