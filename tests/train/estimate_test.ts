/**
 * The memory estimator against the allocator: the engine is built on a tiny model and a ~56M
 * parameter model, run for one training step (so the per-context attention-backward scratch
 * exists), and the ledger's per-category peaks are compared with estimateMemory, with
 * checkpointing on and off, f32 and f16 checkpoints, and a paged optimizer; what f16 checkpoints
 * save is compared to the byte. Plus numbers checked by hand and the CLI.
 */
import assert from "node:assert/strict";
import { GpuContext } from "../../src/gpu/context.ts";
import { MEMORY_CATEGORIES, type MemoryBytes } from "../../src/gpu/memory.ts";
import { LINEAR_MODULES, type LinearModule, linearShape } from "../../src/model/config.ts";
import type { LlamaConfig } from "../../src/model/config.ts";
import { LoraLayout, type LoraSpec } from "../../src/model/lora.ts";
import { type HostLayer, uploadBaseModel } from "../../src/model/load.ts";
import type { BaseModel } from "../../src/model/base_model.ts";
import { quantizeWeight } from "../../src/quant/quant_state.ts";
import { TrainingEngine } from "../../src/train/engine.ts";
import {
  compareTrainingSetups,
  estimateMemory,
  type EstimateSettings,
  llamaPresets,
  type MemoryEstimate,
  PAPER_LORA,
  quantWeightBytes,
} from "../../src/train/estimate.ts";
import { runEstimateCommand } from "../../src/cli/estimate.ts";
import { Rng } from "../../src/util/random.ts";
import { randomBatch, TINY, tinySetup } from "../model/setup.ts";

// ---- numbers checked by hand ---------------------------------------------------------------

Deno.test("hand-checked: one [4096, 4096] NF4+DQ blocksize-64 weight", () => {
  // n = 16,777,216 elements:
  //   packed codes   n/2                          = 8,388,608 bytes
  //   absmax codes   n/64 blocks, one byte each   =   262,144
  //   nested absmax  262,144/256 = 1,024 f32      =     4,096
  //   total                                       = 8,654,848 bytes = 4.12695 bits/param
  // (4 + 8/64 + 32/(64*256)). The code tables are shader constants, not buffers. Each size is
  // a multiple of 16, so createBuffer's padding adds nothing here.
  const b = quantWeightBytes([4096, 4096], 64, true);
  assert.deepEqual(b, {
    packed: 8_388_608,
    absmax: 262_144,
    nestedAbsmax: 4_096,
    total: 8_654_848,
  });
  assert.equal((b.total * 8) / 4096 ** 2, 4 + 8 / 64 + 32 / (64 * 256));
  // Without double quant the absmax is f32 (1 MiB) and the nested buffer a 16-byte dummy.
  assert.equal(quantWeightBytes([4096, 4096], 64, false).total, 8_388_608 + 1_048_576 + 16);
  // Padding: [3, 5] has 15 elements -> 8 packed bytes -> one 16-byte buffer; 1 block -> 16.
  assert.deepEqual(quantWeightBytes([3, 5], 64, true), {
    packed: 16,
    absmax: 16,
    nestedAbsmax: 16,
    total: 48,
  });
});

Deno.test("hand-checked: LoRA r=64 on all 7 modules of Llama-2 7B has 159,907,840 parameters", () => {
  // Per layer r*(in+out): q, k, v, o: 64*(4096+4096) = 524,288 each -> 2,097,152;
  // gate, up, down: 64*(4096+11008) = 966,656 each -> 2,899,968; sum 4,997,120; x 32 layers.
  const cfg = llamaPresets["7b"].cfg;
  const layout = new LoraLayout(cfg, PAPER_LORA);
  assert.equal(layout.parameterCount, 159_907_840);
  // Every tensor is a multiple of 64 floats, so the flat buffers have no padding.
  const e = estimateMemory(cfg, settings(PAPER_LORA, 1, 512, true, 0));
  assert.equal(e.loraParameters, 159_907_840);
  assert.equal(e.bytes.lora, 159_907_840 * 4);
  assert.equal(e.bytes.gradients, 159_907_840 * 4);
  assert.equal(e.bytes.optimizer, 2 * 159_907_840 * 4);
  assert.equal(e.baseParameters, 6_738_415_616);
});

