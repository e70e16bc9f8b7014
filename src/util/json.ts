/**
 * JSON parsing with errors that say where (the offset, line and column of a syntax fault) and
 * never what: no part of the input is quoted back, since the input may be a file the caller should
 * not see. Nesting is bounded before anything parses, so no input can exhaust the stack here or in
 * code that walks the parsed value.
 */
import { invalidArgument } from "./errors.ts";

/** The deepest nesting of arrays and objects accepted by default (configs and records need ~5). */
export const MAX_JSON_DEPTH = 64;

/**
 * The reason of a JSON.parse SyntaxError without its position or any quoted input (V8 messages
 * quote the offending token, sometimes the start of the input; callers locate the fault).
 */
export function jsonSyntaxReason(err: unknown): string {
  return (err as Error).message
    .replace(/, ".*" is not valid JSON$/s, "")
    .replace(/^".*" is not valid JSON$/s, "Unexpected input")
    .replace(/ in JSON at position \d+.*$/s, "")
    .replace(/^Unexpected token .*$/s, "Unexpected character");
}

/**
 * Offset of the first `[` or `{` that opens level `maxDepth + 1`, or -1 when the nesting stays
 * within `maxDepth`. Brackets inside strings do not count; the text need not be valid JSON.
 */
export function jsonDepthOffset(s: string, maxDepth = MAX_JSON_DEPTH): number {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string: to the next quote not escaped by a backslash.
      for (i++; i < s.length; i++) {
        const d = s.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return i;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return -1;
}

/**
 * Offset of the first JSON syntax error in `s` (s.length for an unexpected end), -1 when there is
 * none. Iterative: the nesting lives in an explicit stack, so any depth is safe.
 */
export function jsonErrorOffset(s: string): number {
  let i = 0;
  const ws = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t" || s[i] === "\n" || s[i] === "\r")) i++;
  };
  /** Scans a string from its opening quote; the offset of a fault, or -1. */
  const str = (): number => {
    i++;
    for (;;) {
      if (i >= s.length) return i;
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return -1;
      }
      if (c < 0x20) return i;
      if (c === 0x5c) {
        const e = s[i + 1];
        if (e === "u") {
          for (let k = 2; k < 6; k++) if (!/[0-9a-fA-F]/.test(s[i + k] ?? "")) return i + k;
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else return i + 1;
      } else i++;
    }
  };
  const digits = (): number => {
    const start = i;
    while (i < s.length && s[i] >= "0" && s[i] <= "9") i++;
    return i === start ? i : -1;
  };
  /** Scans a scalar at i; the offset of a fault, or -1. */
  const scalar = (): number => {
    const c = s[i];
    if (c === '"') return str();
    if (c === "t" || c === "f" || c === "n") {
      const word = c === "t" ? "true" : c === "f" ? "false" : "null";
      for (const ch of word) {
        if (s[i] !== ch) return i;
        i++;
      }
      return -1;
    }
    if (c === "-" || (c >= "0" && c <= "9")) {
      if (s[i] === "-") i++;
      let at: number;
      if (s[i] === "0") i++;
      else if ((at = digits()) >= 0) return at;
      if (s[i] === ".") {
        i++;
        if ((at = digits()) >= 0) return at;
      }
      if (s[i] === "e" || s[i] === "E") {
        i++;
        if (s[i] === "+" || s[i] === "-") i++;
        if ((at = digits()) >= 0) return at;
      }
      return -1;
    }
    return i;
  };
  // Open containers: "{" or "[". After a value, the top decides what may follow.
  const stack: string[] = [];
  for (;;) {
    // Expecting a value.
    ws();
    if (s[i] === "{") {
      i++;
      ws();
      if (s[i] === "}") i++;
      else {
        stack.push("{");
        if (s[i] !== '"') return i;
        const at = str();
        if (at >= 0) return at;
        ws();
        if (s[i] !== ":") return i;
        i++;
        continue;
      }
    } else if (s[i] === "[") {
      i++;
      ws();
      if (s[i] === "]") i++;
      else {
        stack.push("[");
        continue;
      }
    } else {
      const at = scalar();
      if (at >= 0) return at;
    }
    // A value ended: close containers, or go on to the next member or element.
    for (;;) {
      if (stack.length === 0) {
        ws();
        return i < s.length ? i : -1;
      }
      ws();
      const top = stack[stack.length - 1];
      if (s[i] === ",") {
        i++;
        if (top === "{") {
          ws();
          if (s[i] !== '"') return i;
          const at = str();
          if (at >= 0) return at;
          ws();
          if (s[i] !== ":") return i;
          i++;
        }
        break;
      }
      if (s[i] === (top === "{" ? "}" : "]")) {
        i++;
        stack.pop();
        continue;
      }
      return i;
    }
  }
}

/** 1-based line and column of a string offset. */
export function lineColumn(s: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let k = 0; k < offset && k < s.length; k++) {
    if (s[k] === "\n") {
      line++;
      lineStart = k + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

function describeOffset(text: string, at: number): string {
  if (at >= text.length) return " at end of input";
  const { line, column } = lineColumn(text, at);
  return ` at line ${line} column ${column} (offset ${at})`;
}

/**
 * JSON.parse with errors that name `label` and the line and column of the fault; nesting deeper
 * than `maxDepth` is refused before parsing.
 */
export function parseJsonText(text: string, label: string, maxDepth = MAX_JSON_DEPTH): unknown {
  const deep = jsonDepthOffset(text, maxDepth);
  if (deep >= 0) {
    throw invalidArgument(
      `${label}: JSON nested deeper than ${maxDepth} levels${describeOffset(text, deep)}`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    const reason = jsonSyntaxReason(e);
    const at = jsonErrorOffset(text);
    throw invalidArgument(
      `${label}: invalid JSON${at < 0 ? "" : describeOffset(text, at)}: ${reason}`,
    );
  }
}
