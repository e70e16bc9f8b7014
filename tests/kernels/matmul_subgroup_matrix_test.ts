/**
 * The subgroup-matrix variants (Dawn's chromium-experimental-subgroup-matrix): dense, f16-input
 * GEMM, 4-bit forward and backward.
 * - Everywhere: the tile plan for the configs Hopper reports (f16 16x16x16, 16x8x16, 16x8x8) and
 *   the WGSL generated for them (the feature's enable, no subgroup builtins, the config's shapes).
 * - On adapters without the feature: the generated WGSL parses (Dawn reports parse errors before
 *   the disallowed extension, so an error naming only the extension means the text parsed).
 * - On adapters with shader-f16 (lavapipe): the kernels' tiling, staging and epilogues run with
 *   the builtins emulated in plain WGSL (tests/reference/subgroup_matrix_emulation.ts), for two
 *   configs, against float64 within the f16 bound (tests/reference/f16_error_bound.ts).
 * - On adapters with the feature (a GPU): the real kernels, for every f16 -> f32 config the
 *   adapter reports, through the same checks. Ignored here, with the reason in the name: no
 *   adapter on CI machines has subgroup matrices (lavapipe lacks them).
 */
import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu } from "../support/gpu.ts";
import type { GpuContext, SubgroupMatrixConfig } from "../../src/gpu/context.ts";
import { shaderSource } from "../../src/gpu/shader_source.ts";
import { Rng } from "../../src/util/random.ts";
import {
  encodeDense,
  encodeMatmul,
  matmulVariantAvailable,
  subgroupMatrixKernel,
} from "../../src/kernels/matmul.ts";
import {
  encodeMatmul4bit,
  encodeMatmul4bitSubgroupMatrix,
  encodeMatmul4bitT,
} from "../../src/kernels/matmul_4bit.ts";
import { encodeF32ToF16 } from "../../src/kernels/matmul_f16.ts";
import {
  f16MatrixConfigs,
  planSubgroupMatrix,
  type SubgroupMatrixPlan,
  subgroupMatrixShaderParams,
  type WgslTransform,
} from "../../src/kernels/matmul_features.ts";
import { dequantShaderParams, type GpuQuantWeight } from "../../src/kernels/quant_weight.ts";
import { emulateSubgroupMatrices } from "../reference/subgroup_matrix_emulation.ts";
import { NF4_TABLE, signedDynamicMap } from "../reference/dequant_f64.ts";
import { checkDense, checkQuant, DENSE_CASES } from "./matmul_f16_checks.ts";

const ctx0 = await gpu();
const HAS_FEATURE = ctx0.capabilities.subgroupMatrixConfigs.length > 0;
const DEVICE_CONFIGS = f16MatrixConfigs(ctx0);

const f16Config = (M: number, N: number, K: number): SubgroupMatrixConfig => ({
  componentType: "f16",
  resultComponentType: "f32",
  M,
  N,
  K,
});
/** What Dawn reports on Hopper (H100/H200). */
const HOPPER = [f16Config(16, 16, 16), f16Config(16, 8, 16), f16Config(16, 8, 8)];
const HOPPER_LIMITS = { workgroupSize: 32, maxWorkgroupBytes: 32768, maxInvocations: 256 };

function gpuTestIf(
  run: boolean,
  why: string,
  name: string,
  fn: (ctx: GpuContext) => Promise<void>,
): void {
  Deno.test({
    name: run ? name : `${name} (ignored: ${why})`,
    ignore: !run,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => fn(await gpu()),
  });
}

