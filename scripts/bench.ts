/**
 * The benchmark (`deno task bench`): prints Markdown tables of figures measured side by side in
 * one run (warm-up, interleaved rounds, medians) on this machine's adapter, and writes them as
 * JSON. Sections:
 *   ladder  the kernel variants chosen for this adapter (src/kernels/ladder.ts) and their times
 *   (a) 4-bit matmul vs the best dense f32 matmul, Llama-7B linear shapes ÷8, M = 1..512
 *   (b) dequantization throughput
 *   (c) LoRA overhead on a 4-bit linear
 *   (d) training tokens/s, tiny and ~50M models, gradient checkpointing off and on
 *   (e) paged vs resident optimizer: the AdamW step alone and the whole training step
 *   (f) Dawn vs Deno's own WebGPU on the same kernels
 *   (g) generation tokens/s: prefill, KV-cached decode, uncached (scripts/bench/generate_bench.ts)
 *   (h) opt-in (named in --only): the 1-layer Llama-3-8B shape's training tokens/s and ledger
 *       peak memory at 512, 2,048 and 8,192 tokens, time-boxed (a step at 8,192 tokens takes
 *       many minutes on a CPU adapter)
 *   targets  the issue's CPU-adapter targets, read from the figures above
 *
 *   deno task bench [--quick] [--json bench-results.json] [--only a,b,...] [--no-deno]
 *                   [--lengths 512,2048,8192] [--lengths-box-s 1800] [--lengths-steps 3]
 */
import { parseArgs } from "node:util";
import { GpuContext } from "../src/gpu/context.ts";
import { kernelLadder, ladderKernels } from "../src/kernels/ladder.ts";
import { type BackendRow, benchBackends } from "./bench/backend_bench.ts";
import { benchDequant, type DequantRow } from "./bench/dequant_bench.ts";
import { benchLora, type LoraRow } from "./bench/lora_bench.ts";
import { generateSection } from "./bench/generate_bench.ts";
import {
  benchMatmul,
  type Direction,
  LLAMA7B_LINEARS_DIV8,
  type MatmulRow,
} from "./bench/matmul_bench.ts";
import { benchOptimizer, type OptimizerRow } from "./bench/optimizer_bench.ts";
import { MID_BENCH, parameterCount, TINY_BENCH } from "./bench/random_model.ts";
import { markdownTable, ms, na, num, ratio } from "./bench/report.ts";
import { BENCH_LORA, benchTraining, type TrainRow } from "./bench/train_bench.ts";
import {
  BENCH_LENGTHS,
  benchTrainLengths,
  type LengthsResult,
  LLAMA3_8B_1L,
} from "./bench/train_lengths_bench.ts";
import { LoraLayout } from "../src/model/lora.ts";
import type { Matmul4bitVariant } from "../src/kernels/matmul_4bit.ts";
import type { MatmulVariant } from "../src/kernels/matmul.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "string", default: "bench-results.json" },
    only: { type: "string" },
    "no-deno": { type: "boolean", default: false },
    lengths: { type: "string" },
    "lengths-box-s": { type: "string", default: "1800" },
    "lengths-steps": { type: "string", default: "3" },
  },
});
const quick = values.quick!;
const only = values.only ? new Set(values.only.split(",").map((s) => s.trim())) : undefined;
const want = (section: string) => !only || only.has(section);
/** Opt-in sections run only when --only names them. */
const optIn = (section: string) => only?.has(section) ?? false;

function positiveInts(flag: string, raw: string): number[] {
  const v = raw.split(",").map((x) => Number(x.trim()));
  if (!v.length || v.some((x) => !Number.isInteger(x) || x <= 0)) {
    console.error(`bench: --${flag} must be positive integers (comma-separated), got "${raw}"`);
    Deno.exit(2);
  }
  return v;
}
const lengths = values.lengths ? positiveInts("lengths", values.lengths) : [...BENCH_LENGTHS];
const [lengthsBoxS] = positiveInts("lengths-box-s", values["lengths-box-s"]!);
const [lengthsSteps] = positiveInts("lengths-steps", values["lengths-steps"]!);

