/**
 * Kernel uniforms by name. A wrapper declares its shader's uniform struct once, field by field
 * in WGSL order (`uniformLayout("Params", { n: "u32", alpha: "f32", _pad0: "u32" })`), and packs
 * a named object into it per dispatch. When the pipeline is built (GpuContext.pipeline), the
 * declaration is compared with the struct in the shader text after includes and templates: a
 * field renamed, moved, added, dropped or retyped on either side fails there, naming the field
 * and the shader, instead of a kernel silently reading a shape from the wrong slot.
 *
 * Layout follows WGSL's rules for the uniform address space: u32/i32/f32 align to 4, vec2 to 8,
 * vec3/vec4 to 16; the struct's size must be a multiple of 16 (the kernel convention: pad with
 * explicit `_pad` fields). Fields named `_...` are padding: declared like any field (so padding
 * is checked too), never passed, packed as zero.
 */
import { QloradError } from "../util/errors.ts";

export type UniformScalarType = "u32" | "i32" | "f32";
export type UniformVectorType = `vec${2 | 3 | 4}${"u" | "i" | "f"}`;
export type UniformFieldType = UniformScalarType | UniformVectorType;
export type UniformFields = Readonly<Record<string, UniformFieldType>>;

/** What a wrapper passes for a field: u32 flags may be booleans (WGSL bool is not host-shareable). */
type FieldValue<T> = T extends "u32" ? number | boolean
  : T extends UniformScalarType ? number
  : ArrayLike<number>;

/** The named object a layout packs: every field but the `_` padding. */
export type UniformValuesOf<F extends UniformFields> = {
  readonly [K in keyof F as K extends `_${string}` ? never : K]: FieldValue<F[K]>;
};

/** A host layout that does not match its shader's struct (a bug in a wrapper or a shader). */
export class UniformLayoutError extends QloradError {
  constructor(message: string) {
    super("internal", message);
    this.name = "UniformLayoutError";
  }
}

interface FieldSpec {
  name: string;
  type: UniformFieldType;
  /** In 32-bit words. */
  offset: number;
  /** Components: 1 for scalars. */
  width: number;
  kind: "u" | "i" | "f";
  padding: boolean;
}

const SCALAR_KIND: Record<UniformScalarType, "u" | "i" | "f"> = { u32: "u", i32: "i", f32: "f" };

/** Width and alignment (in words) of a field type; undefined for types uniforms here do not use. */
function shapeOf(
  type: string,
): { kind: "u" | "i" | "f"; width: number; align: number } | undefined {
  if (type in SCALAR_KIND) {
    return { kind: SCALAR_KIND[type as UniformScalarType], width: 1, align: 1 };
  }
  const m = /^vec([234])([uif])$/.exec(type);
  if (!m) return undefined;
  const width = Number(m[1]);
  return { kind: m[2] as "u" | "i" | "f", width, align: width === 2 ? 2 : 4 };
}

/** WGSL's spellings of a type in one form: `vec4<u32>` -> `vec4u`, `vec2<f32>` -> `vec2f`. */
export function canonicalWgslType(type: string): string {
  const t = type.replace(/\s+/g, "");
  const m = /^vec([234])<([uif])32>$/.exec(t);
  return m ? `vec${m[1]}${m[2]}` : t;
}

/** Fields with their offsets, and the struct's size in words. */
function layOut(fields: ReadonlyArray<[string, UniformFieldType]>, what: string) {
  const specs: FieldSpec[] = [];
  let offset = 0;
  let align = 1;
  for (const [name, type] of fields) {
    const s = shapeOf(type);
    if (!s) throw new UniformLayoutError(`${what}: field ${name} has unsupported type ${type}`);
    offset = Math.ceil(offset / s.align) * s.align;
    specs.push({ name, type, offset, width: s.width, kind: s.kind, padding: name.startsWith("_") });
    offset += s.width;
    align = Math.max(align, s.align);
  }
  return { specs, words: Math.ceil(offset / align) * align };
}

