/**
 * A quantized Linear weight in memory, and its bitsandbytes 4-bit checkpoint form (REFERENCE §5).
 *
 * bitsandbytes writes, for a Linear4bit with prefix P (bnb nn/modules.py::_save_to_state_dict and
 * functional.py::QuantState.as_dict(packed=True)), in this order:
 *   P+"weight"                 U8  [ceil(n/2), 1]
 *   P+"weight.absmax"          F32 [nblocks], or U8 [nblocks] with double quant
 *   P+"weight.quant_map"       F32 [16]
 *   P+"weight.nested_absmax"   F32 [ceil(nblocks/256)]   (double quant only)
 *   P+"weight.nested_quant_map" F32 [256]                (double quant only)
 *   P+"weight.quant_state.bitsandbytes__<nf4|fp4>"  U8 [len]: utils.py::pack_dict_to_tensor, i.e.
 *     the UTF-8 bytes of Python `json.dumps(d)` (separators ", " and ": ") of the non-tensor items
 *     in as_dict order: quant_type, blocksize, dtype, shape, [nested_blocksize, nested_dtype,
 *     nested_offset]. dtype is `str(torch.dtype).strip("torch.")`, shape a list, nested_offset
 *     `offset.item()`, a Python float printed with repr().
 */

import { invalidArgument } from "../util/errors.ts";
import { FP4_CODE, NF4_CODE, quantMapFor, type QuantType, signedDynamicMap } from "./codes.ts";
import { dequantize4bit, quantize4bit, validateBlocksize, validateQuantType } from "./blockwise.ts";
import { dequantizeAbsmax, doubleQuantize, NESTED_BLOCKSIZE } from "./double_quant.ts";

/** Original dtypes bitsandbytes can quantize from (and the JSON `dtype` values we accept). */
export const WEIGHT_DTYPES: readonly string[] = ["float32", "float16", "bfloat16"];

export interface DoubleQuantState {
  codes: Uint8Array;
  nestedAbsmax: Float32Array;
  offset: number;
  nestedBlocksize: 256;
  nestedMap: Float32Array;
}

export interface QuantizedWeight {
  quantType: QuantType;
  blocksize: number;
  /** [out, in], row-major. */
  shape: [number, number];
  /** Original dtype, e.g. "bfloat16". */
  dtype: string;
  packed: Uint8Array;
  /** float32 absmax per block; undefined with double quant (see dq). */
  absmax: Float32Array | undefined;
  dq?: DoubleQuantState;
  /** The 16-entry 4-bit table stored as weight.quant_map. */
  quantMap: Float32Array;
}

export interface QuantizeOptions {
  quantType: QuantType;
  blocksize: number;
  doubleQuant: boolean;
  dtype: string;
}

/** One tensor of a safetensors group: raw little-endian bytes. */
export interface BnbTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

export type TensorLookup = (
  name: string,
) => { dtype: string; shape: readonly number[]; data: Uint8Array } | undefined;

function validateShape(shape: readonly number[], what: string): [number, number] {
  if (
    !Array.isArray(shape) || shape.length !== 2 ||
    !shape.every((d) => Number.isSafeInteger(d) && d > 0)
  ) {
    throw invalidArgument(
      `${what}: expected [out, in] of positive integers, got ${JSON.stringify(shape)}`,
    );
  }
  return [shape[0], shape[1]];
}

function validateDtype(dtype: string, what: string): void {
  if (!WEIGHT_DTYPES.includes(dtype)) {
    throw invalidArgument(`${what}: "${dtype}" is not one of ${WEIGHT_DTYPES.join(", ")}`);
  }
}

/** Quantize a row-major [out, in] weight as bitsandbytes Params4bit does. */
export function quantizeWeight(
  w: Float32Array,
  shape: readonly [number, number],
  opts: QuantizeOptions,
): QuantizedWeight {
  const [out, inp] = validateShape(shape, "shape");
  validateQuantType(opts.quantType, "quantType");
  validateBlocksize(opts.blocksize);
  validateDtype(opts.dtype, "dtype");
  if (w.length !== out * inp) {
    throw invalidArgument(`weight: ${w.length} values do not match shape [${out}, ${inp}]`);
  }
  const { packed, absmax } = quantize4bit(w, opts.quantType, opts.blocksize);
  const base = {
    quantType: opts.quantType,
    blocksize: opts.blocksize,
    shape: [out, inp] as [number, number],
    dtype: opts.dtype,
    packed,
    quantMap: quantMapFor(opts.quantType),
  };
  if (!opts.doubleQuant) return { ...base, absmax };
  const { codes, nestedAbsmax, offset } = doubleQuantize(absmax);
  return {
    ...base,
    absmax: undefined,
    dq: {
      codes,
      nestedAbsmax,
      offset,
      nestedBlocksize: NESTED_BLOCKSIZE,
      nestedMap: signedDynamicMap(),
    },
  };
}