const started = performance.now();
const progress = (line: string) =>
  console.error(
    `[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(3)} s] ${line}`,
  );
const out: string[] = [];
const print = (text = "") => {
  console.log(text);
  out.push(text);
};

// A step of (h) may take longer than the GPU watchdog's default 600 s on a CPU adapter: the box is
// that section's limit, so the watchdog (read once, when the context opens) waits as long unless
// told otherwise.
if (optIn("h") && Deno.env.get("QLORAD_GPU_TIMEOUT_S") === undefined) {
  Deno.env.set("QLORAD_GPU_TIMEOUT_S", String(lengthsBoxS + 60));
}
const ctx = await GpuContext.open({ log: progress });
const adapter = ctx.adapterKey;
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  mode: quick ? "quick" : "full",
  adapter,
  deno: Deno.version.deno,
};

print(`# qlorad bench (${quick ? "--quick" : "full"})`);
print();
print(`- date: ${new Date().toISOString().slice(0, 10)}`);
print(`- adapter: \`${adapter}\`${ctx.adapter.fallback ? " (fallback adapter)" : ""}`);
print(
  `- method: every figure is measured side by side in this one run: warm-up, then ` +
    `interleaved rounds (${quick ? 3 : "5-7"} for kernels), median; GPU kernels as one submit ` +
    `of enough dispatches to take ~${quick ? 10 : 25} ms`,
);
print();

// ---- ladder -------------------------------------------------------------------------------
progress("kernel ladder");
const decisions = await kernelLadder.warm(ctx);
results.ladder = decisions;
print("## Kernel ladder (variant chosen for this adapter)");
print();
print(markdownTable(
  ["kernel", "variants: ms per probe run", "chosen", "how"],
  decisions.map((d) => {
    const k = ladderKernels().find((x) => x.name === d.kernel)!;
    const times = d.ms
      ? k.variants.map((v) => `${v} ${d.ms![v] == null ? "failed" : ms(d.ms![v]!)}`).join(", ")
      : "-";
    const how = d.source === "cache" ? `cached (${d.measuredAt?.slice(0, 10) ?? "?"})` : d.source;
    return [d.kernel, times, d.variant, how];
  }),
));
print();
const chosen4 = decisions.find((d) => d.kernel === "matmul_4bit")!.variant as Matmul4bitVariant;
const chosen4t = decisions.find((d) => d.kernel === "matmul_4bit_t")!.variant as Matmul4bitVariant;
const chosenDense = decisions.find((d) => d.kernel === "matmul")!.variant as MatmulVariant;

// ---- (a) ----------------------------------------------------------------------------------
let matmulRows: MatmulRow[] = [];
if (want("a")) {
  progress("(a) 4-bit vs dense matmul");
  const directions: Direction[] = quick ? ["forward"] : ["forward", "backward"];
  matmulRows = await benchMatmul(ctx, {
    shapes: quick ? [LLAMA7B_LINEARS_DIV8[1]] : LLAMA7B_LINEARS_DIV8,
    ms: [1, 16, 128, 512],
    directions,
    // --quick times only the chosen variants; the full run times every variant of both.
    variants4bit: quick ? [...new Set([chosen4, chosen4t])] : undefined,
    variantsDense: quick ? [chosenDense] : undefined,
    rounds: quick ? 3 : 7,
    targetMs: quick ? 10 : 25,
    onRow: (r) => progress(`(a) ${r.direction} ${r.shape} M=${r.m}: ${ratio(r.ratio)}`),
  });
  results.matmul = matmulRows;
  print("## (a) 4-bit matmul vs dense f32 matmul (GFLOP/s)");
  print();
  print(
    "Forward Y[M,out] = X·Wᵀ, backward dX[M,in] = dY·W; W NF4 + double quant, blocksize 64, " +
      "dequantized in registers; dense = the same W in f32. Each side: its fastest variant " +
      "(named); ratio = 4-bit / dense.",
  );
  print();
  print(markdownTable(
    ["product", "W [out, in]", "M", "4-bit GFLOP/s", "dense f32 GFLOP/s", "4-bit / dense"],
    matmulRows.map((r) => [
      `${r.direction === "forward" ? "fwd X·Wᵀ" : "bwd dY·W"} ${r.shape}`,
      `${r.out}x${r.in}`,
      r.m,
      `${num(r.best4bit.gflops)} (${r.best4bit.variant})`,
      `${num(r.bestDense.gflops)} (${r.bestDense.variant})`,
      ratio(r.ratio),
    ]),
  ));
  print();
}

