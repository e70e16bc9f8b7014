/** Markdown tables and number formats for the benchmark's printed report. */

export type Cell = string | number;

/** A GitHub-flavoured Markdown table; numbers right-aligned. */
export function markdownTable(headers: string[], rows: Cell[][]): string {
  const text = rows.map((r) => r.map((c) => String(c)));
  const width = headers.map((h, i) => Math.max(h.length, ...text.map((r) => (r[i] ?? "").length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => isNumberish(r[i])));
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) => numeric[i] ? c.padStart(width[i]) : c.padEnd(width[i])).join(" | ")
    } |`;
  const rule = `|${
    width.map((w, i) => numeric[i] ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))
      .join("|")
  }|`;
  return [line(headers), rule, ...text.map(line)].join("\n");
}

function isNumberish(c: Cell | undefined): boolean {
  if (typeof c === "number") return true;
  return typeof c === "string" && /^[-+]?[\d.,]+\s*(x|%|ms|s)?$/.test(c.trim());
}

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
