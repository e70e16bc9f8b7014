/**
 * The ladder's disk cache (src/kernels/ladder_cache.ts), without a GPU: an entry stored goes
 * through io/atomic (no `.partial-` file left behind) and reads back in a new cache on the same
 * file; a file in the format written before the ladder was split still reads; an entry older
 * than MAX_AGE_DAYS, or keyed by another fingerprint, is not used; another process's entries are
 * kept when one is added.
 */
import assert from "node:assert/strict";
import {
  type CacheEntry,
  LADDER_VERSION,
  LadderCache,
  ladderFingerprint,
  MAX_AGE_DAYS,
  readLadderCache,
} from "../../src/kernels/ladder_cache.ts";
import type { LadderKernel } from "../../src/kernels/ladder_registry.ts";

const kernel: LadderKernel = {
  name: "cache_test_kernel",
  variants: ["slow", "fast"],
  prior: () => "slow",
  shaders: ["fill.wgsl"],
  probe: () => Promise.reject(new Error("not timed here")),
};

function entry(measuredAt: string): CacheEntry {
  return {
    variant: "fast",
    fingerprint: ladderFingerprint(kernel),
    runs: [{ slow: 3.25, fast: 1.5 }],
    firstMeasuredAt: measuredAt,
    measuredAt,
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-ladder-cache-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("ladder cache: a stored entry is written atomically and reads back", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/nested/ladder.json`;
    const logs: string[] = [];
    const at = "2026-03-01T10:00:00.000Z";
    const now = Date.parse(at) + 86_400_000;
    const cache = new LadderCache(path, (l) => logs.push(l));
    assert.equal(cache.entry("adapter/a", kernel, now), undefined);
    await cache.store("adapter/a", kernel.name, entry(at));
    assert.deepEqual(await Array.fromAsync(Deno.readDir(`${dir}/nested`), (e) => e.name), [
      "ladder.json",
    ]);
    const raw = JSON.parse(await Deno.readTextFile(path));
    assert.equal(raw.version, LADDER_VERSION);
    assert.deepEqual(raw.adapters["adapter/a"][kernel.name], entry(at));
    const again = new LadderCache(path, (l) => logs.push(l));
    assert.deepEqual(again.entry("adapter/a", kernel, now), entry(at));
    assert.equal(again.entry("adapter/b", kernel, now), undefined);
    assert.deepEqual(logs, []);
  });
});

Deno.test("ladder cache: a file in the pre-split format reads as before", async () => {
  await withDir(async (dir) => {
    // Written by hand as the single-file ladder wrote it: {version, adapters} with one space of
    // indentation and a final newline.
    const path = `${dir}/ladder.json`;
    const at = "2026-04-02T03:04:05.000Z";
    const fp = ladderFingerprint(kernel);
    await Deno.writeTextFile(
      path,
      `{\n "version": 2,\n "adapters": {\n  "dawn/vulkan/x": {\n   "${kernel.name}": {\n` +
        `    "variant": "fast",\n    "fingerprint": "${fp}",\n    "runs": [\n     {\n` +
        `      "slow": 3.25,\n      "fast": 1.5\n     }\n    ],\n` +
        `    "firstMeasuredAt": "${at}",\n    "measuredAt": "${at}"\n   }\n  }\n }\n}\n`,
    );
    assert.equal(readLadderCache(path).problem, undefined);
    const e = new LadderCache(path, () => {}).entry("dawn/vulkan/x", kernel, Date.parse(at));
    assert.deepEqual(e, entry(at));
  });
});

Deno.test("ladder cache: too old, another fingerprint or another version is not used", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/ladder.json`;
    const at = "2026-01-01T00:00:00.000Z";
    const cache = new LadderCache(path, () => {});
    await cache.store("a", kernel.name, entry(at));
    const day = 86_400_000;
    const fresh = new LadderCache(path, () => {});
    assert.ok(fresh.entry("a", kernel, Date.parse(at) + (MAX_AGE_DAYS - 0.5) * day));
    assert.equal(fresh.entry("a", kernel, Date.parse(at) + (MAX_AGE_DAYS + 0.5) * day), undefined);

    const edited = { ...kernel, shaders: ["rmsnorm.wgsl"], name: "cache_test_edited" };
    const other = { ...entry(at), fingerprint: "00000000" };
    await cache.store("a", edited.name, other);
    assert.equal(new LadderCache(path, () => {}).entry("a", edited, Date.parse(at)), undefined);

    await Deno.writeTextFile(path, JSON.stringify({ version: LADDER_VERSION + 1, adapters: {} }));
    const logs: string[] = [];
    assert.equal(new LadderCache(path, (l) => logs.push(l)).entry("a", kernel, 0), undefined);
    assert.match(logs.join("\n"), new RegExp(`not a version ${LADDER_VERSION} ladder cache`));
  });
});

Deno.test("ladder cache: a store keeps what another process wrote since the read", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/ladder.json`;
    const at = "2026-02-02T00:00:00.000Z";
    const mine = new LadderCache(path, () => {});
    assert.equal(mine.entry("a", kernel, Date.parse(at)), undefined); // read (empty) now
    await new LadderCache(path, () => {}).store("b", kernel.name, entry(at));
    await mine.store("a", kernel.name, entry(at));
    const { file } = readLadderCache(path);
    assert.deepEqual(Object.keys(file).sort(), ["a", "b"]);
  });
});
