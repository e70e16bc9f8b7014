/**
 * A small independent GGUF reader and ggml dequantizer for the export tests, written from the
 * GGUF spec (llama.cpp docs/gguf.md, ggml-common.h block structs), not from src/export: the tests
 * read back what the exporter wrote and decode the tensors the way llama.cpp does.
 */
import { f16ToF32 } from "../../src/io/dtype.ts";

export interface ReadTensor {
  name: string;
  /** ne order (innermost first), as stored. */
  ne: number[];
  type: number;
  /** Absolute file offset of the data. */
  start: number;
}

export interface ReadGguf {
  version: number;
  kv: Map<string, unknown>;
  kvTypes: Map<string, number>;
  tensors: Map<string, ReadTensor>;
  tensorOrder: string[];
  dataStart: number;
  alignment: number;
  bytes: Uint8Array;
}

export function readGguf(bytes: Uint8Array): ReadGguf {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const u32 = () => {
    const x = v.getUint32(p, true);
    p += 4;
    return x;
  };
  const u64 = () => {
    const x = Number(v.getBigUint64(p, true));
    p += 8;
    return x;
  };
  const str = () => {
    const n = u64();
    const s = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(p, p + n));
    p += n;
    return s;
  };
  const scalar = (t: number): unknown => {
    const sizes: Record<number, number> = {
      0: 1,
      1: 1,
      2: 2,
      3: 2,
      4: 4,
      5: 4,
      6: 4,
      7: 1,
      10: 8,
      11: 8,
      12: 8,
    };
    let x: unknown;
    switch (t) {
      case 0:
        x = v.getUint8(p);
        break;
      case 1:
        x = v.getInt8(p);
        break;
      case 2:
        x = v.getUint16(p, true);
        break;
      case 3:
        x = v.getInt16(p, true);
        break;
      case 4:
        x = v.getUint32(p, true);
        break;
      case 5:
        x = v.getInt32(p, true);
        break;
      case 6:
        x = v.getFloat32(p, true);
        break;
      case 7:
        x = v.getUint8(p) !== 0;
        break;
      case 10:
        x = Number(v.getBigUint64(p, true));
        break;
      case 11:
        x = Number(v.getBigInt64(p, true));
        break;
      case 12:
        x = v.getFloat64(p, true);
        break;
      case 8:
        return str();
      default:
        throw new Error(`gguf: bad value type ${t} at ${p}`);
    }
    p += sizes[t];
    return x;
  };
  if (u32() !== 0x46554747) throw new Error("gguf: bad magic");
  const version = u32();
  const nTensors = u64();
  const nKv = u64();
  const kv = new Map<string, unknown>();
  const kvTypes = new Map<string, number>();
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const t = u32();
    kvTypes.set(key, t);
    if (t === 9) {
      const et = u32();
      const n = u64();
      const arr: unknown[] = [];
      for (let j = 0; j < n; j++) arr.push(scalar(et));
      kv.set(key, arr);
    } else kv.set(key, scalar(t));
  }
  const alignment = (kv.get("general.alignment") as number | undefined) ?? 32;
  const tensors = new Map<string, ReadTensor>();
  const order: string[] = [];
  const rel: number[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const nd = u32();
    const ne: number[] = [];
    for (let j = 0; j < nd; j++) ne.push(u64());
    const type = u32();
    const off = u64();
    tensors.set(name, { name, ne, type, start: off });
    order.push(name);
    rel.push(off);
  }
  const dataStart = Math.ceil(p / alignment) * alignment;
  for (const t of tensors.values()) t.start += dataStart;
  return { version, kv, kvTypes, tensors, tensorOrder: order, dataStart, alignment, bytes };
}

/** Dequantized values of a tensor (row-major, ne[0] innermost) of type F32, F16, Q4_0 or Q8_0. */
export function tensorValues(g: ReadGguf, name: string): Float64Array {
  const t = g.tensors.get(name);
  if (!t) throw new Error(`gguf: no tensor ${name}`);
  const n = t.ne.reduce((a, b) => a * b, 1);
  const v = new DataView(g.bytes.buffer, g.bytes.byteOffset + t.start);
  const out = new Float64Array(n);
  switch (t.type) {
    case 0:
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
      break;
    case 1:
      for (let i = 0; i < n; i++) out[i] = f16ToF32(v.getUint16(2 * i, true));
      break;
    case 8: // Q8_0
      for (let b = 0; b < n / 32; b++) {
        const d = f16ToF32(v.getUint16(b * 34, true));
        for (let j = 0; j < 32; j++) out[b * 32 + j] = d * v.getInt8(b * 34 + 2 + j);
      }
      break;
    case 2: // Q4_0
      for (let b = 0; b < n / 32; b++) {
        const d = f16ToF32(v.getUint16(b * 18, true));
        for (let j = 0; j < 16; j++) {
          const byte = v.getUint8(b * 18 + 2 + j);
          out[b * 32 + j] = d * ((byte & 15) - 8);
          out[b * 32 + j + 16] = d * ((byte >> 4) - 8);
        }
      }
      break;
    default:
      throw new Error(`gguf: tensor ${name} has type ${t.type}`);
  }
  return out;
}
