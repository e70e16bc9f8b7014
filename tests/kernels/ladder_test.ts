/**
 * The kernel ladder: it times every registered kernel's variants on this adapter and picks the
 * fastest it measured; caches the choice in memory and on disk; times a choice again in a later
 * process while it is unsettled (a close call, or one run against the prior) and merges the runs;
 * re-times choices that are too old or from another ladder version; honours QLORAD_KERNEL_VARIANTS
 * and QLORAD_LADDER=prior, read once per ladder; knows every kernel of src/kernels/registry.ts
 * whatever was imported; puts its probe buffers in the memory ledger; and survives a broken or
 * unwritable cache file. Only the first two tests time for real (and assert nothing about which
 * variant wins); the rest inject fake timings, so no assertion depends on a timing race.
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpuTest } from "../support/gpu.ts";
import {
  availableVariants,
  CLOSE,
  isSettled,
  KernelLadder,
  kernelLadder,
  LADDER_VERSION,
  type LadderKernel,
  ladderKernels,
  type LadderProbe,
  MAX_AGE_DAYS,
  MAX_RUNS,
  mergeRuns,
  MODE_ENV,
  parseVariantOverrides,
  ProbeBuffers,
  type RunTimes,
  VARIANTS_ENV,
} from "../../src/kernels/ladder.ts";
import type { DispatchBatch, GpuContext } from "../../src/gpu/context.ts";
import { encodeFill } from "../../src/kernels/fill.ts";
import { chooseMatmulVariant } from "../../src/kernels/matmul.ts";
import { chooseMatmul4bitVariant } from "../../src/kernels/matmul_4bit.ts";
import {
  ATTENTION_LADDER,
  ATTENTION_VARIANTS,
  chooseAttentionVariant,
} from "../../src/kernels/attention.ts";
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
  // Every kernel of the registry, though this file imports only some kernel modules.
  const names = ladderKernels().map((k) => k.name).sort();
  assert.deepEqual(names, [
    "adamw",
    "attention",
    "cross_entropy",
    "grad_norm",
    "matmul",
    "matmul_4bit",
    "matmul_4bit_t",
    "rmsnorm",
  ]);
  const before = ctx.memory.total;
  const ladder = new KernelLadder({ cachePath: null, overrides: "", mode: "time", ...quiet });
  const decisions = await ladder.warm(ctx);
  assert.equal(ladder.timings, names.length);
  for (const d of decisions) {
    const k = ladderKernels().find((x) => x.name === d.kernel)!;
    assert.equal(d.source, "timed", d.kernel);
    assert.ok(k.variants.includes(d.variant), `${d.kernel}: ${d.variant}`);
    // Every variant the device can run ran and got a time, the others none; the choice is the
    // fastest.
    const runnable = availableVariants(ctx, k);
    for (const v of runnable) assert.ok((d.ms?.[v] ?? 0) > 0, `${d.kernel} ${v}: ${d.ms?.[v]}`);
    for (const v of k.variants) if (!runnable.includes(v)) assert.equal(d.ms?.[v], undefined);
    const best = Math.min(...runnable.map((v) => d.ms![v]!));
    assert.equal(d.ms![d.variant], best);
  }
  // Probe buffers are freed after each timing.
  assert.equal(ctx.memory.total, before);
});

gpuTest(
  "probe buffers are in the memory ledger as scratch while a kernel is timed",
  async (ctx) => {
    // A kernel of two fill variants whose probe holds 2 x 1003 floats; its run notes the ledger.
    const seen: number[] = [];
    const fillKernel: LadderKernel = {
      name: "fill_probe",
      variants: ["first", "second"],
      prior: () => "first",
      shaders: ["fill.wgsl"],
      probe: (ctx): Promise<LadderProbe> => {
        const bufs = new ProbeBuffers(ctx);
        const a = bufs.random("ladder.fill.a", 1003, 7);
        const b = bufs.empty("ladder.fill.b", 1003 * 4);
        return Promise.resolve({
          run: async (batch: DispatchBatch) => {
            seen.push(ctx.memory.current().scratch);
            await encodeFill(ctx, batch, a, 1);
            await encodeFill(ctx, batch, b, 2);
          },
          destroy: () => bufs.destroy(),
        });
      },
    };
    const scratch = ctx.memory.current().scratch;
    const ladder = new KernelLadder({
      cachePath: null,
      overrides: "",
      mode: "time",
      kernels: [fillKernel],
      ...quiet,
    });
    const d = await ladder.decide(ctx, "fill_probe");
    assert.equal(d.source, "timed");
    // 1003 floats round up to 4016 bytes each (createBuffer pads to 16).
    assert.ok(seen.length > 0);
    for (const s of seen) assert.equal(s - scratch, 2 * 4016);
    assert.equal(ctx.memory.current().scratch, scratch);
  },
);

/** Fake timing runs, one table per run: ms by role (the prior, the other variant); every other
 * variant gets 1000 ms so it never wins. Counts the runs it served. */
