/**
 * The GGUF container (llama.cpp's model file, version 3), written as a stream: the header, the
 * key/value metadata and every tensor's info (name, dims, ggml type, offset) go first, then the
 * tensors one at a time in the declared order, so host memory holds one tensor at a time. The
 * file is written under `<path>.partial-<random>` and renamed into place on finish().
 *
 * Layout (facts from llama.cpp's gguf-py constants.py / gguf_writer.py and ggml/src/gguf.cpp):
 * all integers little-endian; a string is a u64 byte length plus UTF-8 bytes (no terminator);
 *   u32 magic "GGUF" (bytes 47 47 55 46), u32 version 3, u64 tensor count, u64 kv count,
 *   kv: string key, u32 value type, value (an array: u32 element type, u64 count, elements),
 *   tensor info: string name, u32 n_dims, u64 ne[n_dims] (ne[0] is the innermost, fastest
 *   varying dimension: the reverse of a row-major shape), u32 ggml type, u64 offset,
 * then zero padding up to `general.alignment` (32 unless the metadata says otherwise), then the
 * data section; each tensor's offset is relative to the data section and a multiple of the
 * alignment, the gaps zero-filled.
 */
import { PartialFile } from "../io/partial_file.ts";
import { invalidArgument } from "../util/errors.ts";

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types (gguf-py GGUFValueType). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** The ggml tensor types this exporter writes (ggml.h enum ggml_type). */
export const GgmlType = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8 } as const;
export type GgmlTypeName = keyof typeof GgmlType;

/** Elements per block and bytes per block of each type (ggml-common.h block structs). */
export const GGML_BLOCK: Record<GgmlTypeName, { elements: number; bytes: number }> = {
  F32: { elements: 1, bytes: 4 },
  F16: { elements: 1, bytes: 2 },
  Q4_0: { elements: 32, bytes: 2 + 16 }, // f16 scale + 32 4-bit codes
  Q8_0: { elements: 32, bytes: 2 + 32 }, // f16 scale + 32 int8 codes
};

/** One metadata value: the scalar types, a string, or an array of one scalar/string type. */
export type GgufValue =
  | {
    type: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64" | "u64" | "i64";
    value: number;
  }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; of: "i32" | "u32" | "f32"; value: ArrayLike<number> }
  | { type: "array"; of: "string"; value: readonly string[] };

/** Insertion-ordered metadata; keys are unique (llama.cpp refuses a file with a duplicate). */
export class GgufMetadata {
  readonly entries = new Map<string, GgufValue>();

  set(key: string, v: GgufValue): this {
    if (this.entries.has(key)) throw invalidArgument(`GGUF metadata: duplicate key ${key}`);
    this.entries.set(key, v);
    return this;
  }
  string(key: string, value: string): this {
    return this.set(key, { type: "string", value });
  }
  u32(key: string, value: number): this {
    return this.set(key, { type: "u32", value });
  }
  i32(key: string, value: number): this {
    return this.set(key, { type: "i32", value });
  }
  f32(key: string, value: number): this {
    return this.set(key, { type: "f32", value });
  }
  bool(key: string, value: boolean): this {
    return this.set(key, { type: "bool", value });
  }
  strings(key: string, value: readonly string[]): this {
    return this.set(key, { type: "array", of: "string", value });
  }
  i32s(key: string, value: ArrayLike<number>): this {
    return this.set(key, { type: "array", of: "i32", value });
  }
  f32s(key: string, value: ArrayLike<number>): this {
    return this.set(key, { type: "array", of: "f32", value });
  }
  get alignment(): number {
    const v = this.entries.get("general.alignment");
    return v && v.type === "u32" ? v.value : GGUF_DEFAULT_ALIGNMENT;
  }
}

export interface GgufTensorEntry {
  name: string;
  /** Row-major shape as in a checkpoint ([rows, cols] for a matrix); written reversed. */
  shape: readonly number[];
  type: GgmlTypeName;
}

/** Bytes of a tensor of this type and row-major shape; the innermost dim must fill whole blocks. */
export function ggmlByteLength(type: GgmlTypeName, shape: readonly number[], name = ""): number {
  const inner = shape[shape.length - 1] ?? 1;
  const { elements, bytes } = GGML_BLOCK[type];
  if (inner % elements !== 0) {
    throw invalidArgument(
      `GGUF tensor ${JSON.stringify(name)}: ${type} needs rows of a multiple of ${elements} ` +
        `values, the row has ${inner}`,
    );
  }
  return (shape.reduce((a, b) => a * b, 1) / elements) * bytes;
}

