/** firstDuplicateKey: repeats found per object, at any depth; strings and arrays not confused. */
import assert from "node:assert/strict";
import { firstDuplicateKey } from "../../src/io/json_keys.ts";

Deno.test("firstDuplicateKey: hand-written texts", () => {
  const cases: [string, string | undefined][] = [
    ['{"a": 1, "b": 2}', undefined],
    ['{"a": 1, "a": 2}', "a"],
    // The same key in two different objects is fine; in one nested object it is not.
    ['{"a": {"x": 1}, "b": {"x": 2}}', undefined],
    ['{"a": {"x": 1, "y": [1, {"x": 3}], "x": 2}}', "x"],
    // Values and array items are not keys, even when they look like one.
    ['{"a": "a", "b": ["a", "a"], "c": {"d": "a"}}', undefined],
    // Escapes inside strings: a quote, a backslash, a unicode escape equal to "k".
    ['{"q\\"": 1, "\\\\": 2, "\\u006b": 3, "k": 4}', "k"],
    ['{"x": "a,\\"b\\":{", "y": 1, "x2": 2}', undefined],
    ["[1, 2, 3]", undefined],
    ['{"__metadata__": {"format": "pt"}, "t": {}, "t": {}}', "t"],
  ];
  for (const [text, want] of cases) {
    JSON.parse(text); // every case is valid JSON
    assert.equal(firstDuplicateKey(text), want, text);
  }
});
