/** JSON parsing with errors that say where: the offset, line and column of a syntax fault. */
import { invalidArgument } from "./errors.ts";

/**
 * The reason of a JSON.parse SyntaxError without its position or quoted input (V8 messages
 * sometimes quote the whole input and sometimes omit the position; callers locate the fault).
 */
export function jsonSyntaxReason(err: unknown): string {
  return (err as Error).message
    .replace(/, ".*" is not valid JSON$/s, "")
    .replace(/ in JSON at position \d+.*$/s, "");
}

/** Offset of the first JSON syntax error in `s` (s.length for an unexpected end). */
export function jsonErrorOffset(s: string): number {
  let i = 0;
  const fail = (at: number): never => {
    throw at;
  };
  const ws = () => {
    while (i < s.length && (s[i] === " " || s[i] === "\t" || s[i] === "\n" || s[i] === "\r")) i++;
  };
  const digits = () => {
    const start = i;
    while (i < s.length && s[i] >= "0" && s[i] <= "9") i++;
    if (i === start) fail(i);
  };
  const str = () => {
    i++; // opening quote
    for (;;) {
      if (i >= s.length) fail(i);
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) fail(i);
      if (c === 0x5c) {
        const e = s[i + 1];
        if (e === "u") {
          for (let k = 2; k < 6; k++) if (!/[0-9a-fA-F]/.test(s[i + k] ?? "")) fail(i + k);
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else fail(i + 1);
      } else i++;
    }
  };
  const value = (): void => {
    ws();
    const c = s[i];
    if (c === "{") {
      i++;
      ws();
      if (s[i] === "}") return void i++;
      for (;;) {
        ws();
        if (s[i] !== '"') fail(i);
        str();
        ws();
        if (s[i] !== ":") fail(i);
        i++;
        value();
        ws();
        if (s[i] === ",") i++;
        else if (s[i] === "}") return void i++;
        else fail(i);
      }
    } else if (c === "[") {
      i++;
      ws();
      if (s[i] === "]") return void i++;
      for (;;) {
        value();
        ws();
        if (s[i] === ",") i++;
        else if (s[i] === "]") return void i++;
        else fail(i);
      }
    } else if (c === '"') str();
    else if (c === "t" || c === "f" || c === "n") {
      const word = c === "t" ? "true" : c === "f" ? "false" : "null";
      for (const ch of word) {
        if (s[i] !== ch) fail(i);
        i++;
      }
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      if (s[i] === "-") i++;
      if (s[i] === "0") i++;
      else digits();
      if (s[i] === ".") {
        i++;
        digits();
      }
      if (s[i] === "e" || s[i] === "E") {
        i++;
        if (s[i] === "+" || s[i] === "-") i++;
        digits();
      }
    } else fail(i);
  };
  try {
    value();
    ws();
    if (i < s.length) fail(i);
    return -1;
  } catch (at) {
    if (typeof at === "number") return at;
    throw at;
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

/** JSON.parse with errors that name `label` and the line and column of the fault. */
export function parseJsonText(text: string, label: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const reason = jsonSyntaxReason(e);
    const at = jsonErrorOffset(text);
    const where = at < 0 ? "" : at >= text.length ? " at end of input" : (() => {
      const { line, column } = lineColumn(text, at);
      return ` at line ${line} column ${column} (offset ${at})`;
    })();
    throw invalidArgument(`${label}: invalid JSON${where}: ${reason}`);
  }
}
