/**
 * safetensors reading and streaming writing (REFERENCE.md §8).
 * The reader loads only the header; tensor bytes are read on demand with positional reads,
 * so checkpoints of tens of GB cost nothing until used.
 */
import { invalidArgument, notFound, QloradError } from "../util/errors.ts";
import { jsonSyntaxReason } from "../util/json.ts";
import { PartialFile } from "./partial_file.ts";
import { byteLengthOf, type Dtype, isDtype, toFloat32, toFloat64 } from "./dtype.ts";
import { firstDuplicateKey } from "./json_keys.ts";

/** Largest header the reference implementation accepts. */
export const MAX_HEADER_BYTES = 100_000_000;

/** What a tensor is, without its bytes. */
export interface TensorEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
}

/** A tensor's place in a file. */
export interface TensorInfo extends TensorEntry {
  /** Absolute byte offset in the file. */
  byteOffset: number;
  byteLength: number;
}

/** A tensor with its little-endian bytes, for writing. */
export interface TensorData extends TensorEntry {
  data: Uint8Array;
}

export interface ParsedHeader {
  /** Tensors in header (JSON key) order. */
  tensors: TensorInfo[];
  metadata: Record<string, string>;
}

function fmtList(v: unknown): string {
  return Array.isArray(v) ? `[${v.map((x) => JSON.stringify(x)).join(", ")}]` : JSON.stringify(v);
}

/**
 * Validate and parse a header. `headerBytes` is the JSON (N bytes), `dataLength` the size of
 * the data buffer that follows it; `label` names the file in errors.
 */