Deno.test("hand-checked: Llama 65B in NF4+DQ and the paper's comparison rows", () => {
  // 65B: hidden 8192, intermediate 22016, 80 layers, 64 heads (no GQA), vocab 32000.
  // q, k, v, o: [8192, 8192], n = 67,108,864: packed 33,554,432 + codes 1,048,576
  //   + nested 4,096 f32 = 16,384 -> 34,619,392 bytes.
  // gate, up, down: n = 180,355,072: packed 90,177,536 + codes 2,818,048
  //   + nested 11,008 f32 = 44,032 -> 93,039,616 bytes.
  // Per layer 4*34,619,392 + 3*93,039,616 = 417,596,416; x 80 = 33,407,713,280 (33.41 GB).
  // Beside them: embed + lm_head in bf16 2*32000*8192*2 = 1,048,576,000 (one chunk each with no
  // binding limit); f32 norms 161*8192*4 = 5,275,648; rope inverse frequencies 64*4 = 256.
  // Base weights 34,461,565,184 bytes.
  const cfg = llamaPresets["65b"].cfg;
  const e = estimateMemory(cfg, settings(PAPER_LORA, 1, 512, true, 0));
  const linears = e.details.filter((d) => d.name.includes("_proj"));
  assert.equal(linears.reduce((s, d) => s + d.bytes, 0), 33_407_713_280);
  assert.equal(e.bytes.base_weights, 34_461_565_184);
  // At lavapipe's 128 MiB binding limit a row of 8,192 bf16 is 16,384 bytes, so a chunk holds
  // 8,192 rows (134,217,728 bytes): 32,000 rows are 3 such chunks and one of 7,424 rows. Every
  // chunk is a multiple of 16 bytes, so the total is unchanged.
  const split = estimateMemory(cfg, {
    ...settings(PAPER_LORA, 1, 512, true, 0),
    maxBindingBytes: 134_217_728,
  });
  assert.equal(split.bytes.base_weights, 34_461_565_184);
  assert.deepEqual(
    split.details.filter((d) => d.name.startsWith("embed_tokens")).map((d) => [d.count, d.each]),
    [[3, 134_217_728], [1, 7424 * 8192 * 2]],
  );
  assert.equal(e.quantizedParameters, 64_760_053_760);
  // 4.127 bits per quantized parameter.
  assert.ok(Math.abs((33_407_713_280 * 8) / 64_760_053_760 - 4.127) < 1e-3);

  // The paper's full fine-tuning argument: 65.29e9 parameters x (2 + 2 + 8) bytes = 783.4 GB
  // of weights, gradients and Adam state (">780 GB").
  const [full, lora16, qlora] = compareTrainingSetups(cfg, 512, 1);
  const P = 65_285_660_672;
  assert.equal(e.baseParameters, P);
  assert.equal(full.bytes.base_weights + full.bytes.gradients + full.bytes.optimizer, 12 * P);
  // 16-bit LoRA: 2 B per frozen parameter + 12 B per LoRA parameter (799,539,200 of them).
  assert.equal(
    lora16.bytes.base_weights + lora16.bytes.lora + lora16.bytes.gradients +
      lora16.bytes.optimizer,
    2 * P + 12 * 799_539_200,
  );
  assert.equal(qlora.total, e.total);
  assert.ok(full.total > lora16.total && lora16.total > qlora.total);
  // f16 checkpoints change the QLoRA row only (the 16-bit rows already halve every activation).
  const with16 = compareTrainingSetups(cfg, 512, 1, { activationPrecision: "f16" });
  const e16 = estimateMemory(cfg, {
    ...settings(PAPER_LORA, 1, 512, true, 0),
    activationPrecision: "f16",
  });
  assert.equal(with16[2].total, e16.total);
  assert.equal(e.total - e16.total, 80 * 512 * 8192 * 2);
  assert.deepEqual([with16[0].total, with16[1].total], [full.total, lora16.total]);
});

