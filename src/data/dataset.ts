/**
 * A JSONL dataset read as a stream, line by line: every record is parsed, validated and tokenized
 * before anything is returned, so a bad record fails the job before any training step. Records
 * longer than max_seq_len are truncated (a warning), and each becomes a shifted Example whose
 * labels[t] is the target of position t, as MicroBatch wants. A line is at most MAX_LINE_BYTES
 * and a record at most RECORD_LIMITS (records.ts), so one bad line can neither exhaust memory nor
 * keep the tokenizer busy for minutes; a cancelled job stops reading within a line.
 */
import { invalidArgument, notFound, throwIfAborted } from "../util/errors.ts";
import { type Encoded, encodeRecord } from "./encode.ts";
import { IGNORE_INDEX, parseRecordLine, type RecordFormat } from "./records.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/** One training sequence: tokens[t] at position t is trained to predict labels[t]. */
export interface Example {
  tokens: Uint32Array;
  /** Target of each position (the next token) or IGNORE_INDEX. */
  labels: Int32Array;
  /** Positions with a target (labels != IGNORE_INDEX). */
  labelTokens: number;
  /** 1-based line of the record in its file. */
  line: number;
}

export interface DatasetStats {
  /** Non-blank lines. */
  records: number;
  examples: number;
  /** Records dropped for having nothing to train on. */
  skipped: number;
  /** Records cut to max_seq_len. */
  truncated: number;
  /** Positions and trained positions over all examples. */
  tokens: number;
  labelTokens: number;
  longest: number;
  formats: Record<RecordFormat, number>;
}

export interface LoadedDataset {
  examples: Example[];
  warnings: string[];
  stats: DatasetStats;
}

export interface LoadDatasetOptions {
  /** Longest example (positions). A record keeps at most maxSeqLen + 1 tokens, which shift to
   * maxSeqLen positions each with a target. */
  maxSeqLen: number;
  /** Accepted so one options object serves both: packing happens in BatchPlan; the examples
   * are the same either way. */
  packing?: boolean;
  /** How the file is named in errors and warnings (default: the path). */
  labelSource?: string;
  /** Ids must be below this (default: the tokenizer's vocabulary size). */
  vocabSize?: number;
  signal?: AbortSignal;
}

/** Warnings of one kind listed one by one before they are only counted. */
const WARNINGS_LISTED = 5;

/**
 * Training pairs from an encoded record: position t sees inputIds[t] and is trained to predict
 * inputIds[t+1] when labels[t+1] says so. Null when fewer than two tokens.
 */
export function shift(enc: Encoded, line = 0): Example | null {
  const n = enc.inputIds.length - 1;
  if (n < 1) return null;
  const tokens = new Uint32Array(n);
  const labels = new Int32Array(n);
  let labelTokens = 0;
  for (let t = 0; t < n; t++) {
    tokens[t] = enc.inputIds[t];
    labels[t] = enc.labels[t + 1];
    if (labels[t] !== IGNORE_INDEX) labelTokens++;
  }
  return { tokens, labels, labelTokens, line };
}

/** The longest dataset line (one record) accepted, in bytes. */
export const MAX_LINE_BYTES = 4 << 20;

export interface ReadLinesOptions {
  /** How the file is named in errors (default: the path). */
  label?: string;
  /** A longer line is refused, naming it (default MAX_LINE_BYTES). */
  maxLineBytes?: number;
  /** Checked between reads and lines: reading stops promptly when it aborts. */
  signal?: AbortSignal;
}

/** Bytes read per call. */
const READ_CHUNK = 1 << 16;

/**
 * Lines of a file as (1-based number, text), streamed; invalid UTF-8 names its line, and so does
 * a line longer than `maxLineBytes`, which is refused as soon as it passes the limit (its rest is
 * never held). A partial line's bytes are kept as a list of chunks and joined once, when its end
 * comes, so reading a long line costs its length, not its length times the number of chunks.
 */