function fakeTimings(
  ctx: GpuContext,
  kernel: string,
  tables: Array<{ prior: number; other: number }>,
) {
  const k = ladderKernels().find((x) => x.name === kernel)!;
  const prior = k.prior(ctx);
  const other = k.variants.find((v) => v !== prior)!;
  const served = { runs: 0 };
  const timeVariants = (_ctx: GpuContext, _k: LadderKernel, variants: string[]) => {
    const t = tables[served.runs++];
    if (!t) throw new Error(`fake timing: no table for run ${served.runs}`);
    const ms: RunTimes = {};
    for (const v of variants) ms[v] = v === prior ? t.prior : v === other ? t.other : 1000;
    return Promise.resolve({ ms });
  };
  return { prior, other, served, timeVariants };
}

gpuTest(
  "a clear choice that agrees with the prior is settled: a second ladder on the file times nothing",
  async (ctx) => {
    const cache = await tempCache();
    try {
      const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 4, other: 9 }]);
      const opts = { cachePath: cache.path, overrides: "", mode: "time" as const, ...quiet };
      const first = new KernelLadder({ ...opts, timeVariants: fake.timeVariants });
      const a = await first.decide(ctx, "matmul_4bit");
      assert.equal(a.source, "timed");
      assert.equal(a.variant, fake.prior);
      assert.equal(a.settled, true);
      assert.equal((await first.decide(ctx, "matmul_4bit")).variant, a.variant);
      assert.equal(first.choice(ctx, "matmul_4bit"), a.variant);
      assert.equal(first.timings, 1);

      const file = JSON.parse(await Deno.readTextFile(cache.path));
      const entry = file.adapters[ctx.adapterKey].matmul_4bit;
      assert.equal(entry.variant, fake.prior);
      assert.equal(entry.runs.length, 1);
      const second = new KernelLadder({ ...opts, timeVariants: fake.timeVariants });
      const b = await second.decide(ctx, "matmul_4bit");
      assert.equal(b.source, "cache");
      assert.equal(b.variant, a.variant);
      assert.equal(second.timings, 0);
      assert.equal(fake.served.runs, 1);
    } finally {
      await cache.cleanup();
    }
  },
);

gpuTest("concurrent first uses share one timing", async (ctx) => {
  const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 4, other: 9 }]);
  const ladder = new KernelLadder({
    cachePath: null,
    overrides: "",
    mode: "time",
    timeVariants: fake.timeVariants,
    ...quiet,
  });
  const [a, b] = await Promise.all([
    ladder.decide(ctx, "matmul_4bit"),
    ladder.decide(ctx, "matmul_4bit"),
  ]);
  assert.equal(a, b);
  assert.equal(ladder.timings, 1);
});

gpuTest(
  "a noisy run that overrules the prior is timed again; the merged runs decide and then settle",
  async (ctx) => {
    const cache = await tempCache();
    try {
      // Run 1 on a loaded machine: the other variant looks twice as fast. Run 2, quiet: the
      // prior is 2.5x faster. Ratios to each run's fastest: other [1, 2.5] -> median 1.75;
      // prior [2, 1] -> 1.5. The prior wins by 1.75 / 1.5 - 1 = 16.7% >= CLOSE: settled.
      const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 10, other: 5 }, {
        prior: 8,
        other: 20,
      }]);
      const opts = {
        cachePath: cache.path,
        overrides: "",
        mode: "time" as const,
        timeVariants: fake.timeVariants,
        ...quiet,
      };
      const first = new KernelLadder(opts);
      const a = await first.decide(ctx, "matmul_4bit");
      assert.equal(a.variant, fake.other);
      assert.equal(a.settled, false); // one run against the prior: to be confirmed
      // Until it is timed again, a later process still starts from the cached choice.
      assert.equal(new KernelLadder(opts).choice(ctx, "matmul_4bit"), fake.other);

      const second = new KernelLadder(opts);
      const b = await second.decide(ctx, "matmul_4bit");
      assert.equal(second.timings, 1);
      assert.equal(b.source, "timed");
      assert.equal(b.variant, fake.prior);
      assert.equal(b.runs?.length, 2);
      assert.equal(b.ms?.[fake.prior], 1.5);
      assert.equal(b.ms?.[fake.other], 1.75);
      assert.equal(b.settled, true);

      const third = new KernelLadder(opts);
      const c = await third.decide(ctx, "matmul_4bit");
      assert.equal(third.timings, 0);
      assert.equal(c.source, "cache");
      assert.equal(c.variant, fake.prior);
      assert.equal(fake.served.runs, 2);
    } finally {
      await cache.cleanup();
    }
  },
);