export function parseHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  label: string,
): ParsedHeader {
  const bad = (msg: string) => invalidArgument(`${label}: ${msg}`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw bad("header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`header is not valid JSON: ${jsonSyntaxReason(e)}`); // never quotes the file
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw bad("header is not a JSON object");
  }
  const twice = firstDuplicateKey(text);
  if (twice !== undefined) {
    throw bad(`header lists ${JSON.stringify(twice)} twice (the reader would keep only the last)`);
  }
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const dataStart = 8 + headerBytes.byteLength;
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
        throw bad(`"__metadata__" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== "string") {
          throw bad(`"__metadata__" key ${JSON.stringify(k)}: value must be a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw bad(`${where}: entry is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (!isDtype(dtype)) throw bad(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
    if (
      !Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)
    ) {
      throw bad(`${where}: shape must be an array of non-negative integers, got ${fmtList(shape)}`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((d) => Number.isSafeInteger(d) && d >= 0) || offsets[0] > offsets[1]
    ) {
      throw bad(
        `${where}: data_offsets must be [begin, end] with 0 <= begin <= end, got ${
          fmtList(offsets)
        }`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const need = byteLengthOf(dtype, shape);
    if (!Number.isSafeInteger(need) || end - begin !== need) {
      throw bad(
        `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype} ${
          fmtList(shape)
        } needs ${need}`,
      );
    }
    tensors.push({ name, dtype, shape, byteOffset: dataStart + begin, byteLength: need });
  }
  // Offsets must tile the data buffer: sorted by position, each starts where the last ended.
  const byPos = [...tensors].sort((a, b) =>
    a.byteOffset - b.byteOffset || a.byteLength - b.byteLength
  );
  let pos = 0;
  let prev: TensorInfo | undefined;
  for (const t of byPos) {
    const begin = t.byteOffset - dataStart;
    const range = `data_offsets [${begin}, ${begin + t.byteLength}]`;
    if (begin > pos) {
      throw bad(
        prev
          ? `tensor ${JSON.stringify(t.name)}: ${range} leave a gap of ${
            begin - pos
          } bytes after tensor ${JSON.stringify(prev.name)}, which ends at ${pos}`
          : `tensor ${JSON.stringify(t.name)}: ${range}: the first tensor must start at 0`,
      );
    }
    if (begin < pos && prev) {
      const pb = prev.byteOffset - dataStart;
      throw bad(
        `tensor ${JSON.stringify(t.name)}: ${range} overlap tensor ${
          JSON.stringify(prev.name)
        } at [${pb}, ${pb + prev.byteLength}]`,
      );
    }
    pos = begin + t.byteLength;
    prev = t;
  }
  if (pos !== dataLength) {
    throw bad(
      `tensors end at data offset ${pos}${
        prev ? ` (tensor ${JSON.stringify(prev.name)})` : ""
      } but the file holds ${dataLength} data bytes after the header`,
    );
  }
  return { tensors, metadata };
}

async function readFully(file: Deno.FsFile, dest: Uint8Array, label: string): Promise<void> {
  let off = 0;
  while (off < dest.byteLength) {
    const n = await file.read(dest.subarray(off));
    if (n === null) {
      throw invalidArgument(`${label}: unexpected end of file (file shrank while open?)`);
    }
    off += n;
  }
}

/** A safetensors file opened for reading; only the header is in memory. */
export class SafetensorsFile {
  readonly path: string;
  /** The `__metadata__` map (empty when absent). */
  readonly metadata: Record<string, string>;
  /** Total file size in bytes. */
  readonly fileLength: number;
  #file: Deno.FsFile | undefined;
  #tensors: Map<string, TensorInfo>;
  // Reads share one handle and its position; chaining them keeps each seek+read pair together.
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    path: string,
    file: Deno.FsFile,
    fileLength: number,
    header: ParsedHeader,
  ) {
    this.path = path;
    this.#file = file;
    this.fileLength = fileLength;
    this.metadata = header.metadata;
    this.#tensors = new Map(header.tensors.map((t) => [t.name, t]));
  }

  /** Open and validate `path`; reads the 8-byte length and the header only. */
  static async open(path: string): Promise<SafetensorsFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw notFound(`${path}: no such file`);
      throw e;
    }
    try {
      const stat = await file.stat();
      if (!stat.isFile) throw invalidArgument(`${path}: not a regular file`);
      const len = stat.size;
      if (len < 8) {
        throw invalidArgument(
          `${path}: file is ${len} bytes, too short for the 8-byte header length`,
        );
      }
      const lenBytes = new Uint8Array(8);
      await readFully(file, lenBytes, path);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw invalidArgument(
          `${path}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`,
        );
      }
      const headerLen = Number(n);
      if (8 + headerLen > len) {
        throw invalidArgument(
          `${path}: header length ${headerLen} runs past the end of the file (${len} bytes)`,
        );
      }
      const headerBytes = new Uint8Array(headerLen);
      await readFully(file, headerBytes, path);
      const header = parseHeader(headerBytes, len - 8 - headerLen, path);
      return new SafetensorsFile(path, file, len, header);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.#tensors.keys()];
  }

  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** Where a tensor lives; notFound when absent. */
  info(name: string): TensorInfo {
    const t = this.#tensors.get(name);
    if (!t) throw notFound(`${this.path}: no tensor ${JSON.stringify(name)}`);
    return { ...t, shape: [...t.shape] };
  }

  /** Read a tensor's raw little-endian bytes into `dest` (exactly its byteLength). */
  readInto(name: string, dest: Uint8Array): Promise<void> {
    const t = this.info(name);
    if (dest.byteLength !== t.byteLength) {
      throw invalidArgument(
        `${this.path}: tensor ${
          JSON.stringify(name)
        } is ${t.byteLength} bytes, destination holds ${dest.byteLength}`,
      );
    }
    const run = this.#queue.then(async () => {
      const file = this.#file;
      if (!file) throw new QloradError("failed_precondition", `${this.path}: file is closed`);
      await file.seek(t.byteOffset, Deno.SeekMode.Start);
      await readFully(file, dest, this.path);
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** A tensor's raw little-endian bytes. */
  async readBytes(name: string): Promise<Uint8Array> {
    const dest = new Uint8Array(this.info(name).byteLength);
    await this.readInto(name, dest);
    return dest;
  }

  /** A floating-point tensor (F32, F16, BF16, F64, FP8) decoded to float32. */
  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    if (!isFloatDtype(t.dtype)) {
      throw invalidArgument(
        `${this.path}: tensor ${JSON.stringify(name)} is ${t.dtype}, not a float dtype`,
      );
    }
    return toFloat32(await this.readBytes(name), t.dtype);
  }

  /** Any tensor decoded to float64 (64-bit integers beyond 2^53 round). */
  async readFloat64(name: string): Promise<Float64Array> {
    const t = this.info(name);
    return toFloat64(await this.readBytes(name), t.dtype);
  }

  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }
}

export function isFloatDtype(dtype: Dtype): boolean {
  return dtype === "F32" || dtype === "F16" || dtype === "BF16" || dtype === "F64" ||
    dtype === "F8_E4M3" || dtype === "F8_E5M2";
}

function checkEntries(label: string, entries: readonly TensorEntry[]): void {
  const seen = new Set<string>();
  for (const e of entries) {
    const where = `${label}: tensor ${JSON.stringify(e.name)}`;
    if (typeof e.name !== "string" || e.name === "" || e.name === "__metadata__") {
      throw invalidArgument(`${label}: bad tensor name ${JSON.stringify(e.name)}`);
    }
    if (seen.has(e.name)) throw invalidArgument(`${where}: listed twice`);
    seen.add(e.name);
    if (!isDtype(e.dtype)) {
      throw invalidArgument(`${where}: unknown dtype ${JSON.stringify(e.dtype)}`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw invalidArgument(
        `${where}: shape must be non-negative integers, got ${fmtList(e.shape)}`,
      );
    }
  }
}

/**
 * The bytes before the data buffer: u64 length + JSON header padded with spaces to a multiple
 * of 8. JSON keys: `__metadata__` first (when given), then tensors in the given order, which is
 * also their order in the data buffer.
 */
export function encodeHeader(
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
): { prefix: Uint8Array; dataLength: number } {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw invalidArgument(`safetensors metadata ${JSON.stringify(k)}: value must be a string`);
      }
    }
    header.__metadata__ = metadata;
  }
  let pos = 0;
  for (const e of entries) {
    const len = byteLengthOf(e.dtype, e.shape);
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [pos, pos + len] };
    pos += len;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(json, 8);
  return { prefix, dataLength: pos };
}

/**
 * Streams tensors to `<finalPath>.partial-<random>` one at a time, in entry order, and renames the
 * file into place on `finish()`. Memory use is one tensor at a time, whatever the file size.
 */
export class SafetensorsWriter {
  readonly entries: readonly TensorEntry[];
  #out: PartialFile;
  #next = 0;

  private constructor(out: PartialFile, entries: TensorEntry[]) {
    this.#out = out;
    this.entries = entries;
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
    finalPath: string,
    entries: readonly TensorEntry[],
    metadata?: Record<string, string>,
  ): Promise<SafetensorsWriter> {
    checkEntries(finalPath, entries);
    const copy = entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: [...e.shape] }));
    const { prefix } = encodeHeader(copy, metadata);
    const out = await PartialFile.create(finalPath);
    await out.write(prefix);
    return new SafetensorsWriter(out, copy);
  }

  /** Write the next tensor's bytes; must follow entry order and match dtype x shape exactly. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    this.#out.checkOpen();
    const e = this.entries[this.#next];
    if (!e) {
      throw invalidArgument(
        `${this.path}: tensor ${JSON.stringify(name)}: all tensors already written`,
      );
    }
    if (e.name !== name) {
      throw invalidArgument(
        `${this.path}: tensor ${JSON.stringify(name)} written out of order; expected ${
          JSON.stringify(e.name)
        } next`,
      );
    }
    const need = byteLengthOf(e.dtype, e.shape);
    if (bytes.byteLength !== need) {
      throw invalidArgument(
        `${this.path}: tensor ${
          JSON.stringify(name)
        }: got ${bytes.byteLength} bytes but ${e.dtype} ${fmtList(e.shape)} needs ${need}`,
      );
    }
    await this.#out.write(bytes);
    this.#next++;
  }

  /** Check every tensor was written, fsync, and rename into place. */
  async finish(): Promise<void> {
    this.#out.checkOpen();
    if (this.#next !== this.entries.length) {
      const missing = this.entries.slice(this.#next).map((e) => JSON.stringify(e.name));
      throw invalidArgument(
        `${this.path}: ${missing.length} tensor(s) not written: ${missing.slice(0, 5).join(", ")}${
          missing.length > 5 ? ", ..." : ""
        }`,
      );
    }
    await this.#out.commit();
  }

  /** Drop the temporary file; nothing appears under the final name. */
  abort(): Promise<void> {
    return this.#out.abort();
  }
}

/** Write a whole safetensors file atomically. */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorData[],
  metadata?: Record<string, string>,
): Promise<void> {
  const w = await SafetensorsWriter.create(path, tensors, metadata);
  try {
    for (const t of tensors) await w.write(t.name, t.data);
    await w.finish();
  } catch (e) {
    await w.abort();
    throw e;
  }
}
