/**
 * Markdown tables for printed reports (`qlorad estimate`, the benchmark): one writer, so every
 * table the project prints reads the same in a terminal and pastes into docs.
 */

export type Cell = string | number;

/**
 * A GitHub-flavoured Markdown table, columns padded to their widest cell. A column whose every
 * cell is a number (or a number with a unit: "1,234", "3.5x", "12 ms") is right-aligned.
 */
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