gpuTest(
  "a close call is timed again by later processes, runs merged, and settles after MAX_RUNS",
  async (ctx) => {
    const cache = await tempCache();
    try {
      // Ratios: run 1 prior 1, other 1.05; run 2 prior 1.1, other 1; run 3 prior 1, other 1.02.
      // Medians: prior 1, other 1.02 -> the prior, by 2% (< CLOSE) but with MAX_RUNS runs.
      const fake = fakeTimings(ctx, "matmul_4bit", [
        { prior: 10, other: 10.5 },
        { prior: 11, other: 10 },
        { prior: 5, other: 5.1 },
      ]);
      const opts = {
        cachePath: cache.path,
        overrides: "",
        mode: "time" as const,
        timeVariants: fake.timeVariants,
        ...quiet,
      };
      const settledAfter: boolean[] = [];
      for (let run = 1; run <= MAX_RUNS; run++) {
        const ladder = new KernelLadder(opts);
        const d = await ladder.decide(ctx, "matmul_4bit");
        assert.equal(ladder.timings, 1, `process ${run}`);
        assert.equal(d.runs?.length, run);
        settledAfter.push(d.settled!);
      }
      assert.deepEqual(settledAfter, [false, false, true]);
      const file = JSON.parse(await Deno.readTextFile(cache.path));
      const entry = file.adapters[ctx.adapterKey].matmul_4bit;
      assert.equal(entry.runs.length, MAX_RUNS);
      assert.equal(entry.variant, fake.prior);
      const last = new KernelLadder(opts);
      assert.equal((await last.decide(ctx, "matmul_4bit")).variant, fake.prior);
      assert.equal(last.timings, 0);
      assert.equal(fake.served.runs, MAX_RUNS);
    } finally {
      await cache.cleanup();
    }
  },
);

gpuTest("a choice older than MAX_AGE_DAYS is timed from scratch, not merged", async (ctx) => {
  const cache = await tempCache();
  try {
    const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 4, other: 9 }, { prior: 9, other: 4 }]);
    let now = Date.parse("2026-01-01T00:00:00Z");
    const opts = {
      cachePath: cache.path,
      overrides: "",
      mode: "time" as const,
      timeVariants: fake.timeVariants,
      now: () => now,
      ...quiet,
    };
    assert.equal((await new KernelLadder(opts).decide(ctx, "matmul_4bit")).variant, fake.prior);
    now += (MAX_AGE_DAYS - 1) * 86_400_000;
    const young = new KernelLadder(opts);
    await young.decide(ctx, "matmul_4bit");
    assert.equal(young.timings, 0);
    now += 2 * 86_400_000;
    const old = new KernelLadder(opts);
    const d = await old.decide(ctx, "matmul_4bit");
    assert.equal(old.timings, 1);
    assert.equal(d.runs?.length, 1); // the old run is dropped, not merged
    assert.equal(d.variant, fake.other);
    const file = JSON.parse(await Deno.readTextFile(cache.path));
    assert.equal(
      file.adapters[ctx.adapterKey].matmul_4bit.firstMeasuredAt,
      new Date(now).toISOString(),
    );
  } finally {
    await cache.cleanup();
  }
});

gpuTest("a cache written by another ladder version is ignored and rewritten", async (ctx) => {
  const cache = await tempCache();
  const logs: string[] = [];
  try {
    const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 4, other: 9 }]);
    await Deno.mkdir(cache.path.replace(/\/[^/]*$/, ""), { recursive: true });
    const stale = {
      version: LADDER_VERSION - 1,
      adapters: { [ctx.adapterKey]: { matmul_4bit: { variant: fake.other, fingerprint: "x" } } },
    };
    await Deno.writeTextFile(cache.path, JSON.stringify(stale));
    const ladder = new KernelLadder({
      cachePath: cache.path,
      overrides: "",
      mode: "time",
      timeVariants: fake.timeVariants,
      log: (l) => logs.push(l),
    });
    assert.equal(ladder.choice(ctx, "matmul_4bit"), fake.prior); // not the stale choice
    const d = await ladder.decide(ctx, "matmul_4bit");
    assert.equal(d.source, "timed");
    assert.ok(logs.some((l) => l.includes(`not a version ${LADDER_VERSION}`)), logs.join("\n"));
    const file = JSON.parse(await Deno.readTextFile(cache.path));
    assert.equal(file.version, LADDER_VERSION);
    assert.equal(file.adapters[ctx.adapterKey].matmul_4bit.variant, fake.prior);
  } finally {
    await cache.cleanup();
  }
});