const SCALAR: Record<string, { code: number; size: number }> = {
  u8: { code: GgufValueType.UINT8, size: 1 },
  i8: { code: GgufValueType.INT8, size: 1 },
  u16: { code: GgufValueType.UINT16, size: 2 },
  i16: { code: GgufValueType.INT16, size: 2 },
  u32: { code: GgufValueType.UINT32, size: 4 },
  i32: { code: GgufValueType.INT32, size: 4 },
  f32: { code: GgufValueType.FLOAT32, size: 4 },
  u64: { code: GgufValueType.UINT64, size: 8 },
  i64: { code: GgufValueType.INT64, size: 8 },
  f64: { code: GgufValueType.FLOAT64, size: 8 },
  bool: { code: GgufValueType.BOOL, size: 1 },
};

/** A growable little-endian byte buffer for the header. */
class ByteSink {
  #buf = new Uint8Array(1024);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #reserve(n: number) {
    if (this.length + n <= this.#buf.byteLength) return;
    let cap = this.#buf.byteLength * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number) {
    this.#reserve(1);
    this.#view.setUint8(this.length, v);
    this.length += 1;
  }
  u32(v: number) {
    this.#reserve(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number) {
    this.#reserve(8);
    this.#view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  scalar(type: string, v: number | boolean) {
    const { size } = SCALAR[type];
    this.#reserve(size);
    const d = this.#view;
    const at = this.length;
    const n = Number(v);
    switch (type) {
      case "u8":
      case "bool":
        d.setUint8(at, n);
        break;
      case "i8":
        d.setInt8(at, n);
        break;
      case "u16":
        d.setUint16(at, n, true);
        break;
      case "i16":
        d.setInt16(at, n, true);
        break;
      case "u32":
        d.setUint32(at, n, true);
        break;
      case "i32":
        d.setInt32(at, n, true);
        break;
      case "f32":
        d.setFloat32(at, n, true);
        break;
      case "u64":
        d.setBigUint64(at, BigInt(n), true);
        break;
      case "i64":
        d.setBigInt64(at, BigInt(n), true);
        break;
      case "f64":
        d.setFloat64(at, n, true);
        break;
    }
    this.length += size;
  }
  string(s: string) {
    const bytes = new TextEncoder().encode(s);
    this.u64(bytes.byteLength);
    this.#reserve(bytes.byteLength);
    this.#buf.set(bytes, this.length);
    this.length += bytes.byteLength;
  }
  padTo(alignment: number) {
    while (this.length % alignment !== 0) this.u8(0);
  }
  bytes(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

function checkScalar(key: string, type: string, v: number) {
  const ranges: Record<string, [number, number]> = {
    u8: [0, 255],
    i8: [-128, 127],
    u16: [0, 65535],
    i16: [-32768, 32767],
    u32: [0, 2 ** 32 - 1],
    i32: [-(2 ** 31), 2 ** 31 - 1],
    u64: [0, Number.MAX_SAFE_INTEGER],
    i64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  };
  const r = ranges[type];
  if (r && (!Number.isInteger(v) || v < r[0] || v > r[1])) {
    throw invalidArgument(`GGUF metadata ${key}: ${v} is not a valid ${type}`);
  }
}

function encodeValue(sink: ByteSink, key: string, v: GgufValue) {
  if (v.type === "string") {
    sink.u32(GgufValueType.STRING);
    sink.string(v.value);
  } else if (v.type === "array") {
    sink.u32(GgufValueType.ARRAY);
    if (v.of === "string") {
      sink.u32(GgufValueType.STRING);
      sink.u64(v.value.length);
      for (const s of v.value as readonly string[]) sink.string(s);
    } else {
      sink.u32(SCALAR[v.of].code);
      sink.u64(v.value.length);
      for (let i = 0; i < v.value.length; i++) {
        const x = (v.value as ArrayLike<number>)[i];
        checkScalar(key, v.of, x);
        sink.scalar(v.of, x);
      }
    }
  } else {
    if (v.type !== "bool") checkScalar(key, v.type, v.value);
    sink.u32(SCALAR[v.type].code);
    sink.scalar(v.type, v.value);
  }
}

/** The bytes before the data section, and each tensor's offset and byte length within it. */
export function encodeGgufHeader(
  metadata: GgufMetadata,
  tensors: readonly GgufTensorEntry[],
): { header: Uint8Array; offsets: number[]; sizes: number[]; dataBytes: number } {
  const alignment = metadata.alignment;
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
    throw invalidArgument(`GGUF metadata general.alignment: ${alignment} is not a multiple of 8`);
  }
  const names = new Set<string>();
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(metadata.entries.size);
  for (const [key, v] of metadata.entries) {
    sink.string(key);
    encodeValue(sink, key, v);
  }
  const offsets: number[] = [];
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw invalidArgument(`GGUF tensor ${t.name}: duplicate name`);
    names.add(t.name);
    if (t.shape.length === 0 || t.shape.length > 4 || t.shape.some((d) => !(d > 0))) {
      throw invalidArgument(`GGUF tensor ${t.name}: bad shape [${t.shape.join(", ")}]`);
    }
    const size = ggmlByteLength(t.type, t.shape, t.name);
    sink.string(t.name);
    sink.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) sink.u64(t.shape[i]);
    sink.u32(GgmlType[t.type]);
    sink.u64(offset);
    offsets.push(offset);
    sizes.push(size);
    offset += Math.ceil(size / alignment) * alignment;
  }
  sink.padTo(alignment);
  return { header: sink.bytes(), offsets, sizes, dataBytes: offset };
}