Deno.test("subgroup-matrix plans for Hopper's configs: 64x64 tiles, one subgroup of 32", () => {
  for (const config of HOPPER) {
    const plan = planSubgroupMatrix(config, HOPPER_LIMITS)!;
    assert.ok(plan, JSON.stringify(config));
    assert.equal(plan.tileM, 64);
    assert.equal(plan.tileN, 64);
    assert.equal(plan.rm * config.M, 64);
    assert.equal(plan.rn * config.N, 64);
    assert.equal(plan.kt % config.K, 0);
    assert.equal(plan.workgroupSize % HOPPER_LIMITS.workgroupSize, 0);
    // Accumulators per lane stay within 128 registers' worth.
    assert.ok((plan.rm * plan.rn * config.M * config.N) / plan.workgroupSize <= 128);
    // 16-byte aligned rows: f16 strides multiples of 8, f32 of 4.
    for (const s of [plan.aStride, plan.bStrideRows, plan.bStrideCols]) assert.equal(s % 8, 0);
    assert.equal(plan.cStride % 4, 0);
    assert.equal(plan.bytes, 2 * plan.aLen + 2 * plan.bLen + 4 * plan.cLen);
    assert.ok(plan.bytes <= HOPPER_LIMITS.maxWorkgroupBytes);
  }
  // A narrow subgroup (8 lanes) gets smaller tiles; shapes the plan cannot serve get none.
  const narrow = planSubgroupMatrix(HOPPER[0], { ...HOPPER_LIMITS, workgroupSize: 8 })!;
  assert.deepEqual([narrow.tileM, narrow.tileN], [32, 32]);
  assert.equal(planSubgroupMatrix(f16Config(16, 12, 16), HOPPER_LIMITS), undefined);
  assert.equal(
    planSubgroupMatrix(HOPPER[0], { ...HOPPER_LIMITS, maxWorkgroupBytes: 4096 }),
    undefined,
  );
});

/** The dense and 4-bit subgroup-matrix shaders as the host generates them for `plan`. */
function generated(plan: SubgroupMatrixPlan): Array<{ file: string; code: string }> {
  // What the wrapper passes for an NF4 weight with double quant (the fields it reads).
  const dequant = dequantShaderParams(
    {
      doubleQuant: true,
      quantMap: NF4_TABLE,
      nestedMap: signedDynamicMap(),
    } as unknown as GpuQuantWeight,
  );
  const sm = subgroupMatrixShaderParams(plan);
  return [
    {
      file: "matmul_subgroup_matrix.wgsl",
      code: shaderSource("matmul_subgroup_matrix.wgsl", { ...sm, IN_T: "f32" }),
    },
    {
      file: "matmul_subgroup_matrix.wgsl (f16 in)",
      code: shaderSource("matmul_subgroup_matrix.wgsl", { ...sm, IN_T: "f16" }),
    },
    {
      file: "matmul_4bit_subgroup_matrix.wgsl",
      code: shaderSource("matmul_4bit_subgroup_matrix.wgsl", {
        ...dequant,
        ALIGNED: "true",
        ...sm,
      }),
    },
  ];
}

Deno.test("subgroup-matrix WGSL for each Hopper config: the enable, the shapes, no subgroup builtins", () => {
  for (const config of HOPPER) {
    const plan = planSubgroupMatrix(config, HOPPER_LIMITS)!;
    for (const { file, code } of generated(plan)) {
      const where = `${file} ${config.M}x${config.N}x${config.K}`;
      assert.match(code, /^enable f16;$/m, where);
      assert.match(code, /^enable chromium_experimental_subgroup_matrix;$/m, where);
      // One NVIDIA driver crashes when subgroup builtins share a shader with subgroup matrices.
      assert.doesNotMatch(code, /^enable subgroups;/m, where);
      assert.doesNotMatch(
        code.replace(/\/\/[^\n]*/g, ""),
        /\bsubgroup(Add|Mul|And|Or|Xor|Min|Max|Shuffle\w*|Broadcast\w*|Ballot|All|Any|Elect|Inclusive\w*|Exclusive\w*)\b|subgroup_id|subgroup_size|subgroup_invocation_id|num_subgroups/,
        where,
      );
      for (
        const [name, v] of [["SM_M", config.M], ["SM_N", config.N], ["SM_K", config.K], ["WG", 32]]
      ) {
        assert.match(code, new RegExp(`^const ${name} = ${v};$`, "m"), `${where}: ${name}`);
      }
      assert.match(code, /alias SmLeft = subgroup_matrix_left<f16, SM_K, SM_M>;/, where);
      assert.match(code, /alias SmRight = subgroup_matrix_right<f16, SM_N, SM_K>;/, where);
      assert.match(code, /alias SmResult = subgroup_matrix_result<f32, SM_N, SM_M>;/, where);
      assert.match(code, /@compute @workgroup_size\(WG\)/, where);
      assert.match(
        code,
        /subgroupMatrixMultiplyAccumulate\(left\[r\], right, acc\[r \* RN \+ c\]\)/,
        where,
      );
      assert.doesNotMatch(code, /\{\{\w+\}\}/, `${where}: a template parameter left unfilled`);
    }
  }
});