gpuTest(
  "prior mode (QLORAD_LADDER=prior) times nothing and answers each kernel's prior",
  async (ctx) => {
    const ladder = new KernelLadder({ cachePath: null, overrides: "", mode: "prior", ...quiet });
    for (const k of ladderKernels()) {
      const d = await ladder.decide(ctx, k.name);
      assert.equal(d.source, "prior");
      assert.equal(d.variant, k.prior(ctx));
      assert.equal(ladder.choice(ctx, k.name), k.prior(ctx));
    }
    assert.equal(ladder.timings, 0);
    const env = new Map([[MODE_ENV, "prior"]]);
    const fromEnv = new KernelLadder({ cachePath: null, overrides: "", env, ...quiet });
    assert.equal((await fromEnv.decide(ctx, "matmul")).source, "prior");
    const bad = new KernelLadder({
      cachePath: null,
      overrides: "",
      env: new Map([[MODE_ENV, "fastest"]]),
      ...quiet,
    });
    await assert.rejects(bad.decide(ctx, "matmul"), /QLORAD_LADDER: "fastest"/);
  },
);

gpuTest("a ladder reads its settings once, at its first use", async (ctx) => {
  const reads: string[] = [];
  const values = new Map([[VARIANTS_ENV, "matmul=tiled"], [MODE_ENV, "prior"]]);
  const env = { get: (n: string) => (reads.push(n), values.get(n)) };
  const ladder = new KernelLadder({ cachePath: null, env, ...quiet });
  assert.equal(reads.length, 0); // nothing at construction
  assert.equal(ladder.choice(ctx, "matmul"), "tiled");
  const once = reads.length;
  assert.ok(once > 0);
  values.set(VARIANTS_ENV, "matmul=blocked");
  for (let i = 0; i < 5; i++) assert.equal(await ladder.variant(ctx, "matmul"), "tiled");
  assert.equal(ladder.choice(ctx, "attention"), ATTENTION_LADDER.prior(ctx));
  // Overrides set on the ladder, then dropped: back to the ones read at first use.
  ladder.setOverrides("matmul=blocked");
  assert.equal(ladder.choice(ctx, "matmul"), "blocked");
  assert.deepEqual([...ladder.overrides], [["matmul", "blocked"]]);
  ladder.setOverrides(undefined);
  assert.equal(ladder.choice(ctx, "matmul"), "tiled");
  assert.equal(reads.length, once);
});

Deno.test("mergeRuns: ratios to each run's fastest, medians, failures out, ties to the earlier", () => {
  const v = ["a", "b", "c"];
  // One run: ratios a 1, b 2, c 1.5.
  const one = mergeRuns([{ a: 2, b: 4, c: 3 }], v);
  assert.deepEqual(one.score, { a: 1, b: 2, c: 1.5 });
  assert.equal(one.best, "a");
  assert.equal(one.margin, 0.5);
  // A run at ten times the load weighs the same: a [1, 1.2, 1] -> 1; b [2, 1, 3] -> 2;
  // c failed once -> out.
  const three = mergeRuns(
    [{ a: 2, b: 4, c: 3 }, { a: 60, b: 50, c: null }, { a: 1, b: 3, c: 2 }],
    v,
  );
  assert.deepEqual(three.score, { a: 1, b: 2, c: null });
  assert.equal(three.best, "a");
  assert.equal(three.margin, 1);
  // Equal scores: the earlier variant, and a margin of 0 (a close call).
  const tie = mergeRuns([{ a: 5, b: 5 }], ["a", "b"]);
  assert.equal(tie.best, "a");
  assert.equal(tie.margin, 0);
  // Nothing ran.
  assert.equal(mergeRuns([{ a: null, b: null }], ["a", "b"]).best, undefined);
  // Settled: MAX_RUNS runs; or a clear margin that agrees with the prior or has two runs.
  const clear = mergeRuns([{ a: 1, b: 2 }], ["a", "b"]);
  assert.equal(isSettled([{ a: 1, b: 2 }], clear, "a"), true);
  assert.equal(isSettled([{ a: 1, b: 2 }], clear, "b"), false);
  const close = mergeRuns([{ a: 1, b: 1.05 }], ["a", "b"]);
  assert.ok(close.margin < CLOSE);
  assert.equal(isSettled([{ a: 1, b: 1.05 }], close, "a"), false);
  assert.equal(isSettled(Array(MAX_RUNS).fill({ a: 1, b: 1.05 }), close, "a"), true);
});