// ---- (b) ----------------------------------------------------------------------------------
if (want("b")) {
  progress("(b) dequantization");
  const shape = { out: 2752, in: 1024 };
  const cases = [
    { name: "NF4 + double quant", quantType: "nf4" as const, doubleQuant: true, ...shape },
    { name: "NF4", quantType: "nf4" as const, doubleQuant: false, ...shape },
    { name: "FP4 + double quant", quantType: "fp4" as const, doubleQuant: true, ...shape },
  ];
  let rows: DequantRow[] = [];
  try {
    rows = await benchDequant(ctx, quick ? cases.slice(0, 1) : cases, {
      rounds: quick ? 3 : 5,
      targetMs: quick ? 10 : 25,
    });
  } catch (e) {
    print(`(b) ${na(e)}`);
  }
  results.dequant = rows;
  print("## (b) Dequantization throughput");
  print();
  print(
    "W [2752, 1024] (Llama-7B gate ÷4) to f32 in memory, blocksize 64, output checked against " +
      "the CPU dequantizer first. GB/s = (codes + absmax read + f32 written) / time.",
  );
  print();
  print(markdownTable(
    ["format", "ms", "Gweights/s", "GB/s"],
    rows.map((r) => [r.name, ms(r.ms), num(r.gparamsPerS), num(r.gbPerS)]),
  ));
  print();
}

// ---- (c) ----------------------------------------------------------------------------------
if (want("c")) {
  progress("(c) LoRA overhead");
  let rows: LoraRow[] = [];
  rows = await benchLora(ctx, quick ? [LLAMA7B_LINEARS_DIV8[1]] : LLAMA7B_LINEARS_DIV8, {
    m: 256,
    rank: 16,
    rounds: quick ? 3 : 5,
    targetMs: quick ? 10 : 25,
    onRow: (r) => progress(`(c) ${r.shape}: +${(100 * r.forwardOverhead).toFixed(1)}%`),
  });
  results.lora = rows;
  print("## (c) LoRA overhead on a 4-bit linear (r = 16, M = 256 tokens)");
  print();
  print(
    "4-bit linear alone vs 4-bit linear + LoRA (the dispatches of src/model/layer.ts). " +
      "Training = forward + backward to the input, plus the LoRA gradients.",
  );
  print();
  print(markdownTable(
    [
      "W [out, in]",
      "fwd ms",
      "fwd + LoRA ms",
      "overhead",
      "train ms",
      "train + LoRA ms",
      "overhead",
    ],
    rows.map((r) => [
      `${r.shape} (${r.out}x${r.in})`,
      ms(r.forwardMs),
      ms(r.forwardLoraMs),
      `${(100 * r.forwardOverhead).toFixed(1)}%`,
      ms(r.trainMs),
      ms(r.trainLoraMs),
      `${(100 * r.trainOverhead).toFixed(1)}%`,
    ]),
  ));
  print();
}

