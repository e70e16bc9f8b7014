/**
 * Loads WGSL from shaders/: `//!include name.wgsl` pulls in a shared snippet (once),
 * and `{{NAME}}` placeholders are filled from template parameters (tile sizes, workgroup
 * sizes) chosen by the host per kernel variant.
 */
import { QloradError } from "../util/errors.ts";

const SHADER_DIR = new URL("../../shaders/", import.meta.url);
const cache = new Map<string, string>();

function readShader(name: string): string {
  if (!/^[a-z0-9_]+\.wgsl$/.test(name)) {
    throw new QloradError("internal", `bad shader name ${name}`);
  }
  let text = cache.get(name);
  if (text === undefined) {
    text = Deno.readTextFileSync(new URL(name, SHADER_DIR));
    cache.set(name, text);
  }
  return text;
}

function expandIncludes(name: string, seen: Set<string>): string {
  return readShader(name).replace(/^\/\/!include\s+(\S+)\s*$/gm, (_line, inc: string) => {
    if (seen.has(inc)) return "";
    seen.add(inc);
    return expandIncludes(inc, seen);
  });
}

export type ShaderParams = Record<string, string | number>;

export function shaderSource(name: string, params: ShaderParams = {}): string {
  const text = expandIncludes(name, new Set([name]));
  return text.replace(/\{\{([A-Z0-9_]+)\}\}/g, (_m, key: string) => {
    if (!(key in params)) {
      throw new QloradError("internal", `shader ${name}: no value for template parameter ${key}`);
    }
    const v = params[key];
    // Floats must stay floats in WGSL (1 -> 1.0).
    return typeof v === "number" && !Number.isInteger(v) ? v.toString() : String(v);
  });
}
