/**
 * Generated text as it streams out: each new token's text is the growth of the decoded whole
 * (tokens need their neighbours to decode: byte-level pieces, leading spaces), held back while it
 * could still be the start of a stop string or ends in an incomplete UTF-8 character, and cut
 * where a stop string appears (the stop string itself is never sent).
 */
export class TextStream {
  readonly #ids: number[] = [];
  /** Characters of the decoded text already handed out. */
  #sent = 0;
  #text = "";
  #longestStop: number;

  constructor(
    readonly decode: (ids: number[]) => string,
    readonly stopStrings: readonly string[] = [],
  ) {
    this.#longestStop = Math.max(0, ...stopStrings.map((s) => s.length));
  }

  /** Everything handed out so far. */
  get text(): string {
    return this.#text.slice(0, this.#sent);
  }

  /** Adds a token: the text now safe to send, and whether a stop string ended the generation. */
  push(id: number): { text: string; stopped: boolean } {
    this.#ids.push(id);
    this.#text = this.decode(this.#ids);
    const from = Math.max(0, this.#sent - this.#longestStop);
    let cut = -1;
    for (const s of this.stopStrings) {
      const i = this.#text.indexOf(s, from);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const delta = this.#text.slice(this.#sent, Math.max(this.#sent, cut));
      this.#sent = Math.max(this.#sent, cut);
      return { text: delta, stopped: true };
    }
    const end = this.#safeEnd();
    const delta = this.#text.slice(this.#sent, Math.max(this.#sent, end));
    this.#sent = Math.max(this.#sent, end);
    return { text: delta, stopped: false };
  }

  /** The generation ended without a stop string: whatever was held back. */
  flush(): string {
    const delta = this.#text.slice(this.#sent);
    this.#sent = this.#text.length;
    return delta;
  }

  /** Where the sendable text ends: before a tail that may begin a stop string or a character. */
  #safeEnd(): number {
    const t = this.#text;
    let end = t.length;
    // An incomplete UTF-8 sequence decodes to U+FFFD until its last byte arrives.
    while (end > this.#sent && t[end - 1] === "\uFFFD") end--;
    for (const s of this.stopStrings) {
      for (let k = Math.min(s.length - 1, end); k > 0; k--) {
        if (t.slice(end - k, end) === s.slice(0, k)) {
          end -= k;
          break;
        }
      }
    }
    return end;
  }
}