/** The float32 absmax per block, reconstructing it from the nested statistics if needed. */
export function weightAbsmax(q: QuantizedWeight): Float32Array {
  if (q.absmax !== undefined) return q.absmax;
  if (q.dq === undefined) throw invalidArgument("quantized weight has neither absmax nor dq");
  return dequantizeAbsmax(q.dq);
}

/** Dequantize to float32, row-major [out, in]. */
export function dequantizeWeight(q: QuantizedWeight): Float32Array {
  const n = q.shape[0] * q.shape[1];
  return dequantize4bit(q.packed, weightAbsmax(q), n, q.quantType, q.blocksize);
}

/**
 * Storage bits per parameter, counted as the QLoRA paper does: the 4-bit codes plus the absmax
 * (32 bits per block, or 8 bits per block plus 32 bits per 256 blocks with double quant). The
 * 16- and 256-entry maps, the offset and the JSON are per tensor, not per parameter, and left out.
 * NF4 + DQ, blocksize 64: 4 + 8/64 + 32/(64*256) = 4.127; without DQ 4 + 32/64 = 4.5.
 */
export function bitsPerParameter(q: QuantizedWeight): number {
  const n = q.shape[0] * q.shape[1];
  let bits = q.packed.length * 8;
  if (q.dq !== undefined) bits += q.dq.codes.length * 8 + q.dq.nestedAbsmax.length * 32;
  else if (q.absmax !== undefined) bits += q.absmax.length * 32;
  return bits / n;
}

/**
 * A float as Python's repr() (and so json.dumps) prints it: shortest round-trip digits, fixed
 * notation for decimal exponents -4..15 (always with a fractional part), otherwise d.ddde±XX.
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  // toExponential() without an argument gives the shortest round-trip digits, like repr.
  const [mantissa, expText] = x.toExponential().split("e");
  const exp = Number(expText);
  const sign = mantissa.startsWith("-") ? "-" : "";
  const digits = mantissa.replace("-", "").replace(".", "");
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
    const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
    const frac = digits.slice(exp + 1);
    return `${sign}${intPart}.${frac === "" ? "0" : frac}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const e = `${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  return `${sign}${m}e${e}`;
}

/** The quant_state JSON text exactly as bitsandbytes' pack_dict_to_tensor writes it. */
export function quantStateJson(q: QuantizedWeight): string {
  const parts = [
    `"quant_type": ${JSON.stringify(q.quantType)}`,
    `"blocksize": ${q.blocksize}`,
    `"dtype": ${JSON.stringify(q.dtype)}`,
    `"shape": [${q.shape[0]}, ${q.shape[1]}]`,
  ];
  if (q.dq !== undefined) {
    parts.push(
      `"nested_blocksize": ${q.dq.nestedBlocksize}`,
      `"nested_dtype": "float32"`,
      `"nested_offset": ${pythonFloatRepr(q.dq.offset)}`,
    );
  }
  return `{${parts.join(", ")}}`;
}

function f32Bytes(a: Float32Array): Uint8Array {
  const out = new Uint8Array(a.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) view.setFloat32(i * 4, a[i], true);
  return out;
}

