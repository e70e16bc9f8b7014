/**
 * The GPU check's results: one JSON object (the fields the issue names at the top, the details
 * under them) assembled from what each stage saved, and a Markdown rendering of it. Both are
 * rewritten after every stage, so a run cut short still leaves a report of what it reached.
 * A figure that was not measured is null, and `stages` says why.
 */
import type { GemmRow } from "./gemm_bench.ts";
import type { GenerateMeasurement } from "./generate_bench.ts";
import type { GemvResult } from "./gemv_bench.ts";
import type { GpuInfo } from "./gpu_info.ts";
import { GEMM_KEYS } from "./gpu_check_plan.ts";
import type { LadderDecision } from "../../src/kernels/ladder.ts";
import type { LargeTrainResult } from "./train_large_bench.ts";
import type { TrainRow } from "./train_bench.ts";
import type { LengthsResult } from "./train_lengths_bench.ts";
import type { TestRun } from "./test_subset.ts";
import { markdownTable, num, ratio } from "./report.ts";

export type StageStatus = "ok" | "failed" | "timeout" | "skipped";

export interface StageRecord {
  name: string;
  status: StageStatus;
  seconds: number;
  timeoutS: number;
  error?: string;
}

/** What the stages saved (each stage's JSON), by stage name. */
export interface StageData {
  // Each stage's data also names the adapter it ran on (`adapter`).
  adapter?: { info?: GpuInfo; ladder?: LadderDecision[]; adapter?: string };
  gemm?: { rows?: GemmRow[]; ladder?: LadderDecision[]; adapter?: string };
  gemv?: { gemv?: GemvResult; ladder?: LadderDecision[]; adapter?: string };
  train_50m?: {
    row?: TrainRow;
    batch?: number;
    seq?: number;
    parameters?: number;
    ladder?: LadderDecision[];
    adapter?: string;
  };
  train_7b?: { result?: LargeTrainResult; ladder?: LadderDecision[]; adapter?: string };
  train_8b_1l?: { result?: LengthsResult; ladder?: LadderDecision[]; adapter?: string };
  generate?: {
    rows?: GenerateMeasurement[];
    notes?: string[];
    ladder?: LadderDecision[];
    adapter?: string;
  };
}

export interface RunMeta {
  date: string;
  commit: string | null;
  commitSource: string | null;
  mode: "full" | "small";
  budgetS: number;
  totalS: number;
  deno: string;
  /** The weight shapes measured under each GEMM key, and the GEMV's. */
  shapes: Record<string, unknown>;
  /** Stages that are still to run when this report is written (a partial report). */
  pending: string[];
}

type ByShape = Record<(typeof GEMM_KEYS)[number], number | null>;

function byShape(rows: GemmRow[] | undefined, pick: (r: GemmRow) => number | null): ByShape {
  const out = {} as ByShape;
  for (const key of GEMM_KEYS) {
    const r = rows?.find((x) => x.key === key);
    out[key] = r ? pick(r) : null;
  }
  return out;
}

/** A file-name-safe name for the GPU, for docs/gpu/<date>-<gpu>.json. */
export function gpuSlug(info: GpuInfo | undefined): string {
  const d = info?.description;
  const raw = d ? (d.device || d.description || d.vendor || d.backend) : "unknown";
  return raw.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "unknown";
}