// ---- (d), (e) -----------------------------------------------------------------------------
const trainRows: TrainRow[] = [];
const optimizerRows: OptimizerRow[] = [];
if (want("d") || want("e")) {
  const models = [
    { name: "tiny", cfg: TINY_BENCH, batch: 4, seq: 64, rounds: quick ? 3 : 8 },
    // --quick: a shorter sequence, so the ~50M rows stay within the minute.
    { name: "~50M", cfg: MID_BENCH, batch: 1, seq: quick ? 64 : 256, rounds: quick ? 1 : 5 },
  ];
  for (const m of models) {
    progress(`(d, e) training steps: ${m.name}`);
    trainRows.push(await benchTraining(ctx, m, progress));
    if (want("e")) {
      progress(`(e) optimizer step alone: ${m.name}`);
      const floats = new LoraLayout(m.cfg, BENCH_LORA).totalFloats;
      optimizerRows.push(await benchOptimizer(ctx, m.name, floats, { rounds: quick ? 5 : 11 }));
    }
  }
  results.training = trainRows;
  results.optimizer = optimizerRows;
  print("## (d) Training throughput (tokens/s)");
  print();
  print(
    `LoRA r=${BENCH_LORA.r} on all linears, dropout ${BENCH_LORA.dropout}, NF4 + double quant ` +
      "base; a step = forward, backward, clip, AdamW, loss read back. Engines stepped in " +
      "interleaved rounds. The host columns count one more checkpointed step after the timed " +
      "rounds (ctx.stats): dispatches and submits recorded, bind groups not found in the cache, " +
      "and host milliseconds spent recording and submitting.",
  );
  print();
  print(markdownTable(
    [
      "model",
      "params",
      "tokens/step",
      "ckpt off tok/s",
      "ckpt on tok/s",
      "on / off",
      "activations off",
      "activations on",
      "dispatches / step",
      "submits / step",
      "new bind groups / step",
      "host encode ms / step",
    ],
    trainRows.map((r) => [
      `${r.model} (${r.model === "tiny" ? "hidden 80, 2 layers" : "hidden 512, 16 layers"})`,
      `${(r.parameters / 1e6).toFixed(r.parameters < 1e6 ? 2 : 1)}M`,
      r.tokensPerStep,
      num(r.plain.tokensPerS),
      num(r.checkpointed.tokensPerS),
      ratio(r.checkpointed.tokensPerS / r.plain.tokensPerS),
      `${(r.plain.activationBytes / 2 ** 20).toFixed(1)} MiB`,
      `${(r.checkpointed.activationBytes / 2 ** 20).toFixed(1)} MiB`,
      r.host.dispatches,
      r.host.submits,
      r.host.bindGroupsCreated,
      num(r.host.encodeMs),
    ]),
  ));
  print();
  print("## (e) Paged vs resident optimizer (GPU budget = 1/4 of the AdamW state)");
  print();
  print(markdownTable(
    ["model", "what is timed", "state", "pages", "resident ms", "paged ms", "paged / resident"],
    trainRows.flatMap((r) => {
      const o = optimizerRows.find((x) => x.name === r.model);
      const rows: Array<Array<string | number>> = [];
      if (o) {
        rows.push([
          r.model,
          "AdamW step alone",
          `${(o.stateBytes / 2 ** 20).toFixed(1)} MiB`,
          o.pages,
          ms(o.residentMs),
          ms(o.pagedMs),
          ratio(o.ratio),
        ]);
      }
      rows.push([
        r.model,
        "whole training step",
        `${(r.paged.stateBytes / 2 ** 20).toFixed(1)} MiB`,
        o?.pages ?? "-",
        ms(r.plain.ms),
        ms(r.paged.ms),
        ratio(r.paged.ms / r.plain.ms),
      ]);
      return rows;
    }),
  ));
  print();
}

