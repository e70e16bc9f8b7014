/**
 * One JSONL line of a dataset parsed into a typed record (DESIGN.md "Dataset formats"):
 * {"text"}, {"prompt","completion"}, {"messages"}, or {"input_ids","labels"?}. Every fault is an
 * invalidArgument "<file>:<line>: <what>". Keys outside the format (ids, metadata) are ignored.
 * A record's size is bounded (RECORD_LIMITS) so that no record can make the tokenizer run for
 * minutes or exhaust memory, and errors describe values by type, never by quoting the file.
 */
import {
  jsonDepthOffset,
  jsonErrorOffset,
  jsonSyntaxReason,
  MAX_JSON_DEPTH,
} from "../util/json.ts";
import { invalidArgument } from "../util/errors.ts";
import type { ChatMessage } from "./tokenizer.ts";

/**
 * Label that masks a position (model/graph.ts IGNORE_INDEX; repeated here so the data layer does
 * not load the GPU graph).
 */
export const IGNORE_INDEX = -100;

export const CHAT_ROLES = ["system", "user", "assistant"] as const;

export type DataRecord =
  | { format: "text"; text: string }
  | { format: "prompt_completion"; prompt: string; completion: string }
  | { format: "messages"; messages: ChatMessage[] }
  | { format: "pretokenized"; inputIds: number[]; labels?: number[] };

export type RecordFormat = DataRecord["format"];

export interface RecordSource {
  /** File label used in messages (e.g. "train.jsonl"). */
  file: string;
  /** 1-based line number. */
  line: number;
  /** Token ids must lie in [0, vocabSize). */
  vocabSize: number;
}

/** The most a record may hold; a record beyond any of them is refused, naming its line. */
export const RECORD_LIMITS = {
  /** Characters given to the tokenizer: text, prompt + completion, or all message contents. */
  maxChars: 1 << 20,
  /** Messages of one conversation. */
  maxMessages: 4096,
  /** Entries of input_ids (and labels). */
  maxTokenIds: 1 << 20,
  /** Nesting of arrays and objects in the line. */
  maxDepth: MAX_JSON_DEPTH,
} as const;

/** Format keys: a record must hold exactly one group. */
const FORMAT_KEYS: Record<RecordFormat, string[]> = {
  text: ["text"],
  prompt_completion: ["prompt", "completion"],
  messages: ["messages"],
  pretokenized: ["input_ids", "labels"],
};

/**
 * A value's type, and a number's value; a string only when it is a short word (a role name),
 * so that no error repeats a line's text.
 */
function describe(v: unknown): string {
  if (v === undefined) return "nothing (the key is missing)";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number") {
    return Number.isFinite(v) ? `number ${v}` : `number ${v} (beyond the range of a double)`;
  }
  if (typeof v === "string") {
    return /^[\w-]{1,24}$/.test(v)
      ? `string ${JSON.stringify(v)}`
      : `a string of ${v.length} characters`;
  }
  return typeof v === "object" ? "an object" : `${typeof v} ${String(v)}`;
}

function parseJsonLine(text: string, where: string): unknown {
  const deep = jsonDepthOffset(text, RECORD_LIMITS.maxDepth);
  if (deep >= 0) {
    fail(where, `JSON nested deeper than ${RECORD_LIMITS.maxDepth} levels at column ${deep + 1}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    const reason = jsonSyntaxReason(e);
    const at = jsonErrorOffset(text);
    const pos = at < 0 ? "" : at >= text.length ? " at end of line" : ` at column ${at + 1}`;
    return fail(where, `invalid JSON${pos}: ${reason}`);
  }
}

function fail(where: string, what: string): never {
  throw invalidArgument(`${where}: ${what}`);
}

function tokenIds(
  v: unknown,
  field: string,
  where: string,
  vocabSize: number,
  allowIgnore: boolean,
): number[] {
  if (!Array.isArray(v)) fail(where, `"${field}" must be an array of integers, got ${describe(v)}`);
  if (v.length > RECORD_LIMITS.maxTokenIds) {
    fail(where, `"${field}" has ${v.length} entries, more than ${RECORD_LIMITS.maxTokenIds}`);
  }
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (typeof x !== "number" || !Number.isInteger(x)) {
      fail(where, `"${field}"[${i}] must be an integer, got ${describe(x)}`);
    }
    if (allowIgnore && x === IGNORE_INDEX) continue;
    if (x < 0 || x >= vocabSize) {
      const range = allowIgnore ? ` (or ${IGNORE_INDEX})` : "";
      fail(where, `"${field}"[${i}] = ${x} is outside the vocabulary [0, ${vocabSize})${range}`);
    }
  }
  return v as number[];
}

function chatMessages(v: unknown, where: string): ChatMessage[] {
  if (!Array.isArray(v)) fail(where, `"messages" must be an array, got ${describe(v)}`);
  if (v.length === 0) fail(where, `"messages" is empty`);
  if (v.length > RECORD_LIMITS.maxMessages) {
    fail(where, `"messages" has ${v.length} entries, more than ${RECORD_LIMITS.maxMessages}`);
  }
  return v.map((m, i) => {
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      fail(where, `"messages"[${i}] must be an object, got ${describe(m)}`);
    }
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== "string" || !(CHAT_ROLES as readonly string[]).includes(role)) {
      fail(
        where,
        `"messages"[${i}].role must be one of ${CHAT_ROLES.join(", ")}, got ${describe(role)}`,
      );
    }
    if (typeof content !== "string") {
      fail(where, `"messages"[${i}].content must be a string, got ${describe(content)}`);
    }
    checkUnicode(content, `"messages"[${i}].content`, where);
    return { role, content };
  });
}

/** A high surrogate without its low half, or a low one without its high half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Refuses a string that is not Unicode text: JSON's \u escapes can spell half a surrogate pair in
 * a file of valid UTF-8. The JS tokenizer would encode it as U+FFFD without a word, so the model
 * would train on a character the file does not hold; Python's tokenizers refuse it
 * ("UnicodeEncodeError: surrogates not allowed", transformers issue 8886).
 */
function checkUnicode(s: string, field: string, where: string): void {
  if (s.isWellFormed()) return;
  const at = s.search(LONE_SURROGATE);
  fail(
    where,
    `${field} is not valid Unicode: an unpaired surrogate at character ${at + 1} ` +
      `(a \\uD800-\\uDFFF escape without its other half)`,
  );
}

/** Refuses a record whose text for the tokenizer is longer than RECORD_LIMITS.maxChars. */
function checkChars(chars: number, where: string): void {
  if (chars > RECORD_LIMITS.maxChars) {
    fail(
      where,
      `the record's text is ${chars} characters, more than ${RECORD_LIMITS.maxChars} ` +
        `(split it into several records)`,
    );
  }
}