export function assembleResults(
  meta: RunMeta,
  stages: StageRecord[],
  data: StageData,
  testRuns: TestRun[],
  testFiles: string[],
): Record<string, unknown> {
  const info = data.adapter?.info;
  const rows = data.gemm?.rows;
  const gemv = data.gemv?.gemv;
  const t7 = data.train_7b?.result;
  const t50 = data.train_50m?.row;
  const t8 = data.train_8b_1l?.result;
  const gen = data.generate?.rows;
  const f16Reason = rows?.map((r) => "unavailable" in r.denseF16 ? r.denseF16.unavailable : null)
    .find((x) => x !== null) ?? null;
  const ladder = new Map<string, LadderDecision>();
  for (
    const list of [
      data.adapter?.ladder,
      data.gemm?.ladder,
      data.gemv?.ladder,
      data.train_50m?.ladder,
      data.train_7b?.ladder,
      data.train_8b_1l?.ladder,
      data.generate?.ladder,
    ]
  ) {
    for (const d of list ?? []) ladder.set(d.kernel, d);
  }
  const complete = testRuns.filter((r) => !r.incomplete);
  return {
    date: meta.date,
    commit: meta.commit,
    commit_source: meta.commitSource,
    mode: meta.mode,
    adapter: info?.adapter ??
      [data.gemm, data.gemv, data.train_50m, data.train_7b, data.train_8b_1l, data.generate]
        .find((d) => d?.adapter)?.adapter ??
      null,
    suggested_name: `docs/gpu/${meta.date.slice(0, 10)}-${gpuSlug(info)}.json`,
    nf4_gemm_tflops: byShape(rows, (r) => r.nf4.tflops),
    dense_f16_gemm_tflops: byShape(rows, (r) => "tflops" in r.denseF16 ? r.denseF16.tflops : null),
    dense_f32_gemm_tflops: byShape(rows, (r) => r.denseF32.tflops),
    dense_f16_gemm_unavailable: f16Reason,
    gemm_m: rows?.[0]?.m ?? meta.shapes.gemm_m ?? null,
    nf4_gemv_gbps: gemv?.gemvGbps ?? null,
    copy_gbps: gemv?.copyGbps ?? null,
    nf4_gemv_vs_copy: gemv?.ratio ?? null,
    train_7b: t7
      ? {
        tokens_per_second: t7.resident?.tokensPerSecond ?? null,
        peak_gib: t7.resident?.peakGib ?? null,
        batch: t7.batch,
        seq: t7.seq,
        r: t7.r,
        gradient_checkpointing: t7.gradientCheckpointing,
        steps: t7.resident?.stepsS.length ?? 0,
      }
      : null,
    paged_adamw_7b: t7?.paged
      ? {
        paged_to_resident: t7.paged.ratioToResident,
        tokens_per_second: t7.paged.tokensPerSecond,
        peak_gib: t7.paged.peakGib,
        budget_bytes: t7.paged.budgetBytes,
        state_bytes: t7.paged.stateBytes,
        steps: t7.paged.stepsS.length,
      }
      : null,
    train_50m_tokens_per_second: t50?.plain.tokensPerS ?? null,
    // Per length: tokens/s of the median step, and the memory ledger's peak (base included).
    train_8b_1l: t8
      ? {
        r: t8.r,
        gradient_checkpointing: t8.gradientCheckpointing,
        lengths: t8.rows.map((row) => ({
          seq: row.seq,
          tokens_per_second: row.tokensPerSecond,
          peak_gib: row.peakBytes ? row.peakBytes / 2 ** 30 : null,
          steps: row.stepsS.length,
          in_flight: row.inFlight,
        })),
      }
      : null,
    // Per model: prefill and KV-cached decode speed, the cache's precision, the ledger's peak.
    generate: gen?.length
      ? gen.map((m) => ({
        model: m.row.model,
        parameters: m.row.parameters,
        prompt_tokens: m.row.promptTokens,
        new_tokens: m.row.newTokens,
        kv_precision: m.row.kvPrecision,
        prefill_tokens_per_second: m.row.prefillTokensPerS,
        decode_ms_per_token: m.row.decodeMsPerToken,
        decode_tokens_per_second: m.row.decodeTokensPerS,
        uncached_ms_per_token: m.row.uncachedMsPerToken,
        peak_gib: m.peakBytes / 2 ** 30,
        rounds: m.rounds,
      }))
      : null,
    tests: {
      runs: complete.length,
      passed: complete.filter((r) => r.passed).length,
      failed: complete.filter((r) => !r.passed).length,
      incomplete: testRuns.length - complete.length,
      files: testFiles,
      per_run: testRuns.map((r) => ({
        run: r.run,
        passed: r.passed,
        incomplete: r.incomplete,
        seconds: r.seconds,
        files: r.files.map((f) => ({
          file: f.file,
          status: f.status,
          seconds: f.seconds,
          passed_tests: f.passedTests ?? null,
          failed_tests: f.failedTests ?? null,
          tail: f.tail,
        })),
      })),
    },
    stages,
    errors: stages.filter((s) => s.error).map((s) => `${s.name}: ${s.error}`),
    pending: meta.pending,
    budget_s: meta.budgetS,
    total_s: meta.totalS,
    deno: meta.deno,
    shapes: meta.shapes,
    gpu: info ?? null,
    ladder: [...ladder.values()],
    details: {
      gemm: rows ?? null,
      gemv: gemv ?? null,
      train_7b: t7 ?? null,
      train_8b_1l: t8 ?? null,
      generate: gen ? { rows: gen, notes: data.generate?.notes ?? [] } : null,
      train_50m: t50 ? { ...t50, batch: data.train_50m?.batch, seq: data.train_50m?.seq } : null,
    },
  };
}