// ---- the allocator's ledger vs the estimate ------------------------------------------------

function settings(
  lora: LoraSpec,
  batch: number,
  seq: number,
  gradientCheckpointing: boolean,
  optimizerGpuBudgetBytes: number,
): EstimateSettings {
  return {
    lora,
    microBatchSize: batch,
    maxSeqLen: seq,
    gradientCheckpointing,
    optimizerGpuBudgetBytes,
  };
}

function formatRow(name: string, measured: number, estimated: number): string {
  const diff = estimated - measured;
  const rel = measured === 0 ? (estimated === 0 ? 0 : Infinity) : diff / measured;
  return `  ${name.padEnd(12)} measured ${String(measured).padStart(11)}  estimated ${
    String(estimated).padStart(11)
  }  diff ${String(diff).padStart(7)} (${(100 * rel).toFixed(3)}%)`;
}

/**
 * Within 10% per category that holds at least 1% of the total, within 1% of the total for
 * the others, and within 10% on the total.
 */
function assertClose(
  label: string,
  peak: MemoryBytes,
  peakTotal: number,
  est: MemoryEstimate,
): void {
  console.log(
    `${label}\n${MEMORY_CATEGORIES.map((c) => formatRow(c, peak[c], est.bytes[c])).join("\n")}\n${
      formatRow("total", peakTotal, est.total)
    }`,
  );
  for (const c of MEMORY_CATEGORIES) {
    const m = peak[c];
    const e = est.bytes[c];
    if (m >= 0.01 * peakTotal) {
      assert.ok(Math.abs(e - m) <= 0.1 * m, `${label}: ${c} estimated ${e}, measured ${m}`);
    } else {
      assert.ok(
        Math.abs(e - m) <= 0.01 * peakTotal,
        `${label}: ${c} estimated ${e}, measured ${m}`,
      );
    }
  }
  assert.ok(
    Math.abs(est.total - peakTotal) <= 0.1 * peakTotal,
    `${label}: total estimated ${est.total}, measured ${peakTotal}`,
  );
}

/**
 * Builds an engine on `model`, runs one training step on one full-length sequence, checks the
 * ledger's peaks against the estimate, and destroys the engine. The ledger's peaks are reset
 * first: what is already allocated (the base model, and the per-context attention scratch left
 * by an earlier engine of the same shape) is part of the estimate too.
 */
async function measureStep(
  ctx: GpuContext,
  model: BaseModel,
  label: string,
  s: EstimateSettings,
  adapter?: Float32Array,
): Promise<void> {
  ctx.memory.resetPeak();
  const engine = new TrainingEngine(ctx, model, {
    lora: s.lora,
    maxShape: { batch: s.microBatchSize, seq: s.maxSeqLen },
    gradientCheckpointing: s.gradientCheckpointing,
    // The estimate's default is f32; the engine's ("auto") depends on the adapter.
    activationPrecision: s.activationPrecision ?? "f32",
    seed: 5,
    maxGradNorm: 1,
    optimizerGpuBudgetBytes: s.optimizerGpuBudgetBytes,
    vocabChunk: s.vocabChunk,
    mlpChunkRows: s.mlpChunkRows,
    adapter,
  });
  try {
    const lengths = Array.from({ length: s.microBatchSize }, () => s.maxSeqLen);
    const step = await engine.trainStep([randomBatch(model.cfg.vocab, lengths, 77)], 1e-3);
    assert.ok(Number.isFinite(step.loss) && step.loss > 0, `${label}: loss ${step.loss}`);
    assert.equal(
      engine.optimizer.paged,
      s.optimizerGpuBudgetBytes > 0 && s.optimizerGpuBudgetBytes < 8 * engine.layout.totalFloats,
    );
    const est = estimateMemory(model.cfg, s);
    assert.equal(est.optimizerPaged, engine.optimizer.paged);
    assertClose(label, ctx.memory.peak(), ctx.memory.peakTotal, est);
  } finally {
    engine.destroy();
  }
}

