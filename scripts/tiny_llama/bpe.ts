/**
 * A byte-level BPE trainer and reference encoder (GPT-2's pre-tokenizer and byte alphabet): the
 * fixture learns its tokenizer.json from its corpus with it, and tests check the Hugging Face
 * tokenizers library against its encoder.
 */

/** GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's alphabet). */
export function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return table;
}

const BYTE_CHARS = bytesToUnicode();
/** The ByteLevel pre-tokenizer split (GPT-2 pattern). */
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Split text like the ByteLevel pre-tokenizer and map each piece's UTF-8 bytes to characters. */
export function byteLevelPieces(text: string): string[] {
  const enc = new TextEncoder();
  return (text.match(PRETOKENIZE) ?? []).map((p) =>
    Array.from(enc.encode(p), (b) => BYTE_CHARS[b]).join("")
  );
}

export interface BpeModel {
  /** Token -> id; ids 0..255 are the byte characters in byte order. */
  vocab: Map<string, number>;
  merges: [string, string][];
}

/** Learn `numMerges` merges: most frequent adjacent pair first, ties to the smaller pair. */
export function trainBpe(corpus: string, numMerges: number): BpeModel {
  const counts = new Map<string, number>();
  for (const p of byteLevelPieces(corpus)) counts.set(p, (counts.get(p) ?? 0) + 1);
  const words = [...counts].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, n]) => ({
    syms: [...w],
    n,
  }));
  const vocab = new Map<string, number>(BYTE_CHARS.map((c, i) => [c, i]));
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = syms[i] + "\u0000" + syms[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined;
    let bestN = 1; // a pair seen once is not worth a token
    for (const [k, n] of pairs) {
      if (n > bestN || (n === bestN && best !== undefined && k < best)) {
        best = k;
        bestN = n;
      }
    }
    if (best === undefined) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
    for (const w of words) w.syms = mergePair(w.syms, a, b);
  }
  return { vocab, merges };
}

function mergePair(syms: string[], a: string, b: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < syms.length; i++) {
    if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) {
      out.push(a + b);
      i++;
    } else out.push(syms[i]);
  }
  return out;
}

/** Reference BPE encoder (no special tokens): lowest-rank adjacent pair merged first. */
export function bpeEncode(model: BpeModel, text: string): number[] {
  const rank = new Map(model.merges.map(([a, b], i) => [a + "\u0000" + b, i]));
  const ids: number[] = [];
  for (const piece of byteLevelPieces(text)) {
    let syms = [...piece];
    for (;;) {
      let bestRank = Infinity;
      let bestPair: [string, string] | undefined;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = rank.get(syms[i] + "\u0000" + syms[i + 1]);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          bestPair = [syms[i], syms[i + 1]];
        }
      }
      if (!bestPair) break;
      syms = mergePair(syms, bestPair[0], bestPair[1]);
    }
    for (const s of syms) ids.push(model.vocab.get(s)!);
  }
  return ids;
}