const TARGETS = {
  gemm: 100,
  gemvRatio: 0.7,
  train50m: 50_000,
  train7b: 6_000,
  train7bGib: 6.5,
  paged: 1.05,
};

function fmt(x: unknown, unit = ""): string {
  return typeof x === "number" && Number.isFinite(x) ? `${num(x)}${unit}` : "not measured";
}

function status(ok: boolean | null, full: boolean): string {
  if (ok === null) return "-";
  if (!full) return "n/a (small shapes)";
  return ok ? "meets" : "below";
}

/** The results as Markdown (headline figures with the issue's targets, then the details). */
export function renderMarkdown(r: Record<string, unknown>): string {
  // deno-lint-ignore no-explicit-any
  const x = r as any;
  const full = x.mode === "full";
  const out: string[] = [];
  out.push(`# qlorad GPU check (${x.mode})`, "");
  out.push(`- date: ${x.date}`);
  out.push(`- commit: ${x.commit ?? "unknown"}${x.commit_source ? ` (${x.commit_source})` : ""}`);
  out.push(`- adapter: \`${x.adapter ?? "not reached"}\``);
  out.push(`- total: ${num(x.total_s)} s of a ${x.budget_s} s budget; deno ${x.deno}`);
  if (x.pending.length) out.push(`- **partial**: still to run: ${x.pending.join(", ")}`);
  if (!full) {
    out.push("- small mode: every stage at tiny shapes; the targets apply to full runs only");
  }
  out.push("");

  const g = (o: Record<string, number | null>, k: string) => o?.[k] ?? null;
  const t7 = x.train_7b ?? x.shapes.train_7b;
  const p7 = x.paged_adamw_7b;
  const rows: string[][] = [];
  for (const k of GEMM_KEYS) {
    const v = g(x.nf4_gemm_tflops, k);
    rows.push([
      `NF4 GEMM M=${x.gemm_m ?? "?"}, W ${k}`,
      fmt(v, " TFLOP/s"),
      `>= ${TARGETS.gemm}`,
      status(v === null ? null : v >= TARGETS.gemm, full),
    ]);
  }
  for (const k of GEMM_KEYS) {
    const f16 = g(x.dense_f16_gemm_tflops, k);
    rows.push([
      `dense f16 / f32 GEMM, W ${k}`,
      `${
        f16 === null
          ? `f16 ${x.dense_f16_gemm_unavailable ?? "not measured"}`
          : fmt(f16, " TFLOP/s")
      } / ${fmt(g(x.dense_f32_gemm_tflops, k), " TFLOP/s")}`,
      "(info)",
      "-",
    ]);
  }
  const gv = x.nf4_gemv_vs_copy;
  rows.push([
    "NF4 GEMV M=1 vs copy",
    `${fmt(x.nf4_gemv_gbps, " GB/s")} vs ${fmt(x.copy_gbps, " GB/s")}${
      gv === null ? "" : ` (${(gv * 100).toFixed(0)}%)`
    }`,
    `>= ${TARGETS.gemvRatio * 100}% of copy`,
    status(gv === null ? null : gv >= TARGETS.gemvRatio, full),
  ]);
  const t50 = x.train_50m_tokens_per_second;
  rows.push([
    "~50M model training",
    fmt(t50, " tok/s"),
    `>= ${TARGETS.train50m}`,
    status(t50 === null ? null : t50 >= TARGETS.train50m, full),
  ]);
  const tps = t7?.tokens_per_second ?? null;
  rows.push([
    `Llama-2-7B shape, bs ${t7?.batch ?? "?"} x ${t7?.seq ?? "?"}, r ${t7?.r ?? "?"}, ckpt`,
    `${fmt(tps, " tok/s")} at ${fmt(t7?.peak_gib, " GiB")} peak`,
    `>= ${TARGETS.train7b} at <= ${TARGETS.train7bGib} GiB`,
    status(tps === null ? null : tps >= TARGETS.train7b && t7.peak_gib <= TARGETS.train7bGib, full),
  ]);
  const pr = p7?.paged_to_resident ?? null;
  rows.push([
    "paged AdamW (1/4 of state), whole step, 7B shape",
    pr === null ? "not measured" : ratio(pr),
    `<= ${TARGETS.paged}x resident`,
    status(pr === null ? null : pr <= TARGETS.paged, full),
  ]);
  const lengths = x.train_8b_1l?.lengths ??
    (x.shapes.train_8b_1l?.lengths ?? []).map((seq: number) => ({ seq }));
  for (const l of lengths) {
    rows.push([
      `Llama-3-8B shape, 1 layer, 1 x ${l.seq}, r ${x.shapes.train_8b_1l?.r ?? "?"}, ckpt`,
      `${fmt(l.tokens_per_second, " tok/s")} at ${fmt(l.peak_gib, " GiB")} peak${
        l.in_flight ? " (step unfinished)" : ""
      }`,
      "(info)",
      "-",
    ]);
  }
  const gens = x.generate ??
    (x.shapes.generate ?? []).map((c: { name: string; prompt_tokens: number }) => ({
      model: c.name,
      prompt_tokens: c.prompt_tokens,
    }));
  for (const m of gens) {
    rows.push([
      `Generation, ${m.model}, prompt ${m.prompt_tokens}, KV ${m.kv_precision ?? "?"}`,
      m.decode_ms_per_token === undefined
        ? "not measured"
        : `prefill ${fmt(m.prefill_tokens_per_second, " tok/s")}; decode ` +
          `${fmt(m.decode_ms_per_token, " ms/tok")} (${
            fmt(m.decode_tokens_per_second, " tok/s")
          }) at ${fmt(m.peak_gib, " GiB")} peak`,
      "(info)",
      "-",
    ]);
  }
  const t = x.tests;
  rows.push([
    "GPU test subset, 3 runs",
    `${t.runs} run${t.runs === 1 ? "" : "s"}: ${t.passed} passed, ${t.failed} failed${
      t.incomplete ? `, ${t.incomplete} incomplete` : ""
    }`,
    "3 passing runs in a row",
    t.runs + t.incomplete === 0 ? "-" : t.passed === 3 && t.failed === 0 ? "meets" : "below",
  ]);
  out.push("## Figures", "", markdownTable(["figure", "measured", "target", "status"], rows), "");

  if (x.details.gemm) {
    out.push("## GEMM (Y = X·Wᵀ)", "");
    out.push(
      markdownTable(
        [
          "key",
          "M",
          "W [out, in]",
          "NF4",
          "dense f32",
          "dense f16",
          "NF4 vs f32 rel. RMS",
          "timing",
        ],
        // deno-lint-ignore no-explicit-any
        x.details.gemm.map((row: any) => [
          row.key,
          row.m,
          `${row.out}x${row.in}`,
          `${num(row.nf4.tflops)} TFLOP/s (${row.nf4.variant})`,
          `${num(row.denseF32.tflops)} TFLOP/s (${row.denseF32.variant})`,
          row.denseF16.tflops === undefined
            ? `n/a (${row.denseF16.unavailable})`
            : `${num(row.denseF16.tflops)} TFLOP/s (${row.denseF16.variant})`,
          num(row.nf4VsF32RelRms),
          row.nf4.method,
        ]),
      ),
      "",
    );
  }
  const d = x.details.gemv;
  if (d) {
    out.push("## GEMV and copy", "");
    out.push(
      `W [${d.out}, ${d.in}], ${d.copies} distinct weights cycled; ${
        num(d.bytesPerCall / 1e6)
      } MB ` +
        `per call, ${num(d.gemvUs)} µs (${d.gemvVariant}): ${num(d.gemvGbps)} GB/s. Copy of ` +
        `${num(d.copyBytes / 1e6)} MB: ${
          num(d.copyGbps)
        } GB/s (read + written). Timing: ${d.method}.`,
      "",
    );
  }
  const d7 = x.details.train_7b;
  if (d7) {
    out.push("## Training at the Llama-2-7B shape", "");
    out.push(
      `${num(d7.parameters / 1e9)}B parameters (random NF4, made on the GPU in ` +
        `${num(d7.modelBuildS)} s), ${
          num(d7.loraParameters / 1e6)
        }M LoRA parameters; warm-up step ` +
        `${fmt(d7.warmupStepS, " s")}.`,
    );
    for (const [name, p] of [["resident", d7.resident], ["paged", d7.paged]] as const) {
      // deno-lint-ignore no-explicit-any
      const pp = p as any;
      if (!pp) continue;
      out.push(
        `- ${name}: steps ${pp.stepsS.map((s: number) => `${num(s)} s`).join(", ")}; ` +
          `${fmt(pp.tokensPerSecond, " tok/s")}; peak ${fmt(pp.peakGib, " GiB")} (` +
          Object.entries(pp.peakByCategoryGib).map(([k, v]) => `${k} ${num(v as number)}`).join(
            ", ",
          ) +
          ")",
      );
    }
    if (d7.note) out.push(`- note: ${d7.note}`);
    out.push("");
  }
  const d8 = x.details.train_8b_1l;
  if (d8) {
    out.push("## Training at the Llama-3-8B shape, 1 layer", "");
    out.push(
      `${num(d8.parameters / 1e6)}M parameters (random NF4, made on the GPU in ` +
        `${num(d8.modelBuildS)} s), ${num(d8.loraParameters / 1e6)}M LoRA parameters; ` +
        `compiling step (up to 64 tokens) ${
          fmt(d8.warmupStepS, " s")
        }. Tokens/s: the median step ` +
        `after a length's first; peak: the memory ledger's, base weights included.`,
    );
    // deno-lint-ignore no-explicit-any
    for (const row of d8.rows as any[]) {
      out.push(
        `- ${row.seq} tokens: steps ${
          row.stepsS.map((v: number) => `${num(v)} s`).join(", ") || "none"
        }; ` +
          `${fmt(row.tokensPerSecond, " tok/s")}; peak ${fmt(row.peakBytes / 2 ** 30, " GiB")} (` +
          Object.entries(row.peakByCategoryBytes).map(([k, v]) =>
            `${k} ${num((v as number) / 2 ** 30)}`
          ).join(", ") + ")" + (row.note ? `; ${row.note}` : ""),
      );
    }
    out.push("");
  }
  const dg = x.details.generate;
  if (dg) {
    out.push("## Generation (prefill and KV-cached decode)", "");
    out.push(
      `LoRA r 16 on all linears, one sequence, random NF4 weights made on the GPU. Prefill: the ` +
        `prompt's forward into the KV cache; decode: one token's forward over the cache and its ` +
        `logits read back, per new token (greedy); uncached: a full forward over the prompt per ` +
        `new token. Peak: the memory ledger's from before the model was made, base weights ` +
        `included.`,
    );
    // deno-lint-ignore no-explicit-any
    for (const m of dg.rows as any[]) {
      const r = m.row;
      out.push(
        `- ${r.model} (${num(r.parameters / 1e6)}M parameters, made in ${num(m.modelBuildS)} s), ` +
          `prompt ${r.promptTokens} + ${r.newTokens} tokens, KV cache ${r.kvPrecision} ` +
          `(${num(m.kvCacheBytes / 2 ** 20)} MiB): prefill ${num(r.prefillMs)} ms ` +
          `(${num(r.prefillTokensPerS)} tok/s); decode ${num(r.decodeMsPerToken)} ms/tok ` +
          `(${num(r.decodeTokensPerS)} tok/s); uncached ${num(r.uncachedMsPerToken)} ms/tok ` +
          `(cache ${ratio(r.uncachedMsPerToken / r.decodeMsPerToken)} faster); ${m.rounds} ` +
          `round${m.rounds === 1 ? "" : "s"}; peak ${num(m.peakBytes / 2 ** 30)} GiB (` +
          Object.entries(m.peakByCategoryBytes).map(([k, v]) =>
            `${k} ${num((v as number) / 2 ** 30)}`
          ).join(", ") + ")",
      );
    }
    for (const n of dg.notes) out.push(`- note: ${n}`);
    out.push("");
  }
  const d50 = x.details.train_50m;
  if (d50) {
    out.push("## Training, ~50M model", "");
    out.push(
      `${d50.model}, ${d50.batch} x ${d50.seq} tokens per step: checkpointing off ` +
        `${num(d50.plain.tokensPerS)} tok/s, on ${num(d50.checkpointed.tokensPerS)} tok/s; paged ` +
        `AdamW (1/4 of state) ${num(d50.paged.tokensPerS)} tok/s ` +
        `(${ratio(d50.paged.ms / d50.plain.ms)} of resident).`,
      "",
    );
  }
  if (t.per_run.length) {
    out.push("## Tests", "");
    const files: string[] = t.files;
    out.push(
      markdownTable(
        ["file", ...t.per_run.map((run: { run: number }) => `run ${run.run}`)],
        files.map((f) => [
          f,
          // deno-lint-ignore no-explicit-any
          ...t.per_run.map((run: any) => {
            // deno-lint-ignore no-explicit-any
            const fr = run.files.find((y: any) => y.file === f);
            return fr ? `${fr.status} ${num(fr.seconds)} s` : "-";
          }),
        ]),
      ),
      "",
    );
  }
  if (x.gpu) {
    const c = x.gpu.capabilities;
    out.push("## Adapter", "");
    out.push(`- features (device): ${x.gpu.deviceFeatures.join(", ") || "none"}`);
    out.push(
      `- capabilities: f16 ${c.f16}, subgroups ${c.subgroups} (${c.subgroupMinSize}-${c.subgroupMaxSize}), ` +
        `timestamps ${c.timestampQuery}, subgroup matrices: ${
          c.subgroupMatrixConfigs.length
            // deno-lint-ignore no-explicit-any
            ? c.subgroupMatrixConfigs.map((m: any) =>
              `${m.componentType}->${m.resultComponentType} ${m.M}x${m.N}x${m.K}`
            ).join(", ")
            : "none"
        }`,
    );
    const l = x.gpu.limits;
    out.push(
      `- limits: maxBufferSize ${l.maxBufferSize}, maxStorageBufferBindingSize ` +
        `${l.maxStorageBufferBindingSize}, maxComputeWorkgroupStorageSize ${l.maxComputeWorkgroupStorageSize}, ` +
        `maxComputeInvocationsPerWorkgroup ${l.maxComputeInvocationsPerWorkgroup}`,
    );
    if (x.ladder.length) {
      out.push(
        `- kernel ladder: ${
          // deno-lint-ignore no-explicit-any
          x.ladder.map((dd: any) => `${dd.kernel} ${dd.variant} (${dd.source})`).join(", ")}`,
      );
    }
    out.push("");
  }
  out.push("## Stages", "");
  out.push(
    markdownTable(
      ["stage", "status", "s", "limit s", "error"],
      // deno-lint-ignore no-explicit-any
      x.stages.map((s: any) => [s.name, s.status, s.seconds.toFixed(1), s.timeoutS, s.error ?? ""]),
    ),
    "",
  );
  return out.join("\n");
}