// ---- (f) ----------------------------------------------------------------------------------
let backendRows: BackendRow[] = [];
if (want("f")) {
  progress("(f) Dawn vs Deno's WebGPU");
  let other: GpuContext | undefined;
  let why = "";
  if (values["no-deno"]) {
    why = "skipped (--no-deno)";
  } else {
    try {
      other = await GpuContext.open({ backend: "deno", log: progress });
    } catch (e) {
      why = na(e).replace(/^n\/a \(|\)$/g, "");
    }
  }
  // The same variants on both sides: this adapter's choices, forced for the duration.
  kernelLadder.setOverrides(decisions.map((d) => `${d.kernel}=${d.variant}`).join(","));
  try {
    backendRows = await benchBackends(ctx, other, why, {
      rounds: quick ? 2 : 3,
      targetMs: quick ? 15 : 40,
      timeoutMs: 90_000,
      onRow: (r) => progress(`(f) ${r.kernel}: ${r.ratio ? ratio(r.ratio) : r.other}`),
    });
  } finally {
    kernelLadder.setOverrides(undefined);
  }
  results.backends = { other: other?.adapterKey ?? null, why, rows: backendRows };
  print("## (f) Dawn vs Deno's own WebGPU, same kernels and variants");
  print();
  print(`- Dawn: \`${adapter}\``);
  print(`- Deno: ${other ? `\`${other.adapterKey}\`` : `n/a (${why})`}`);
  print();
  const cell = (v: number | string) => typeof v === "number" ? ms(v) : `n/a (${v})`;
  print(markdownTable(
    ["kernel", "Dawn ms", "Deno ms", "Deno / Dawn"],
    backendRows.map((r) => [
      r.kernel,
      cell(r.dawn),
      cell(r.other),
      r.ratio ? ratio(r.ratio) : "n/a",
    ]),
  ));
  print();
  other?.destroy();
}

if (want("g")) await generateSection(ctx, { quick, print, progress, results });

// ---- (h) ----------------------------------------------------------------------------------
let lengthsResult: LengthsResult | undefined;
if (optIn("h")) {
  const seconds = lengthsBoxS;
  progress(`(h) 1-layer Llama-3-8B shape at ${lengths.join(", ")} tokens, box ${seconds} s`);
  lengthsResult = await benchTrainLengths(ctx, {
    cfg: LLAMA3_8B_1L,
    lengths,
    maxSteps: lengthsSteps,
    deadline: Date.now() + seconds * 1000,
    onProgress: (line) => progress(`(h) ${line}`),
  });
  results.lengths = { ...lengthsResult, cfg: LLAMA3_8B_1L, boxS: seconds };
  const g = lengthsResult;
  const first = g.rows.find((r) => r.tokensPerSecond !== null);
  const mib = (b: number | undefined) => b === undefined ? "-" : (b / 2 ** 20).toFixed(0);
  print("## (h) Training at Llama-3-8B's shape, 1 layer (tokens/s, peak memory)");
  print();
  print(
    `Vocabulary 128,256, hidden 4,096, GQA 32/8 heads of 128, intermediate 14,336, rope_theta ` +
      `5e5 with llama3 scaling, 1 layer (${(g.parameters / 1e6).toFixed(0)}M parameters, NF4 + ` +
      `double quant, bf16 embedding and lm_head); LoRA r=${g.r} on all linears ` +
      `(${(g.loraParameters / 1e6).toFixed(2)}M), gradient checkpointing, one sequence per step. ` +
      `Random weights made on the GPU in ${g.modelBuildS.toFixed(1)} s; a compiling step at 64 ` +
      `tokens took ${g.warmupStepS?.toFixed(1) ?? "-"} s. Tokens/s = tokens / the median step ` +
      `after a length's first (its new shapes compile), or the only step. Peak = the memory ` +
      `ledger's peak from ` +
      `the engine's creation through its steps, base weights included (exact); engine = the ` +
      `ledger's total once the engine for that length was made, before any step. Time box ` +
      `${seconds} s.`,
  );
  print();
  print(markdownTable(
    [
      "tokens",
      "steps",
      "steps s",
      "tokens/s",
      `tok/s ÷ ${first?.seq ?? "-"}'s`,
      "engine GiB",
      "peak GiB",
      "base MiB",
      "LoRA + grads + AdamW MiB",
      "activations MiB",
      "scratch MiB",
      "note",
    ],
    g.rows.map((r) => {
      // A length that failed has no peak: its categories are the engine's, before any step.
      const c: Record<string, number> = r.error ? r.engineByCategoryBytes : r.peakByCategoryBytes;
      return [
        r.seq,
        r.stepsS.length,
        r.stepsS.length ? r.stepsS.map((v) => num(v)).join(", ") : "-",
        r.tokensPerSecond === null ? "-" : num(r.tokensPerSecond),
        r.tokensPerSecond === null || !first?.tokensPerSecond
          ? "-"
          : ratio(r.tokensPerSecond / first.tokensPerSecond),
        r.engineBytes ? (r.engineBytes / 2 ** 30).toFixed(3) : "-",
        r.peakBytes && !r.error ? (r.peakBytes / 2 ** 30).toFixed(3) : "-",
        mib(c.base_weights),
        c.lora === undefined ? "-" : mib(c.lora + c.gradients + c.optimizer),
        mib(c.activations),
        mib(c.scratch),
        [
          r.error ? `failed: ${r.error} (MiB columns: the engine's, before any step)` : undefined,
          r.note,
          r.inFlight
            ? `peak read with the step in flight, ${
              r.recorded
                ? "after it was recorded (exact)"
                : "before it was recorded (a lower bound)"
            }`
            : undefined,
        ].filter(Boolean).join("; ") || "",
      ];
    }),
  ));
  print();
}