gpuTestIf(
  !HAS_FEATURE,
  "the adapter has subgroup matrices: the next tests compile and run the real kernels",
  "subgroup-matrix WGSL parses (the only error is the extension this adapter lacks)",
  async (ctx) => {
    for (const config of HOPPER) {
      const plan = planSubgroupMatrix(config, HOPPER_LIMITS)!;
      for (const { file, code } of generated(plan)) {
        ctx.device.pushErrorScope("validation");
        const module = ctx.device.createShaderModule({ label: file, code });
        const info = await module.getCompilationInfo();
        await ctx.device.popErrorScope();
        const errors = info.messages.filter((m) => m.type === "error");
        assert.equal(errors.length, 1, `${file}: ${errors.map((e) => e.message).join("; ")}`);
        // The first extension the adapter lacks (f16 on GLES, else subgroup matrices), reported
        // on its own enable line.
        const ext = /extension '(\w+)' is not allowed/.exec(errors[0].message)?.[1];
        assert.ok(
          ext === "f16" || ext === "chromium_experimental_subgroup_matrix",
          `${file}: ${errors[0].message}`,
        );
        const enableLine = code.split("\n").indexOf(`enable ${ext};`) + 1;
        assert.equal(errors[0].lineNum, enableLine, `${file}: ${errors[0].message}`);
      }
    }
  },
);

// ---- emulated: the kernels' own logic on adapters without the feature ---------------------

/** Two configs: square, and N and K below M with K a quarter of the staged depth. */
const EMULATED = [f16Config(16, 16, 16), f16Config(16, 8, 8)];
/** A bit of the uniform the kernels never set: 0 at run time, opaque to the compiler. */
const emulate: WgslTransform = (code) => emulateSubgroupMatrices(code, "(p.accumulate >> 8u)");
const emulatedPlan = (config: SubgroupMatrixConfig) =>
  planSubgroupMatrix(config, { workgroupSize: 8, maxWorkgroupBytes: 32768, maxInvocations: 256 })!;

async function denseRuns(
  ctx: GpuContext,
  plan: SubgroupMatrixPlan,
  transform: WgslTransform | undefined,
  seed: number,
): Promise<void> {
  const rng = new Rng(seed);
  const tag = `${plan.config.M}x${plan.config.N}x${plan.config.K}${transform ? " emulated" : ""}`;
  for (const c of DENSE_CASES) {
    // f32 operands rounded while staged.
    await checkDense(ctx, rng, c, `dense ${tag}`, async (a, b, out) => {
      const ga = ctx.upload("a", "scratch", a);
      const gb = ctx.upload("b", "scratch", b);
      const batch = ctx.batch();
      await encodeDense(
        ctx,
        batch,
        { ...c, a: ga, b: gb, c: out },
        subgroupMatrixKernel(plan, "f32", transform),
      );
      batch.submit();
      await ctx.sync();
      ga.destroy();
      gb.destroy();
    });
    // f16 operands (the f16 GEMM of the benchmark).
    await checkDense(ctx, rng, c, `f16 GEMM ${tag}`, async (a, b, out) => {
      const half = async (v: Float32Array) => {
        const src = ctx.upload("f32", "scratch", v);
        const dst = ctx.createBuffer({ label: "f16", category: "scratch", size: v.length * 2 });
        const batch = ctx.batch();
        await encodeF32ToF16(ctx, batch, { src, dst, count: v.length });
        batch.submit();
        await ctx.sync();
        src.destroy();
        return dst;
      };
      const ga = await half(a);
      const gb = await half(b);
      const batch = ctx.batch();
      await encodeDense(
        ctx,
        batch,
        { ...c, a: ga, b: gb, c: out },
        subgroupMatrixKernel(plan, "f16", transform),
      );
      batch.submit();
      await ctx.sync();
      ga.destroy();
      gb.destroy();
    });
  }
}

async function quantRuns(
  ctx: GpuContext,
  plan: SubgroupMatrixPlan,
  transform: WgslTransform | undefined,
  seed: number,
): Promise<void> {
  const tag = `${plan.config.M}x${plan.config.N}x${plan.config.K}${transform ? " emulated" : ""}`;
  await checkQuant(ctx, new Rng(seed), `4-bit ${tag}`, async (direction, a) => {
    const batch = ctx.batch();
    await encodeMatmul4bitSubgroupMatrix(ctx, batch, { direction, ...a }, plan, transform);
    batch.submit();
  });
}

