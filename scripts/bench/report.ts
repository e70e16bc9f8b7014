/** Markdown tables and number formats for the benchmark's printed report. */

export { type Cell, markdownTable } from "../../src/util/markdown_table.ts";

/** 3 significant digits, no exponent for ordinary magnitudes. */
export function num(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

export function ratio(x: number): string {
  return `${x.toFixed(2)}x`;
}

export function ms(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** "n/a (why)" for a failed measurement, the reason kept to one short line. */
export function na(why: unknown): string {
  const text = why instanceof Error ? why.message : String(why);
  const line = text.replace(/\s+/g, " ").trim();
  return `n/a (${line.length > 90 ? `${line.slice(0, 87)}...` : line})`;
}