/** A fresh context per model, so its ledger starts at zero and holds only what we make. */
function freshGpuTest(
  name: string,
  fn: (ctx: GpuContext) => Promise<void>,
  maxBindingBytes?: number,
): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const ctx = await GpuContext.open({ log: () => {}, maxBindingBytes });
      try {
        assert.equal(ctx.memory.total, 0);
        await fn(ctx);
      } finally {
        ctx.destroy();
      }
    },
  });
}

const ALL: LoraSpec = {
  r: 8,
  alpha: 16,
  dropout: 0,
  targets: [...LINEAR_MODULES],
  useRslora: false,
};

freshGpuTest("tiny model: ledger peaks match the estimate by category", async (ctx) => {
  const setup = tinySetup(ctx, TINY, 31, ALL);
  try {
    // 62 rows: the rstd buffer of a saved set (248 bytes) rounds up to 256, as the estimate
    // rounds it. This shape goes first: the attention scratch it leaves is smaller than the next
    // one's and is replaced.
    await measureStep(ctx, setup.model, "tiny, 2 x 31 tokens, no checkpointing, resident", {
      ...settings(ALL, 2, 31, false, 0),
    }, setup.adapter);
    await measureStep(ctx, setup.model, "tiny, no checkpointing, optimizer resident", {
      ...settings(ALL, 1, 64, false, 0),
    }, setup.adapter);
    // 2048 bytes is under the 2*totalFloats*4 of state: paged, 64-float pages.
    await measureStep(ctx, setup.model, "tiny, checkpointing, optimizer paged (2 KiB)", {
      ...settings(ALL, 1, 64, true, 2048),
    }, setup.adapter);
    await measureStep(ctx, setup.model, "tiny, 2 x 31 tokens, checkpointing, f16 checkpoints", {
      ...settings(ALL, 2, 31, true, 0),
      activationPrecision: "f16",
    }, setup.adapter);
  } finally {
    setup.model.destroy();
  }
  // Tied embeddings, LoRA on q and v only at r=4 (B of v, 40 x 4, pads to a 192-float slot).
  const spec: LoraSpec = { r: 4, alpha: 8, dropout: 0.1, targets: ["q", "v"], useRslora: false };
  const tied = tinySetup(ctx, { ...TINY, tieEmbeddings: true }, 32, spec);
  try {
    await measureStep(ctx, tied.model, "tiny tied, q,v r=4, checkpointing, resident", {
      ...settings(spec, 1, 64, true, 0),
    }, tied.adapter);
  } finally {
    tied.model.destroy();
  }
});