function bytesF32(data: Uint8Array): Float32Array {
  const out = new Float32Array(data.length / 4);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** The tensors bitsandbytes writes for this weight under `prefix` (e.g. "model.layers.0.mlp.up_proj."). */
export function toBnbTensors(prefix: string, q: QuantizedWeight): BnbTensor[] {
  const p = `${prefix}weight`;
  const tensors: BnbTensor[] = [
    { name: p, dtype: "U8", shape: [q.packed.length, 1], data: q.packed.slice() },
  ];
  if (q.dq !== undefined) {
    tensors.push({
      name: `${p}.absmax`,
      dtype: "U8",
      shape: [q.dq.codes.length],
      data: q.dq.codes.slice(),
    });
  } else if (q.absmax !== undefined) {
    tensors.push({
      name: `${p}.absmax`,
      dtype: "F32",
      shape: [q.absmax.length],
      data: f32Bytes(q.absmax),
    });
  } else {
    throw invalidArgument(`${p}: quantized weight has neither absmax nor dq`);
  }
  tensors.push({ name: `${p}.quant_map`, dtype: "F32", shape: [16], data: f32Bytes(q.quantMap) });
  if (q.dq !== undefined) {
    tensors.push(
      {
        name: `${p}.nested_absmax`,
        dtype: "F32",
        shape: [q.dq.nestedAbsmax.length],
        data: f32Bytes(q.dq.nestedAbsmax),
      },
      { name: `${p}.nested_quant_map`, dtype: "F32", shape: [256], data: f32Bytes(q.dq.nestedMap) },
    );
  }
  const json = new TextEncoder().encode(quantStateJson(q));
  tensors.push({
    name: `${p}.quant_state.bitsandbytes__${q.quantType}`,
    dtype: "U8",
    shape: [json.length],
    data: json,
  });
  return tensors;
}

const QUANT_STATE_KEYS = [
  "quant_type",
  "blocksize",
  "dtype",
  "shape",
  "nested_blocksize",
  "nested_dtype",
  "nested_offset",
];

/**
 * Parse and validate one bitsandbytes 4-bit group (written by toBnbTensors or by Python
 * bitsandbytes). Errors name `sourceLabel`, the tensor and the field.
 */
export function fromBnbTensors(
  prefix: string,
  get: TensorLookup,
  sourceLabel: string,
): QuantizedWeight {
  const p = `${prefix}weight`;
  const fail = (name: string, field: string, msg: string) =>
    invalidArgument(`${sourceLabel}: tensor "${name}": ${field}: ${msg}`);

  const need = (name: string, dtype: string, shape: number[]) => {
    const t = get(name);
    if (t === undefined) {
      throw invalidArgument(`${sourceLabel}: tensor "${name}" is missing`);
    }
    if (t.dtype !== dtype) throw fail(name, "dtype", `expected ${dtype}, got ${t.dtype}`);
    const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
    if (!same) {
      throw fail(
        name,
        "shape",
        `expected ${JSON.stringify(shape)}, got ${JSON.stringify(t.shape)}`,
      );
    }
    const bytes = shape.reduce((a, b) => a * b, 1) * (dtype === "F32" ? 4 : 1);
    if (t.data.length !== bytes) {
      throw fail(name, "data", `${t.data.length} bytes, expected ${bytes}`);
    }
    return t.data;
  };

  // The packed JSON: exactly one of the two quant_state keys.
  const qsNames = (["nf4", "fp4"] as const).map((t) => `${p}.quant_state.bitsandbytes__${t}`);
  const present = qsNames.filter((n) => get(n) !== undefined);
  if (present.length !== 1) {
    throw invalidArgument(
      present.length === 0
        ? `${sourceLabel}: tensor "${qsNames[0]}" (or "${qsNames[1]}") is missing`
        : `${sourceLabel}: both "${qsNames[0]}" and "${qsNames[1]}" are present`,
    );
  }
  const qsName = present[0];
  const qsTensor = get(qsName)!;
  if (qsTensor.dtype !== "U8") throw fail(qsName, "dtype", `expected U8, got ${qsTensor.dtype}`);
  if (qsTensor.shape.length !== 1 || qsTensor.shape[0] !== qsTensor.data.length) {
    throw fail(
      qsName,
      "shape",
      `expected [${qsTensor.data.length}], got ${JSON.stringify(qsTensor.shape)}`,
    );
  }
  let qs: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(qsTensor.data),
    );
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error("not a JSON object");
    }
    qs = parsed as Record<string, unknown>;
  } catch (e) {
    throw fail(qsName, "json", `bad JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  for (const key of Object.keys(qs)) {
    if (!QUANT_STATE_KEYS.includes(key)) throw fail(qsName, key, "unknown quant_state field");
  }

  const quantType = qs.quant_type;
  if (quantType !== "nf4" && quantType !== "fp4") {
    throw fail(qsName, "quant_type", `${JSON.stringify(quantType)} is not "nf4" or "fp4"`);
  }
  if (!qsName.endsWith(`__${quantType}`)) {
    throw fail(qsName, "quant_type", `"${quantType}" does not match the tensor name`);
  }
  const blocksize = qs.blocksize;
  if (typeof blocksize !== "number") throw fail(qsName, "blocksize", "missing or not a number");
  try {
    validateBlocksize(blocksize, "blocksize");
  } catch (e) {
    throw fail(qsName, "blocksize", (e as Error).message);
  }
  const dtype = qs.dtype;
  if (typeof dtype !== "string" || !WEIGHT_DTYPES.includes(dtype)) {
    throw fail(
      qsName,
      "dtype",
      `${JSON.stringify(dtype)} is not one of ${WEIGHT_DTYPES.join(", ")}`,
    );
  }
  const rawShape = qs.shape;
  if (
    !Array.isArray(rawShape) || rawShape.length !== 2 ||
    !rawShape.every((d) => Number.isSafeInteger(d) && d > 0)
  ) {
    throw fail(
      qsName,
      "shape",
      `expected [out, in] of positive integers, got ${JSON.stringify(rawShape)}`,
    );
  }
  const shape: [number, number] = [rawShape[0], rawShape[1]];
  const n = shape[0] * shape[1];
  const nblocks = Math.ceil(n / blocksize);

  const nestedTensorPresent = get(`${p}.nested_absmax`) !== undefined;
  const nestedJsonPresent = "nested_offset" in qs || "nested_blocksize" in qs ||
    "nested_dtype" in qs;
  const doubleQuant = nestedTensorPresent || nestedJsonPresent;

  const packed = need(p, "U8", [(n + 1) >> 1, 1]).slice();
  const quantMap = bytesF32(need(`${p}.quant_map`, "F32", [16]));
  const expectedMap = quantType === "nf4" ? NF4_CODE : FP4_CODE;
  for (let i = 0; i < 16; i++) {
    if (quantMap[i] !== expectedMap[i]) {
      throw fail(
        `${p}.quant_map`,
        `[${i}]`,
        `${quantMap[i]} differs from the ${quantType} table (${expectedMap[i]})`,
      );
    }
  }

  if (!doubleQuant) {
    const absmax = bytesF32(need(`${p}.absmax`, "F32", [nblocks]));
    const bad = absmax.findIndex((v) => !(v >= 0 && v <= 3.4028234663852886e38));
    if (bad >= 0) {
      throw fail(`${p}.absmax`, `[${bad}]`, `${absmax[bad]} is not a finite value >= 0`);
    }
    return { quantType, blocksize, shape, dtype, packed, absmax, quantMap };
  }

  if (qs.nested_blocksize !== NESTED_BLOCKSIZE) {
    throw fail(qsName, "nested_blocksize", `${JSON.stringify(qs.nested_blocksize)}, expected 256`);
  }
  if (qs.nested_dtype !== "float32") {
    throw fail(qsName, "nested_dtype", `${JSON.stringify(qs.nested_dtype)}, expected "float32"`);
  }
  const offset = qs.nested_offset;
  if (typeof offset !== "number" || !Number.isFinite(offset)) {
    throw fail(qsName, "nested_offset", `${JSON.stringify(offset)} is not a finite number`);
  }
  const codes = need(`${p}.absmax`, "U8", [nblocks]).slice();
  const nestedName = `${p}.nested_absmax`;
  const nestedAbsmax = bytesF32(need(nestedName, "F32", [Math.ceil(nblocks / NESTED_BLOCKSIZE)]));
  const bad = nestedAbsmax.findIndex((v) => !(v >= 0 && v <= 3.4028234663852886e38));
  if (bad >= 0) {
    throw fail(nestedName, `[${bad}]`, `${nestedAbsmax[bad]} is not a finite value >= 0`);
  }
  const mapName = `${p}.nested_quant_map`;
  const nestedMap = bytesF32(need(mapName, "F32", [256]));
  const badMap = nestedMap.findIndex((v) => !Number.isFinite(v));
  if (badMap >= 0) throw fail(mapName, `[${badMap}]`, `${nestedMap[badMap]} is not finite`);
  return {
    quantType,
    blocksize,
    shape,
    dtype,
    packed,
    absmax: undefined,
    dq: {
      codes,
      nestedAbsmax,
      offset: Math.fround(offset),
      nestedBlocksize: NESTED_BLOCKSIZE,
      nestedMap,
    },
    quantMap,
  };
}

/**
 * config.json `quantization_config` as transformers' BitsAndBytesConfig.to_dict() writes it, keys
 * sorted (save_pretrained uses sort_keys=True). `llm_int8_threshold` is left out on purpose: Python
 * writes 6.0, JSON.stringify would write 6, and BitsAndBytesConfig.post_init rejects an int there
 * ("llm_int8_threshold must be a float"); when absent, from_dict uses the default 6.0.
 */
export function quantizationConfig(opts: {
  quantType: QuantType;
  doubleQuant: boolean;
  computeDtype: string;
}): Record<string, unknown> {
  validateQuantType(opts.quantType, "quantType");
  validateDtype(opts.computeDtype, "computeDtype");
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: opts.computeDtype,
    bnb_4bit_quant_storage: "uint8",
    bnb_4bit_quant_type: opts.quantType,
    bnb_4bit_use_double_quant: opts.doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: "bitsandbytes",
  };
}