/** One field of a WGSL struct as written: its name and canonical type. */
export interface WgslField {
  name: string;
  type: string;
}

/**
 * The fields of `struct <name> { ... }` in WGSL source (comments removed), or undefined when the
 * source has no such struct. Attributes on members (@align, @size) are reported as an
 * unsupported type so the layout check refuses them rather than mis-computing offsets.
 */
export function parseWgslStruct(code: string, name: string): WgslField[] | undefined {
  const text = code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  const re = new RegExp(`\\bstruct\\s+${name}\\s*\\{([^}]*)\\}`, "g");
  const found = [...text.matchAll(re)];
  if (found.length === 0) return undefined;
  if (found.length > 1) throw new UniformLayoutError(`struct ${name} is defined twice`);
  // Split on commas outside <...> (vec4<u32>, array<u32, 4>).
  const parts: string[] = [];
  let depth = 0, start = 0;
  const body = found[0][1];
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === "<") depth++;
    else if (c === ">") depth--;
    else if (c === "," && depth === 0) {
      parts.push(body.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(body.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p !== "").map((p) => {
    const m = /^([A-Za-z_]\w*)\s*:\s*([\s\S]+)$/.exec(p);
    if (!m) return { name: p.replace(/\s+/g, " "), type: "(unparsed member)" };
    return { name: m[1], type: canonicalWgslType(m[2]) };
  });
}

/** A uniform struct as the host packs it; made once per wrapper at module load. */
export class UniformLayout<F extends UniformFields = UniformFields> {
  readonly fields: readonly FieldSpec[];
  /** 32-bit words of the packed struct (its size rounded to 16 bytes). */
  readonly words: number;
  readonly #u32: Uint32Array;
  readonly #i32: Int32Array;
  readonly #f32: Float32Array;
  /** Pipeline keys this layout was already checked against. */
  readonly #checked = new Set<string>();

  /**
   * @param struct the WGSL struct's name
   * @param declared its fields in WGSL order, padding included
   */
  constructor(readonly struct: string, declared: F) {
    const { specs, words } = layOut(
      Object.entries(declared) as Array<[string, UniformFieldType]>,
      `uniform layout ${struct}`,
    );
    this.fields = specs;
    this.words = Math.max(4, Math.ceil(words / 4) * 4);
    const buf = new ArrayBuffer(this.words * 4);
    this.#u32 = new Uint32Array(buf);
    this.#i32 = new Int32Array(buf);
    this.#f32 = new Float32Array(buf);
  }

  /**
   * The struct's bytes for `values`, in a scratch array reused by the next call: hand it straight
   * to ctx.uniform (which copies what it keeps). Throws naming the field for a missing value or
   * one its type cannot hold (a negative or fractional u32, an i32 out of range).
   */
  pack(values: UniformValuesOf<F>): Uint32Array {
    const v = values as unknown as Record<string, number | boolean | ArrayLike<number>>;
    for (const f of this.fields) {
      if (f.padding) {
        for (let c = 0; c < f.width; c++) this.#u32[f.offset + c] = 0;
        continue;
      }
      const x = v[f.name];
      if (f.width === 1) this.#put(f, f.offset, x);
      else {
        const a = x as ArrayLike<number> | undefined;
        if (a === undefined || typeof a !== "object" || a.length !== f.width) {
          throw new UniformLayoutError(
            `uniform ${this.struct}: ${f.name} must be ${f.width} numbers (${f.type}), got ${
              String(x)
            }`,
          );
        }
        for (let c = 0; c < f.width; c++) this.#put(f, f.offset + c, a[c]);
      }
    }
    return this.#u32;
  }

  #put(f: FieldSpec, word: number, x: unknown): void {
    if (f.kind === "f") {
      if (typeof x !== "number") this.#bad(f, x);
      this.#f32[word] = x as number;
    } else if (f.kind === "u") {
      const n = typeof x === "boolean" ? (x ? 1 : 0) : x;
      if (typeof n !== "number" || n >>> 0 !== n) this.#bad(f, x);
      this.#u32[word] = n as number;
    } else {
      if (typeof x !== "number" || (x | 0) !== x) this.#bad(f, x);
      this.#i32[word] = x as number;
    }
  }

  #bad(f: FieldSpec, x: unknown): never {
    throw new UniformLayoutError(
      `uniform ${this.struct}: ${f.name} must be ${
        f.kind === "u"
          ? "an integer in [0, 2^32)"
          : f.kind === "i"
          ? "a 32-bit integer"
          : "a number"
      } (${f.type}), got ${String(x)}`,
    );
  }

  /** Whether `check` already passed for the pipeline `key`. */
  hasChecked(key: string): boolean {
    return this.#checked.has(key);
  }

  /**
   * Checks this layout against `struct <name>` in the WGSL `code` of `shader` (after includes and
   * templates): names, order, types, and so every offset and the padding. Throws
   * UniformLayoutError naming the field and the shader. `key` names the pipeline, so a shader is
   * checked once however many dispatches build it.
   */
  check(shader: string, code: string, key = code): void {
    if (this.#checked.has(key)) return;
    const where = `${shader}: struct ${this.struct}`;
    const wgsl = parseWgslStruct(code, this.struct);
    if (!wgsl) throw new UniformLayoutError(`${shader}: no struct ${this.struct} (uniform layout)`);
    if (!new RegExp(`var\\s*<\\s*uniform\\s*>\\s*\\w+\\s*:\\s*${this.struct}\\s*;`).test(code)) {
      throw new UniformLayoutError(
        `${shader}: struct ${this.struct} is not a uniform variable's type`,
      );
    }
    const host = this.fields;
    const hostNames = host.map((f) => f.name);
    const wgslNames = wgsl.map((f) => f.name);
    const n = Math.max(host.length, wgsl.length);
    for (let i = 0; i < n; i++) {
      const h = host[i], s = wgsl[i];
      if (h && s && h.name === s.name) {
        if (h.type !== s.type) {
          throw new UniformLayoutError(
            `${where}: field ${s.name} is ${s.type} in the shader, ${h.type} in the host layout`,
          );
        }
        continue;
      }
      if (!h) {
        throw new UniformLayoutError(`${where}: field ${s.name} is missing from the host layout`);
      }
      if (!s || !wgslNames.includes(h.name)) {
        throw new UniformLayoutError(
          `${where}: host layout field ${h.name} is not in the struct${
            s && !hostNames.includes(s.name) ? ` (the struct has ${s.name} there)` : ""
          }`,
        );
      }
      if (!hostNames.includes(s.name)) {
        throw new UniformLayoutError(`${where}: field ${s.name} is missing from the host layout`);
      }
      throw new UniformLayoutError(
        `${where}: field ${h.name} is field ${wgslNames.indexOf(h.name)} in the shader, ` +
          `${i} in the host layout (order differs)`,
      );
    }
    // Same names and types in the same order give the same offsets; the size is the convention.
    const bytes = layOut(wgsl.map((f) => [f.name, f.type as UniformFieldType]), where).words * 4;
    if (bytes % 16 !== 0) {
      throw new UniformLayoutError(
        `${where}: ${bytes} bytes, not a multiple of 16: add _pad fields after ${
          wgsl[wgsl.length - 1].name
        }`,
      );
    }
    this.#checked.add(key);
  }
}

/** Declares a shader's uniform struct: `uniformLayout("Params", { n: "u32", ... })`. */
export function uniformLayout<const F extends UniformFields>(
  struct: string,
  fields: F,
): UniformLayout<F> {
  return new UniformLayout(struct, fields);
}