// The MLP in 64-row chunks on 2 x 83 = 166 rows (chunks of 64, 64, 38), LoRA dropout on: with
// checkpointing h, gate and up exist for one chunk; the dropout buffer holds one chunk of the
// widest LoRA input (act here). Activations and scratch to the byte.
freshGpuTest(
  "tiny model, MLP chunked (64 rows), dropout: activations and scratch to the byte",
  async (ctx) => {
    const spec: LoraSpec = { ...ALL, dropout: 0.1 };
    const setup = tinySetup(ctx, TINY, 34, spec);
    try {
      for (const ckpt of [false, true]) {
        const s = { ...settings(spec, 2, 83, ckpt, 0), mlpChunkRows: 64 };
        const est = estimateMemory(TINY, s);
        assert.ok(est.details.some((d) => d.name.endsWith("(2 shared buffers, 64 rows a chunk)")));
        assert.ok(est.details.some((d) => d.name.includes("with the LoRA dropout buffer")));
        await measureStep(
          ctx,
          setup.model,
          `tiny, 64-row MLP chunks, checkpointing ${ckpt}`,
          s,
          setup.adapter,
        );
        const peak = ctx.memory.peak();
        assert.equal(peak.activations, est.bytes.activations, `checkpointing ${ckpt}: activations`);
        assert.equal(peak.scratch, est.bytes.scratch, `checkpointing ${ckpt}: scratch`);
      }
      // Without dropout no dropout buffer; with the default chunk (512 > 166 rows) one chunk of
      // all rows.
      const plain = estimateMemory(TINY, settings(ALL, 2, 83, true, 0));
      const chunked = estimateMemory(TINY, { ...settings(spec, 2, 83, true, 0), mlpChunkRows: 64 });
      assert.ok(plain.details.some((d) => d.name === "backward scratch"));
      const line = (e: MemoryEstimate, prefix: string) =>
        e.details.find((d) => d.name.startsWith(prefix))!.bytes;
      // h and n2 [rows, 80] and rstd [rows]: 161 floats a row; the [166] rstd (664 bytes)
      // rounds up to 672.
      assert.equal(line(plain, "MLP chunk h, n2"), 166 * 161 * 4 + 8);
      assert.equal(line(chunked, "MLP chunk h, n2"), 64 * 161 * 4);
      // 64-row chunks of [64, 216] = 13,824 floats: gate, up, d act (41,472 floats) outgrow d q
      // [166, 80] (13,312 aligned); act, d up (27,648) outgrow d k, d v [166, 40] (2 x 6,656).
      assert.equal(line(chunked, "d q/k/v, or the MLP"), (41_472 + 27_648) * 4);
    } finally {
      setup.model.destroy();
    }
  },
);

// A forced 4 KiB binding limit: the 160-byte rows of TINY's tables go 25 to a chunk (25, 25, 11
// rows: 4,000, 4,000 and 1,760 bytes), and the cross-entropy block shrinks to 16 rows x 61 words.
freshGpuTest(
  "tiny model, tables split by a 4 KiB binding limit: base weights to the byte",
  async (ctx) => {
    const setup = tinySetup(ctx, TINY, 33, ALL);
    try {
      const s = { ...settings(ALL, 2, 31, false, 0), maxBindingBytes: 4096 };
      const est = estimateMemory(TINY, s);
      assert.equal(setup.model.embed.chunks.length, 3);
      assert.equal(setup.model.lmHead.chunks.length, 3);
      assert.equal(ctx.memory.current().base_weights, est.bytes.base_weights);
      assert.ok(est.details.some((d) => d.name === "cross-entropy block (16 rows x 61 columns)"));
      await measureStep(ctx, setup.model, "tiny, 4 KiB binding limit", s, setup.adapter);
    } finally {
      setup.model.destroy();
    }
  },
  4096,
);

/** ~56M parameters: 16.4M each in embeddings and lm_head, 23.2M in 4-bit linears. */
const MID: LlamaConfig = {
  hidden: 512,
  intermediate: 1376,
  layers: 8,
  heads: 8,
  kvHeads: 4,
  headDim: 64,
  vocab: 32000,
  rmsEps: 1e-5,
  ropeTheta: 10000,
  tieEmbeddings: false,
  maxPositions: 2048,
  eosTokenIds: [],
  torchDtype: "float32",
};

function uniform(rng: Rng, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rng.next() - 1) * scale;
  return out;
}