/**
 * Streams one GGUF file: create() writes everything up to the data section, write() each tensor
 * in declared order (exact byte length), finish() fsyncs and renames into place.
 */
export class GgufWriter {
  readonly tensors: readonly GgufTensorEntry[];
  #out: PartialFile;
  #sizes: number[];
  #alignment: number;
  #next = 0;

  private constructor(
    out: PartialFile,
    tensors: GgufTensorEntry[],
    sizes: number[],
    alignment: number,
  ) {
    this.#out = out;
    this.tensors = tensors;
    this.#sizes = sizes;
    this.#alignment = alignment;
  }

  /** The final file name. */
  get path(): string {
    return this.#out.path;
  }

  /** Where the file is written until finish() renames it into place. */
  get tempPath(): string {
    return this.#out.tempPath;
  }

  static async create(
    path: string,
    metadata: GgufMetadata,
    tensors: readonly GgufTensorEntry[],
  ): Promise<GgufWriter> {
    const copy = tensors.map((t) => ({ name: t.name, shape: [...t.shape], type: t.type }));
    const { header, sizes } = encodeGgufHeader(metadata, copy);
    const out = await PartialFile.create(path);
    await out.write(header);
    return new GgufWriter(out, copy, sizes, metadata.alignment);
  }

  /** The next tensor's encoded bytes (GGML_BLOCK layout of its type). */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    this.#out.checkOpen();
    const t = this.tensors[this.#next];
    if (!t || t.name !== name) {
      throw invalidArgument(
        `${this.path}: tensor ${JSON.stringify(name)} written out of order; expected ${
          t ? JSON.stringify(t.name) : "no more tensors"
        }`,
      );
    }
    const need = this.#sizes[this.#next];
    if (bytes.byteLength !== need) {
      throw invalidArgument(
        `${this.path}: tensor ${JSON.stringify(name)}: got ${bytes.byteLength} bytes, ` +
          `${t.type} [${t.shape.join(", ")}] needs ${need}`,
      );
    }
    await this.#out.write(bytes);
    const pad = (this.#alignment - (need % this.#alignment)) % this.#alignment;
    if (pad) await this.#out.write(new Uint8Array(pad));
    this.#next++;
  }

  async finish(): Promise<void> {
    this.#out.checkOpen();
    if (this.#next !== this.tensors.length) {
      throw invalidArgument(
        `${this.path}: ${this.tensors.length - this.#next} tensor(s) not written, next ` +
          JSON.stringify(this.tensors[this.#next].name),
      );
    }
    await this.#out.commit();
  }

  /** Drop the temporary file; nothing appears under the final name. */
  abort(): Promise<void> {
    return this.#out.abort();
  }
}