// ---- targets ------------------------------------------------------------------------------
/** pass: the target holds; info: a figure shown next to a target, with its own limit. */
const targets: Array<{ target: string; measured: string; status: string }> = [];
const verdict = (ok: boolean) => ok ? "PASS" : "FAIL";
const fwd = matmulRows.filter((r) => r.direction === "forward" && r.m >= 128);
if (fwd.length) {
  const worst = fwd.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  targets.push({
    target: "4-bit matmul (Y = X·Wᵀ) at M >= 128 >= 0.8x the best dense f32 matmul",
    measured: `min ${ratio(worst.ratio)} (${worst.shape}, M=${worst.m}); all: ${
      fwd.map((r) => ratio(r.ratio)).join(", ")
    }`,
    status: verdict(worst.ratio >= 0.8),
  });
}
const bwd = matmulRows.filter((r) => r.direction === "backward" && r.m >= 128);
if (bwd.length) {
  const worst = bwd.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  targets.push({
    target: "(info) the same for the backward product dX = dY·W",
    measured: `min ${ratio(worst.ratio)} (${worst.shape}, M=${worst.m})`,
    status: worst.ratio >= 0.8 ? "info: >= 0.8x" : "info: < 0.8x",
  });
}
for (const r of trainRows) {
  targets.push({
    target:
      `paged optimizer step (budget 1/4 of state) <= 1.5x resident, whole training step, ${r.model}`,
    measured: ratio(r.paged.ms / r.plain.ms),
    status: verdict(r.paged.ms / r.plain.ms <= 1.5),
  });
}
for (const o of optimizerRows) {
  targets.push({
    target: `(info) the AdamW step alone, ${o.name}`,
    measured: ratio(o.ratio),
    status: o.ratio <= 1.5 ? "info: <= 1.5x" : "info: > 1.5x",
  });
}
results.targets = targets;
if (targets.length) {
  print("## Targets on this adapter");
  print();
  print(markdownTable(
    ["target", "measured", "status"],
    targets.map((t) => [t.target, t.measured, t.status]),
  ));
  print();
}
const seconds = (performance.now() - started) / 1000;
print(`Total bench time: ${seconds.toFixed(0)} s.`);
results.seconds = seconds;
results.markdown = out.join("\n");
results.models = {
  tiny: { ...TINY_BENCH, parameters: parameterCount(TINY_BENCH) },
  mid: { ...MID_BENCH, parameters: parameterCount(MID_BENCH) },
};

await Deno.writeTextFile(values.json!, JSON.stringify(results, null, 1) + "\n");
progress(`wrote ${values.json}`);
// A step of (h) still running on the queue: leave without waiting for it.
if (lengthsResult?.inFlight) Deno.exit(0);
ctx.destroy();