gpuTest(
  "QLORAD_KERNEL_VARIANTS forces choices without timing and rejects unknown variants",
  async (ctx) => {
    const forced = new KernelLadder({
      cachePath: null,
      overrides: "matmul=tiled, attention = tiled",
      mode: "time",
      ...quiet,
    });
    assert.equal(await forced.variant(ctx, "matmul"), "tiled");
    assert.equal((await forced.decide(ctx, "attention")).source, "override");
    assert.equal(forced.choice(ctx, "attention"), "tiled");
    assert.equal(forced.timings, 0);
    const bad = new KernelLadder({ cachePath: null, overrides: "matmul=fast", ...quiet });
    await assert.rejects(bad.variant(ctx, "matmul"), /QLORAD_KERNEL_VARIANTS: matmul=fast/);
    assert.throws(() => parseVariantOverrides("matmul"), /"matmul" is not kernel=variant/);

    // The process-wide ladder behind the kernels' choose functions: overrides set on it (as a
    // benchmark forces variants) apply at once, and undefined goes back to the settings'.
    try {
      kernelLadder.setOverrides(
        "matmul=tiled,matmul_4bit=tiled,attention=tiled,cross_entropy=tiled",
      );
      assert.equal(chooseMatmulVariant(ctx), "tiled");
      assert.equal(chooseMatmul4bitVariant(ctx), "tiled");
      assert.equal(chooseAttentionVariant(ctx), "tiled");
      assert.equal(crossEntropyVariant(ctx), "tiled");
      kernelLadder.setOverrides("attention=row");
      assert.equal(chooseAttentionVariant(ctx), "row");
      assert.ok(ATTENTION_VARIANTS.includes(chooseAttentionVariant(ctx)));
      assert.throws(() => kernelLadder.setOverrides("attention"), /QLORAD_KERNEL_VARIANTS/);
    } finally {
      kernelLadder.setOverrides(undefined);
    }
  },
);

gpuTest("a broken cache file is ignored, timed again and rewritten", async (ctx) => {
  const cache = await tempCache();
  const logs: string[] = [];
  try {
    const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 4, other: 9 }, { prior: 4, other: 9 }]);
    await Deno.mkdir(cache.path.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(cache.path, "{ not json");
    const opts = {
      cachePath: cache.path,
      overrides: "",
      mode: "time" as const,
      timeVariants: fake.timeVariants,
    };
    const ladder = new KernelLadder({ ...opts, log: (l) => logs.push(l) });
    // Before any timing the prior answers; broken files do not throw.
    assert.equal(ladder.choice(ctx, "matmul_4bit"), fake.prior);
    const d = await ladder.decide(ctx, "matmul_4bit");
    assert.equal(d.source, "timed");
    assert.ok(logs.some((l) => l.includes("ignoring the cache")), logs.join("\n"));
    const file = JSON.parse(await Deno.readTextFile(cache.path));
    assert.equal(file.adapters[ctx.adapterKey].matmul_4bit.variant, d.variant);

    // A well-formed file naming a variant that does not exist is not trusted either.
    file.adapters[ctx.adapterKey].matmul_4bit.variant = "warp_speed";
    await Deno.writeTextFile(cache.path, JSON.stringify(file));
    const again = new KernelLadder({ ...opts, ...quiet });
    assert.equal((await again.decide(ctx, "matmul_4bit")).source, "timed");
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
    const fake = fakeTimings(ctx, "matmul_4bit", [{ prior: 4, other: 9 }]);
    const ladder = new KernelLadder({
      cachePath: cache.path,
      overrides: "",
      mode: "time",
      timeVariants: fake.timeVariants,
      log: (l) => logs.push(l),
    });
    const d = await ladder.decide(ctx, "matmul_4bit");
    assert.equal(d.variant, fake.prior);
    assert.equal((await ladder.decide(ctx, "matmul_4bit")).variant, d.variant);
    assert.equal(ladder.timings, 1);
    assert.ok(logs.some((l) => l.includes("cannot write")), logs.join("\n"));
  } finally {
    await cache.cleanup();
  }
});

closeGpuAfterTests();
