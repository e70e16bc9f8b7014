/**
 * The kernel ladder: it times and picks a variant that exists for every registered kernel,
 * caches the choice (in memory and on disk: a second ladder reading the file times nothing),
 * honours QLORAD_KERNEL_VARIANTS, and survives a broken or unwritable cache file.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import {
  availableVariants,
  KernelLadder,
  ladderKernels,
  parseVariantOverrides,
  VARIANTS_ENV,
} from "../../src/kernels/ladder.ts";
import { chooseMatmulVariant, MATMUL_VARIANTS } from "../../src/kernels/matmul.ts";
import { chooseMatmul4bitVariant } from "../../src/kernels/matmul_4bit.ts";
import { ATTENTION_VARIANTS, chooseAttentionVariant } from "../../src/kernels/attention.ts";
import { crossEntropyVariant } from "../../src/kernels/cross_entropy.ts";

const quiet = { log: () => {} };

async function tempCache(): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "qlorad-ladder-" });
  return {
    path: `${dir}/sub/ladder.json`,
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
}

gpuTest("every registered kernel gets a timed choice among its own variants", async (ctx) => {
  const names = ladderKernels().map((k) => k.name).sort();
  assert.deepEqual(names, ["attention", "cross_entropy", "matmul", "matmul_4bit", "matmul_4bit_t"]);
  const before = ctx.memory.total;
  const ladder = new KernelLadder({ cachePath: null, overrides: "", ...quiet });
  const decisions = await ladder.warm(ctx);
  assert.equal(ladder.timings, names.length);
  for (const d of decisions) {
    const k = ladderKernels().find((x) => x.name === d.kernel)!;
    assert.equal(d.source, "timed", d.kernel);
    assert.ok(k.variants.includes(d.variant), `${d.kernel}: ${d.variant}`);
    // Every variant this device can run ran and got a time; the choice is the fastest.
    const runnable = availableVariants(ctx, k);
    for (const v of runnable) assert.ok((d.ms?.[v] ?? 0) > 0, `${d.kernel} ${v}: ${d.ms?.[v]}`);
    const best = Math.min(...runnable.map((v) => d.ms![v]!));
    assert.equal(d.ms![d.variant], best);
  }
  // Probe buffers stay outside the memory ledger.
  assert.equal(ctx.memory.total, before);
});

gpuTest(
  "a choice is cached: the second call and a second ladder on the file time nothing",
  async (ctx) => {
    const cache = await tempCache();
    try {
      const first = new KernelLadder({ cachePath: cache.path, overrides: "", ...quiet });
      const a = await first.decide(ctx, "matmul");
      assert.equal(a.source, "timed");
      assert.ok(MATMUL_VARIANTS.includes(a.variant as never));
      assert.equal(first.timings, 1);
      assert.equal((await first.decide(ctx, "matmul")).variant, a.variant);
      assert.equal(first.choice(ctx, "matmul"), a.variant);
      assert.equal(first.timings, 1);
      // Concurrent first uses share one timing.
      await Promise.all([first.decide(ctx, "attention"), first.decide(ctx, "attention")]);
      assert.equal(first.timings, 2);

      const file = JSON.parse(await Deno.readTextFile(cache.path));
      assert.equal(file.adapters[ctx.adapterKey].matmul.variant, a.variant);
      const second = new KernelLadder({ cachePath: cache.path, overrides: "", ...quiet });
      const b = await second.decide(ctx, "matmul");
      assert.equal(b.source, "cache");
      assert.equal(b.variant, a.variant);
      assert.equal(second.choice(ctx, "attention"), first.choice(ctx, "attention"));
      assert.equal(second.timings, 0);
    } finally {
      await cache.cleanup();
    }
  },
);

gpuTest(
  "QLORAD_KERNEL_VARIANTS forces choices without timing and rejects unknown variants",
  async (ctx) => {
    const forced = new KernelLadder({
      cachePath: null,
      overrides: "matmul=tiled, attention = tiled",
      ...quiet,
    });
    assert.equal(await forced.variant(ctx, "matmul"), "tiled");
    assert.equal((await forced.decide(ctx, "attention")).source, "override");
    assert.equal(forced.choice(ctx, "attention"), "tiled");
    assert.equal(forced.timings, 0);
    const bad = new KernelLadder({ cachePath: null, overrides: "matmul=fast", ...quiet });
    await assert.rejects(bad.variant(ctx, "matmul"), /QLORAD_KERNEL_VARIANTS: matmul=fast/);
    assert.throws(() => parseVariantOverrides("matmul"), /"matmul" is not kernel=variant/);

    // The process-wide ladder behind the kernels' choose functions reads the variable at each use.
    const saved = Deno.env.get(VARIANTS_ENV);
    try {
      Deno.env.set(
        VARIANTS_ENV,
        "matmul=tiled,matmul_4bit=tiled,attention=tiled,cross_entropy=tiled",
      );
      assert.equal(chooseMatmulVariant(ctx), "tiled");
      assert.equal(chooseMatmul4bitVariant(ctx), "tiled");
      assert.equal(chooseAttentionVariant(ctx), "tiled");
      assert.equal(crossEntropyVariant(ctx), "tiled");
      Deno.env.set(VARIANTS_ENV, "attention=row");
      assert.equal(chooseAttentionVariant(ctx), "row");
      assert.ok(ATTENTION_VARIANTS.includes(chooseAttentionVariant(ctx)));
    } finally {
      if (saved === undefined) Deno.env.delete(VARIANTS_ENV);
      else Deno.env.set(VARIANTS_ENV, saved);
    }
  },
);

gpuTest("a broken cache file is ignored, timed again and rewritten", async (ctx) => {
  const cache = await tempCache();
  const logs: string[] = [];
  try {
    await Deno.mkdir(cache.path.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(cache.path, "{ not json");
    const ladder = new KernelLadder({
      cachePath: cache.path,
      overrides: "",
      log: (l) => logs.push(l),
    });
    // Before any timing the prior answers; broken files do not throw.
    assert.ok(MATMUL_VARIANTS.includes(ladder.choice(ctx, "matmul") as never));
    const d = await ladder.decide(ctx, "matmul");
    assert.equal(d.source, "timed");
    assert.ok(logs.some((l) => l.includes("ignoring the cache")), logs.join("\n"));
    const file = JSON.parse(await Deno.readTextFile(cache.path));
    assert.equal(file.adapters[ctx.adapterKey].matmul.variant, d.variant);

    // A well-formed file naming a variant that does not exist is not trusted either.
    file.adapters[ctx.adapterKey].matmul.variant = "warp_speed";
    await Deno.writeTextFile(cache.path, JSON.stringify(file));
    const again = new KernelLadder({ cachePath: cache.path, overrides: "", ...quiet });
    assert.equal((await again.decide(ctx, "matmul")).source, "timed");
    assert.equal(again.timings, 1);
  } finally {
    await cache.cleanup();
  }
});

gpuTest("an unwritable cache path keeps the choice in memory", async (ctx) => {
  const cache = await tempCache();
  try {
    // A regular file where the cache's folder should be.
    const blocker = cache.path.replace(/\/[^/]*$/, "");
    await Deno.writeTextFile(blocker, "a file, not a folder");
    const logs: string[] = [];
    const ladder = new KernelLadder({
      cachePath: cache.path,
      overrides: "",
      log: (l) => logs.push(l),
    });
    const d = await ladder.decide(ctx, "matmul");
    assert.ok(MATMUL_VARIANTS.includes(d.variant as never));
    assert.equal((await ladder.decide(ctx, "matmul")).variant, d.variant);
    assert.equal(ladder.timings, 1);
    assert.ok(logs.some((l) => l.includes("cannot write")), logs.join("\n"));
  } finally {
    await cache.cleanup();
  }
});

closeGpuAfterTests();
