/**
 * Section (b): dequantization throughput. The training kernels never materialize W (they
 * dequantize in registers), so this measures the shared dequant code itself
 * (shaders/dequant_4bit.wgsl) in a bench-only kernel that writes W out in f32, one packed word
 * (8 weights) per invocation. Its output is checked against the CPU dequantizer before timing.
 * GB/s counts the bytes the kernel moves: packed codes and absmax read, f32 weights written.
 */
import type { GpuContext } from "../../src/gpu/context.ts";
import { shaderSource } from "../../src/gpu/shader_source.ts";
import {
  dequantShaderParams,
  offsetBits,
  uploadQuantWeight,
} from "../../src/kernels/quant_weight.ts";
import { dequantizeWeight, quantizeWeight } from "../../src/quant/quant_state.ts";
import type { QuantType } from "../../src/quant/codes.ts";
import { Rng } from "../../src/util/random.ts";
import { kernelContender, timeKernels } from "../../src/gpu/timing.ts";

const ENTRY = `
struct DequantParams {
  words: u32,
  offset_bits: u32,
  block_shift: u32,
  groups_x: u32,
}

@group(0) @binding(3) var<storage, read_write> dq_out: array<vec4f>;
@group(0) @binding(4) var<uniform> dq: DequantParams;

fn q_nested_offset() -> f32 {
  return bitcast<f32>(dq.offset_bits);
}

fn q_block_shift() -> u32 {
  return dq.block_shift;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let word = (wg.y * dq.groups_x + wg.x) * 64u + li;
  if (word >= dq.words) {
    return;
  }
  let w = q_weights8(word * 8u);
  dq_out[2u * word] = w.lo;
  dq_out[2u * word + 1u] = w.hi;
}
`;

export interface DequantCase {
  name: string;
  quantType: QuantType;
  doubleQuant: boolean;
  out: number;
  in: number;
}

export interface DequantRow extends DequantCase {
  ms: number;
  gparamsPerS: number;
  /** (bytes read + bytes written) / s, in GB (1e9). */
  gbPerS: number;
  /** max |gpu - cpu| / max |cpu| of the checked output. */
  checkError: number;
}

export async function benchDequant(
  ctx: GpuContext,
  cases: DequantCase[],
  o: { rounds: number; targetMs: number },
): Promise<DequantRow[]> {
  const rows: DequantRow[] = [];
  const rng = new Rng(7);
  for (const c of cases) {
    const n = c.out * c.in;
    if (n % 8 !== 0) throw new Error(`dequant bench: ${c.name}: out*in must be a multiple of 8`);
    const host = new Float32Array(n);
    for (let i = 0; i < n; i++) host[i] = (2 * rng.next() - 1) / Math.sqrt(c.in);
    const q = quantizeWeight(host, [c.out, c.in], {
      quantType: c.quantType,
      blocksize: 64,
      doubleQuant: c.doubleQuant,
      dtype: "float32",
    });
    const w = uploadQuantWeight(ctx, q, `bench.dequant.${c.name}`);
    const out = ctx.createBuffer({ label: "bench.dequant.out", category: "scratch", size: n * 4 });
    try {
      const code = shaderSource("dequant_4bit.wgsl", dequantShaderParams(w)) + ENTRY;
      const pipeline = await ctx.pipelineFromCode("bench dequant", code);
      const words = n / 8;
      const groups = Math.ceil(words / 64);
      const gx = Math.min(groups, 65535);
      const gy = Math.ceil(groups / gx);
      const u = ctx.uniform(new Uint32Array([words, offsetBits(w), Math.log2(w.blocksize), gx]));
      const encode = (b: ReturnType<GpuContext["batch"]>) =>
        void b.dispatch(pipeline, [...w.bindings, out, u], [gx, gy]);

      const check = ctx.batch("dequant check");
      encode(check);
      check.submit();
      const got = await ctx.readF32(out);
      const want = dequantizeWeight(q);
      let num = 0, den = 0;
      for (let i = 0; i < n; i++) {
        num = Math.max(num, Math.abs(got[i] - want[i]));
        den = Math.max(den, Math.abs(want[i]));
      }
      const checkError = num / den;
      if (!(checkError <= 1e-6)) {
        throw new Error(
          `dequant bench: ${c.name}: GPU output differs from the CPU by ${checkError}`,
        );
      }

      const t = await timeKernels(
        [kernelContender(ctx, c.name, encode, { targetMs: o.targetMs })],
        o.rounds,
      );
      const msPer = t.get(c.name)!.ms;
      const absmaxBytes = w.absmax.size + (c.doubleQuant ? w.nestedAbsmax.size : 0);
      const bytes = w.packed.size + absmaxBytes + n * 4;
      rows.push({
        ...c,
        ms: msPer,
        gparamsPerS: n / (msPer * 1e6),
        gbPerS: bytes / (msPer * 1e6),
        checkError,
      });
    } finally {
      out.destroy();
      w.destroy();
    }
  }
  return rows;
}