function randomModel(ctx: GpuContext, cfg: LlamaConfig, seed: number): BaseModel {
  const rng = new Rng(seed);
  const norm = () => uniform(rng, cfg.hidden, 0.1).map((x) => 1 + x);
  const layers: HostLayer[] = [];
  for (let l = 0; l < cfg.layers; l++) {
    const linears = {} as Record<LinearModule, ReturnType<typeof quantizeWeight>>;
    for (const m of LINEAR_MODULES) {
      const shape = linearShape(cfg, m);
      linears[m] = quantizeWeight(
        uniform(rng, shape[0] * shape[1], 1 / Math.sqrt(shape[1])),
        shape,
        {
          quantType: "nf4",
          blocksize: 64,
          doubleQuant: true,
          dtype: "float32",
        },
      );
    }
    layers.push({ inputNorm: norm(), postNorm: norm(), linears });
  }
  return uploadBaseModel(ctx, {
    cfg,
    embed: uniform(rng, cfg.vocab * cfg.hidden, 0.5),
    lmHead: uniform(rng, cfg.vocab * cfg.hidden, 0.05),
    finalNorm: norm(),
    layers,
  });
}

freshGpuTest("~56M model: ledger peaks match the estimate by category", async (ctx) => {
  const model = randomModel(ctx, MID, 41);
  const spec: LoraSpec = {
    r: 16,
    alpha: 32,
    dropout: 0.05,
    targets: [...LINEAR_MODULES],
    useRslora: false,
  };
  try {
    await measureStep(ctx, model, "~56M, no checkpointing, optimizer resident", {
      ...settings(spec, 1, 64, false, 0),
    });
    // 1 MiB budget for ~9.5 MB of moments: pages of 65,536 floats.
    await measureStep(ctx, model, "~56M, checkpointing, optimizer paged (1 MiB)", {
      ...settings(spec, 1, 64, true, 1 << 20),
    });
    await measureStep(ctx, model, "~56M, checkpointing, f16 checkpoints", {
      ...settings(spec, 1, 64, true, 0),
      activationPrecision: "f16",
    });
  } finally {
    model.destroy();
  }
});

freshGpuTest(
  "f16 checkpoints: the bytes saved match the estimate and the hand count",
  async (ctx) => {
    const setup = tinySetup(ctx, TINY, 34, ALL);
    const batch = randomBatch(TINY.vocab, [31, 20], 35);
    try {
      const activationsOf = async (over: Partial<EstimateSettings>) => {
        const s = { ...settings(ALL, 2, 31, true, 0), ...over };
        const before = ctx.memory.current().activations;
        const engine = new TrainingEngine(ctx, setup.model, {
          lora: ALL,
          maxShape: { batch: 2, seq: 31 },
          gradientCheckpointing: s.gradientCheckpointing,
          activationPrecision: s.activationPrecision,
          seed: 5,
          maxGradNorm: 1,
          optimizerGpuBudgetBytes: 0,
          adapter: setup.adapter,
          evalOnly: true,
        });
        const used = ctx.memory.current().activations - before;
        const precision = engine.graph.checkpointPrecision;
        try {
          // The forward is the same arithmetic whichever buffers the residual stream runs in.
          const loss = (await engine.evaluate(batch)).lossSum;
          return { used, precision, loss, estimated: estimateMemory(TINY, s).bytes.activations };
        } finally {
          engine.destroy();
        }
      };
      const f32 = await activationsOf({ activationPrecision: "f32" });
      const f16 = await activationsOf({ activationPrecision: "f16" });
      assert.equal(f32.precision, "f32");
      assert.equal(f16.precision, "f16");
      assert.ok(Number.isFinite(f32.loss) && f32.loss > 0, `loss ${f32.loss}`);
      assert.equal(f16.loss, f32.loss);
      // 62 rows x 80 = 4,960 floats per layer input. f32: 3 buffers (2 layer inputs and the last
      // output) of 19,840 bytes; f16: one f32 residual buffer and 2 of 9,920 bytes (multiples of
      // 16, so no padding): 59,520 - 39,680 = 19,840 bytes saved.
      assert.equal(f32.used - f16.used, 19_840);
      assert.equal(f32.estimated - f16.estimated, 19_840);
      // Without checkpointing there is nothing to recompute from: the inputs stay f32.
      const plain = await activationsOf({
        gradientCheckpointing: false,
        activationPrecision: "f16",
      });
      const plain32 = await activationsOf({
        gradientCheckpointing: false,
        activationPrecision: "f32",
      });
      assert.equal(plain.precision, "f32");
      assert.equal(plain.used, plain32.used);
      assert.equal(plain.estimated, plain32.estimated);
    } finally {
      setup.model.destroy();
    }
  },
);

