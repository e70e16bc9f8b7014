/**
 * Duplicate keys in JSON text. JSON.parse keeps the last of two equal keys without a word, so a
 * safetensors header or a shard index that names one tensor twice would load one of them
 * silently; readers look for repeats first and refuse them.
 */

/**
 * The first key that appears twice in one object of `text`, or undefined. `text` must already be
 * valid JSON (call after JSON.parse succeeded): the scan only tracks objects, arrays and strings.
 */
export function firstDuplicateKey(text: string): string | undefined {
  // One frame per open object (its keys so far) or array (null).
  const frames: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b) { // {
      frames.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) { // [
      frames.push(null);
      expectKey = false;
    } else if (c === 0x7d || c === 0x5d) { // } ]
      frames.pop();
      expectKey = false;
    } else if (c === 0x2c) { // ,
      expectKey = frames.length > 0 && frames[frames.length - 1] !== null;
    } else if (c === 0x22) { // a string: skip to its closing quote
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        const keys = frames[frames.length - 1]!;
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    }
  }
  return undefined;
}