const HAS_F16 = ctx0.capabilities.f16;
for (const [i, config] of EMULATED.entries()) {
  const shape = `${config.M}x${config.N}x${config.K}`;
  gpuTestIf(
    HAS_F16,
    "the adapter has no shader-f16",
    `subgroup-matrix dense and f16 GEMM kernels, builtins emulated, ${shape}: match float64`,
    (ctx) => denseRuns(ctx, emulatedPlan(config), emulate, 1800 + i),
  );
  gpuTestIf(
    HAS_F16,
    "the adapter has no shader-f16",
    `subgroup-matrix 4-bit kernels, builtins emulated, ${shape}: forward and backward match float64`,
    (ctx) => quantRuns(ctx, emulatedPlan(config), emulate, 1810 + i),
  );
}

gpuTestIf(
  HAS_F16,
  "the adapter has no shader-f16",
  "the emulation itself: a failing kernel fails (wrong majorness of the W tile is caught)",
  async (ctx) => {
    // Guards against an emulation that agrees with anything: loading W^T row-major instead of
    // column-major must break the forward product.
    const broken: WgslTransform = (code) =>
      emulate(
        code.replace(
          "subgroupMatrixLoad<SmRight, col_major>",
          "subgroupMatrixLoad<SmRight, row_major>",
        ),
      );
    await assert.rejects(quantRuns(ctx, emulatedPlan(EMULATED[0]), broken, 1820), /off by/);
  },
);

// ---- the real kernels, where the adapter has subgroup matrices ----------------------------

const NO_FEATURE =
  "no subgroup matrices on this adapter (Dawn's chromium-experimental-subgroup-matrix; " +
  "lavapipe and llvmpipe lack it): run on a GPU";

gpuTestIf(
  DEVICE_CONFIGS.length > 0,
  NO_FEATURE,
  "subgroup-matrix kernels on the device, every f16 -> f32 config it reports: match float64",
  async (ctx) => {
    let ran = 0;
    for (const [i, config] of DEVICE_CONFIGS.entries()) {
      const plan = planSubgroupMatrix(config, {
        workgroupSize: ctx.capabilities.subgroupMaxSize,
        maxWorkgroupBytes: ctx.limits.maxComputeWorkgroupStorageSize,
        maxInvocations: ctx.limits.maxComputeInvocationsPerWorkgroup,
      });
      if (!plan) continue;
      await denseRuns(ctx, plan, undefined, 1900 + i);
      await quantRuns(ctx, plan, undefined, 1950 + i);
      ran++;
    }
    assert.ok(ran > 0, `no reported config could be planned: ${JSON.stringify(DEVICE_CONFIGS)}`);
  },
);

gpuTestIf(
  matmulVariantAvailable(ctx0, "subgroup_matrix"),
  NO_FEATURE,
  "the subgroup_matrix variants through the wrappers (the ladder's path) match float64",
  async (ctx) => {
    const rng = new Rng(1990);
    for (const c of DENSE_CASES) {
      await checkDense(ctx, rng, c, "encodeMatmul subgroup_matrix", async (a, b, out) => {
        const ga = ctx.upload("a", "scratch", a);
        const gb = ctx.upload("b", "scratch", b);
        const batch = ctx.batch();
        await encodeMatmul(ctx, batch, { ...c, a: ga, b: gb, c: out, variant: "subgroup_matrix" });
        batch.submit();
        await ctx.sync();
        ga.destroy();
        gb.destroy();
      });
    }
    await checkQuant(ctx, rng, "encodeMatmul4bit subgroup_matrix", async (direction, a) => {
      const batch = ctx.batch();
      const common = {
        w: a.w,
        m: a.m,
        accumulate: a.accumulate,
        variant: "subgroup_matrix" as const,
      };
      if (direction === "forward") {
        await encodeMatmul4bit(ctx, batch, { ...common, x: a.src, y: a.dst });
      } else await encodeMatmul4bitT(ctx, batch, { ...common, dy: a.src, dx: a.dst });
      batch.submit();
    });
  },
);

closeGpuAfterTests();