// ---- the CLI -------------------------------------------------------------------------------

async function cli(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runEstimateCommand(args, (l) => out.push(l), (l) => err.push(l));
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("estimate CLI: presets, comparison, a config.json, usage errors", async () => {
  const all = await cli(["--preset", "all", "--checkpointing", "--compare"]);
  assert.equal(all.code, 0);
  for (const p of Object.values(llamaPresets)) assert.ok(all.out.includes(`| ${p.name}`), p.name);
  assert.ok(all.out.includes("full fine-tuning (fp16)") && all.out.includes("QLoRA"));

  const bytes = await cli(["--preset", "65b", "--checkpointing", "--units", "bytes"]);
  assert.equal(bytes.code, 0);
  assert.ok(bytes.out.includes(" 34461565184 "), bytes.out);

  // Checkpoints default to f16: 80 layer inputs of 512 x 8192 go from 4 to 2 bytes, with one f32
  // residual buffer for the 81st (the last output): 80 x 8 MiB = 640 MiB less.
  const act = async (extra: string[]) => {
    const r = await cli(["--preset", "65b", "--checkpointing", "--json", ...extra]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out).estimates[0].bytes.activations as number;
  };
  const f16Act = await act([]);
  assert.equal(await act(["--activations", "f16"]), f16Act);
  assert.equal((await act(["--activations", "f32"])) - f16Act, 80 * 512 * 8192 * 2);

  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/config.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        model_type: "llama",
        hidden_size: 512,
        intermediate_size: 1376,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        vocab_size: 32000,
        quantization_config: {
          quant_method: "bitsandbytes",
          load_in_4bit: true,
          bnb_4bit_quant_type: "nf4",
          bnb_4bit_use_double_quant: false,
        },
      }),
    );
    const r = await cli([
      "--config",
      file,
      "--r",
      "16",
      "--targets",
      "q_proj,v_proj",
      "--seq",
      "64",
      "--optimizer-budget",
      "4096",
      "--json",
    ]);
    assert.equal(r.code, 0);
    const json = JSON.parse(r.out);
    const want = estimateMemory({ ...MID, maxPositions: 2048 }, {
      lora: { r: 16, alpha: 16, dropout: 0, targets: ["q", "v"], useRslora: false },
      microBatchSize: 1,
      maxSeqLen: 64,
      gradientCheckpointing: false,
      optimizerGpuBudgetBytes: 4096,
      doubleQuant: false,
    });
    assert.deepEqual(json.estimates[0].bytes, want.bytes);
    assert.equal(json.estimates[0].doubleQuant, false);
    assert.equal(json.estimates[0].optimizerPaged, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  for (
    const args of [
      [],
      ["--preset", "7b", "--config", "x.json"],
      ["--preset", "8b"],
      ["--preset", "7b", "--r", "0"],
      ["--preset", "7b", "--blocksize", "100"],
      ["--preset", "7b", "--units", "furlongs"],
      ["--preset", "7b", "--activations", "bf16"],
      ["--preset", "7b", "--bogus"],
    ]
  ) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.out}`);
    assert.ok(r.err.includes("usage:"), args.join(" "));
  }
  // A file that is not there is a failure (exit 1), not a usage error; the message names it.
  const missing = await cli(["--config", "/nonexistent/config.json"]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /\/nonexistent\/config\.json: no such file/);
});
