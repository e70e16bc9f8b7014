/**
 * Progress for people and for logs. On a terminal: one bar, rewritten in place. Elsewhere (a
 * pipe, a file, a CI log): no control characters and no line per update, only a plain line each
 * time another `everyPercent` of the total is done, and the last one. Whether the stream is a
 * terminal is the caller's (`Deno.stdout.isTerminal()` for the stream it writes to), so tests
 * inject it.
 */

export interface ProgressOptions {
  /** Written before the bar or line, e.g. "train". */
  label: string;
  total: number;
  /** The stream is a terminal: draw a bar in place. */
  tty: boolean;
  /** Where the text goes (a terminal's bar has no newline until `done`). */
  write(text: string): void;
  /** Off a terminal, a line each time this much more of the total is done; default 10. */
  everyPercent?: number;
  /** Bar width in characters on a terminal; default 30. */
  barWidth?: number;
}

export class Progress {
  #o: Required<ProgressOptions>;
  /** Off a terminal: the next fraction of the total whose crossing prints a line. */
  #nextLine: number;
  #drawn = false;
  #last = -1;

  constructor(options: ProgressOptions) {
    this.#o = {
      ...options,
      everyPercent: options.everyPercent ?? 10,
      barWidth: options.barWidth ?? 30,
    };
    if (!(this.#o.total >= 1)) throw new RangeError(`total must be >= 1, got ${this.#o.total}`);
    this.#nextLine = this.#o.everyPercent / 100;
  }

  /** `value` of `total` done; `detail` follows the count (loss, tensor name, ETA...). */
  update(value: number, detail = ""): void {
    const { total, tty, label, barWidth } = this.#o;
    const count = `${String(value).padStart(String(total).length)}/${total}`;
    const text = `${label} ${count}${detail ? ` ${detail}` : ""}`;
    if (tty) {
      const filled = Math.round(barWidth * Math.min(1, value / total));
      const bar = "█".repeat(filled) + "░".repeat(barWidth - filled);
      this.#o.write(`\r\x1b[2K${label} |${bar}| ${count}${detail ? ` ${detail}` : ""}`);
      this.#drawn = true;
      return;
    }
    const done = value / total;
    if (value === this.#last || (done < this.#nextLine - 1e-12 && value < total)) return;
    this.#o.write(`${text}\n`);
    this.#last = value;
    while (this.#nextLine <= done + 1e-12) this.#nextLine += this.#o.everyPercent / 100;
  }

  /** Ends the bar's line on a terminal; off one, nothing more to say. */
  done(): void {
    if (this.#drawn) this.#o.write("\n");
    this.#drawn = false;
  }
}

/** Seconds as a short duration for an ETA: "45s", "3m05s", "2h07m". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
}