/** Parses one line; null for a blank line. */
export function parseRecordLine(text: string, src: RecordSource): DataRecord | null {
  if (text.trim() === "") return null;
  const where = `${src.file}:${src.line}`;
  const obj = parseJsonLine(text, where);
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    fail(where, `a record must be a JSON object, got ${describe(obj)}`);
  }
  const rec = obj as Record<string, unknown>;
  const present = (Object.keys(FORMAT_KEYS) as RecordFormat[])
    .filter((f) => FORMAT_KEYS[f].some((k) => k in rec));
  if (present.length === 0) {
    // Key names (the schema, not the content), a few and short.
    const all = Object.keys(rec);
    const shown = all.slice(0, 8).map((k) =>
      JSON.stringify(k.length > 40 ? `${k.slice(0, 40)}…` : k)
    );
    const keys = (shown.join(", ") || "none") + (all.length > 8 ? `, … (${all.length} keys)` : "");
    fail(
      where,
      `unknown record format (keys: ${keys}); expected {"text"}, {"prompt","completion"}, ` +
        `{"messages"} or {"input_ids","labels"?}`,
    );
  }
  if (present.length > 1) {
    const keys = present.flatMap((f) => FORMAT_KEYS[f].filter((k) => k in rec));
    fail(where, `ambiguous record: keys ${keys.map((k) => `"${k}"`).join(", ")} mix formats`);
  }
  switch (present[0]) {
    case "text":
      if (typeof rec.text !== "string" || rec.text === "") {
        fail(where, `"text" must be a non-empty string, got ${describe(rec.text)}`);
      }
      checkUnicode(rec.text, `"text"`, where);
      checkChars(rec.text.length, where);
      return { format: "text", text: rec.text };
    case "prompt_completion":
      if (!("prompt" in rec)) fail(where, `"prompt" is missing (a "completion" needs one)`);
      if (!("completion" in rec)) fail(where, `"completion" is missing (a "prompt" needs one)`);
      if (typeof rec.prompt !== "string") {
        fail(where, `"prompt" must be a string, got ${describe(rec.prompt)}`);
      }
      if (typeof rec.completion !== "string" || rec.completion === "") {
        fail(where, `"completion" must be a non-empty string, got ${describe(rec.completion)}`);
      }
      checkUnicode(rec.prompt, `"prompt"`, where);
      checkUnicode(rec.completion, `"completion"`, where);
      checkChars(rec.prompt.length + rec.completion.length, where);
      return { format: "prompt_completion", prompt: rec.prompt, completion: rec.completion };
    case "messages": {
      const messages = chatMessages(rec.messages, where);
      checkChars(messages.reduce((n, m) => n + m.content.length, 0), where);
      return { format: "messages", messages };
    }
    case "pretokenized": {
      if (!("input_ids" in rec)) fail(where, `"labels" given without "input_ids"`);
      const inputIds = tokenIds(rec.input_ids, "input_ids", where, src.vocabSize, false);
      if (inputIds.length === 0) fail(where, `"input_ids" is empty`);
      if (rec.labels === undefined || rec.labels === null) {
        return { format: "pretokenized", inputIds };
      }
      const labels = tokenIds(rec.labels, "labels", where, src.vocabSize, true);
      if (labels.length !== inputIds.length) {
        fail(
          where,
          `"labels" has ${labels.length} entries but "input_ids" has ${inputIds.length}`,
        );
      }
      return { format: "pretokenized", inputIds, labels };
    }
  }
}
