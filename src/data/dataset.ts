/**
 * A JSONL dataset read as a stream, line by line: every record is parsed, validated and tokenized
 * before anything is returned, so a bad record fails the job before any training step. Records
 * longer than max_seq_len are truncated (a warning), and each becomes a shifted Example whose
 * labels[t] is the target of position t, as MicroBatch wants.
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

/** Lines of a file as (1-based number, text), streamed; invalid UTF-8 names its line. */
export async function* readLines(
  path: string,
  label = path,
): AsyncGenerator<{ line: number; text: string }> {
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
  let line = 0;
  let carry: Uint8Array = new Uint8Array(0);
  try {
    for await (const chunk of file.readable) {
      let data = chunk;
      if (carry.length) {
        data = new Uint8Array(carry.length + chunk.length);
        data.set(carry);
        data.set(chunk, carry.length);
      }
      let start = 0;
      for (let nl = data.indexOf(0x0a); nl >= 0; nl = data.indexOf(0x0a, start)) {
        line++;
        yield { line, text: decode(data.subarray(start, nl), line) };
        start = nl + 1;
      }
      carry = data.slice(start);
    }
    if (carry.length) {
      line++;
      yield { line, text: decode(carry, line) };
    }
  } finally {
    try {
      file.close();
    } catch {
      // already closed by the finished stream
    }
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
  for await (const { line, text } of readLines(path, file)) {
    if (line % 256 === 0) throwIfAborted(options.signal);
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