export async function* readLines(
  path: string,
  labelOrOptions: string | ReadLinesOptions = {},
): AsyncGenerator<{ line: number; text: string }> {
  const opts = typeof labelOrOptions === "string" ? { label: labelOrOptions } : labelOrOptions;
  const label = opts.label ?? path;
  const maxLineBytes = opts.maxLineBytes ?? MAX_LINE_BYTES;
  const signal = opts.signal;
  throwIfAborted(signal);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw notFound(`${label}: no such file`);
    if (e instanceof Deno.errors.IsADirectory) throw invalidArgument(`${label}: is a directory`);
    throw e;
  }
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  const decode = (bytes: Uint8Array, line: number): string => {
    try {
      let s = decoder.decode(bytes);
      if (s.endsWith("\r")) s = s.slice(0, -1);
      return s;
    } catch {
      throw invalidArgument(`${label}:${line}: not valid UTF-8`);
    }
  };
  const tooLong = (line: number) =>
    invalidArgument(
      `${label}:${line}: line longer than ${maxLineBytes} bytes (split the record, or check ` +
        `that the file is JSONL)`,
    );
  let line = 0;
  // The current line's bytes before this chunk, and how many.
  let parts: Uint8Array[] = [];
  let partBytes = 0;
  const join = (tail: Uint8Array): Uint8Array => {
    if (parts.length === 0) return tail;
    const out = new Uint8Array(partBytes + tail.length);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    out.set(tail, at);
    parts = [];
    partBytes = 0;
    return out;
  };
  try {
    while (true) {
      throwIfAborted(signal);
      const buf = new Uint8Array(READ_CHUNK);
      const n = await file.read(buf);
      if (n === null) break;
      const data = buf.subarray(0, n);
      let start = 0;
      for (let nl = data.indexOf(0x0a); nl >= 0; nl = data.indexOf(0x0a, start)) {
        line++;
        if (partBytes + nl - start > maxLineBytes) throw tooLong(line);
        yield { line, text: decode(join(data.subarray(start, nl)), line) };
        throwIfAborted(signal);
        start = nl + 1;
      }
      if (start < data.length) {
        partBytes += data.length - start;
        if (partBytes > maxLineBytes) throw tooLong(line + 1);
        parts.push(data.subarray(start));
      }
    }
    if (partBytes > 0) {
      line++;
      yield { line, text: decode(join(new Uint8Array(0)), line) };
    }
  } finally {
    file.close();
  }
}

/** Counts warnings of one kind: the first few are listed, the rest summed at the end. */
class WarningLog {
  readonly lines: string[] = [];
  #counts = new Map<string, number>();

  add(kind: string, text: string): void {
    const n = (this.#counts.get(kind) ?? 0) + 1;
    this.#counts.set(kind, n);
    if (n <= WARNINGS_LISTED) this.lines.push(text);
  }

  finish(summary: (kind: string, count: number) => string): string[] {
    for (const [kind, n] of this.#counts) {
      if (n > WARNINGS_LISTED) this.lines.push(summary(kind, n));
    }
    return this.lines;
  }
}

export async function loadDataset(
  path: string,
  tokenizer: TextTokenizer,
  options: LoadDatasetOptions,
): Promise<LoadedDataset> {
  const file = options.labelSource ?? path;
  const { maxSeqLen } = options;
  if (!Number.isInteger(maxSeqLen) || maxSeqLen < 1) {
    throw invalidArgument(`max_seq_len: must be a positive integer, got ${maxSeqLen}`);
  }
  const vocabSize = options.vocabSize ?? tokenizer.vocabSize;
  const stats: DatasetStats = {
    records: 0,
    examples: 0,
    skipped: 0,
    truncated: 0,
    tokens: 0,
    labelTokens: 0,
    longest: 0,
    formats: { text: 0, prompt_completion: 0, messages: 0, pretokenized: 0 },
  };
  const examples: Example[] = [];
  const log = new WarningLog();
  for await (const { line, text } of readLines(path, { label: file, signal: options.signal })) {
    const record = parseRecordLine(text, { file, line, vocabSize });
    if (record === null) continue;
    stats.records++;
    stats.formats[record.format]++;
    const enc = encodeRecord(tokenizer, record, `${file}:${line}`);
    const keep = maxSeqLen + 1;
    if (enc.inputIds.length > keep) {
      stats.truncated++;
      log.add(
        "truncated",
        `${file}:${line}: record of ${enc.inputIds.length} tokens truncated to max_seq_len ` +
          `${maxSeqLen}`,
      );
      enc.inputIds.length = keep;
      enc.labels.length = keep;
    }
    const ex = shift(enc, line);
    if (ex === null || ex.labelTokens === 0) {
      stats.skipped++;
      log.add("skipped", `${file}:${line}: no tokens to train on; skipped`);
      continue;
    }
    examples.push(ex);
    stats.tokens += ex.tokens.length;
    stats.labelTokens += ex.labelTokens;
    stats.longest = Math.max(stats.longest, ex.tokens.length);
  }
  throwIfAborted(options.signal);
  if (stats.records === 0) throw invalidArgument(`${file}: the dataset has no records`);
  if (examples.length === 0) {
    throw invalidArgument(
      `${file}: none of its ${stats.records} records has tokens to train on`,
    );
  }
  stats.examples = examples.length;
  const warnings = log.finish((kind, n) =>
    kind === "truncated"
      ? `${file}: ${n} records truncated to max_seq_len ${maxSeqLen} in all ` +
        `(${n - WARNINGS_LISTED} more than listed)`
      : `${file}: ${n} records skipped with no tokens to train on in all ` +
        `(${n - WARNINGS_LISTED} more than listed)`
  );
  return { examples, warnings, stats };
}
