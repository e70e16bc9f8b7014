import assert from "node:assert/strict";
import { closeGpuAfterTests, gpu as sharedGpu, gpuTest } from "../support/gpu.ts";
import { quantize4bitGpu } from "../../src/kernels/quantize_4bit.ts";
import { quantizeWeight } from "../../src/quant/quant_state.ts";
import { FP4_THRESHOLDS, NF4_THRESHOLDS, signedDynamicMap } from "../../src/quant/codes.ts";
import { bf16ToF32, f32ToBf16 } from "../../src/io/dtype.ts";
import { QloradError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/random.ts";

const f = Math.fround;
const bf16 = (x: number) => bf16ToF32(f32ToBf16(x));

const bits = new Uint32Array(1);
const asF32 = new Float32Array(bits.buffer);
/** The adjacent float32 in the direction of dir. */
function nextF32(x: number, dir: 1 | -1): number {
  asF32[0] = x;
  if (x === 0) return dir * 1.4e-45;
  bits[0] += (x > 0) === (dir > 0) ? 1 : -1;
  return asF32[0];
}

/** Block-sized pieces: `anchor` (the block's absmax) first, then up to bs-1 values, zero-padded. */
function blocksOf(bs: number, anchor: number, values: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < values.length; i += bs - 1) {
    const block = [anchor, ...values.slice(i, i + bs - 1)];
    while (block.length < bs) block.push(0);
    out.push(...block);
  }
  return out;
}

/**
 * Values x whose scaled value fround(x * fround(1 / absmax)) is exactly a threshold (both signs),
 * with their float32 neighbours.
 */
function tiesFor(absmax: number): number[] {
  const scale = f(1 / absmax);
  const out: number[] = [];
  for (const t of [...NF4_THRESHOLDS, ...FP4_THRESHOLDS]) {
    for (const sign of [1, -1]) {
      const x = f((sign * t) / scale);
      if (Math.abs(x) > absmax) continue;
      if (f(x * scale) === sign * t) out.push(x, nextF32(x, 1), nextF32(x, -1));
    }
  }
  return out.filter((x) => Math.abs(x) <= absmax);
}

/**
 * Blocks whose exact product x * scale falls halfway between two float32 values next to a
 * threshold, so the scaled value depends on round-half-to-even: scale c/32 (absmax 32/c).
 */
function productTieBlocks(bs: number): number[] {
  const out: number[] = [];
  for (const c of [3, 9, 17, 21]) {
    const scale = f(c / 32);
    const absmax = f(1 / scale);
    assert.equal(f(1 / absmax), scale);
    const xs: number[] = [];
    for (const t of [...NF4_THRESHOLDS, ...FP4_THRESHOLDS]) {
      for (const tt of [t, -t]) {
        for (const dir of [1, -1] as const) {
          const h = (tt + nextF32(tt, dir)) / 2;
          const x = h / scale;
          if (f(x) === x && x * scale === h && Math.abs(x) <= absmax) xs.push(x);
        }
      }
    }
    assert.ok(xs.length >= 4, `scale ${c}/32: only ${xs.length} product ties`);
    out.push(...blocksOf(bs, absmax, xs));
  }
  return out;
}

/**
 * A weight of `rows` x `cols` (odd) made of: an all-zero block; products that tie between two
 * float32 values; scaled values exactly on thresholds at power-of-two and arbitrary absmax;
 * denormal blocks (one small enough that 1/absmax overflows to inf); tiny values next to 1
 * (denormal scaled values); huge values (denormal scale); then bf16 normals with exact zeros.
 */
function testWeight(rng: Rng, bs: number, rows: number, cols: number): Float32Array {
  const n = rows * cols;
  const parts: number[] = [];
  parts.push(...new Array(bs).fill(0));
  parts.push(...productTieBlocks(bs));
  for (const absmax of [1, 0.125, bf16(0.0371), bf16(7.3)]) {
    parts.push(...blocksOf(bs, absmax, tiesFor(absmax)));
  }
  const denormals = (max: number) =>
    Array.from({ length: bs - 1 }, (_, i) => i % 5 === 0 ? 0 : bf16(rng.uniform(-max, max)));
  parts.push(...blocksOf(bs, bf16(2e-39), denormals(2e-39)));
  parts.push(...blocksOf(bs, bf16(-3e-38), denormals(3e-38)));
  parts.push(...blocksOf(bs, -1, denormals(1e-39)));
  parts.push(
    ...blocksOf(bs, bf16(3.3e38), Array.from({ length: 40 }, () => bf16(rng.uniform(-3e38, 3e38)))),
  );
  assert.ok(parts.length < n, `test weight of ${n} too small for ${parts.length} crafted values`);
  const w = new Float32Array(n);
  w.set(parts);
  for (let i = parts.length; i < n; i++) {
    w[i] = rng.next() < 0.01 ? 0 : bf16(rng.normal() * 0.02);
  }
  return w;
}

async function assertSameAsCpu(
  w: Float32Array,
  shape: [number, number],
  quantType: "nf4" | "fp4",
  blocksize: number,
  doubleQuant: boolean,
  maxChunkElements?: number,
) {
  const ctx = await sharedGpu();
  const cpu = quantizeWeight(w, shape, { quantType, blocksize, doubleQuant, dtype: "bfloat16" });
  const gpu = await quantize4bitGpu(ctx, w, shape, {
    quantType,
    blocksize,
    doubleQuant,
    maxChunkElements,
  });
  const tag = `${quantType} bs=${blocksize} dq=${doubleQuant} [${shape}]`;
  assertBytesEqual(gpu.packed, cpu.packed, `${tag} packed`);
  if (!doubleQuant) {
    assert.equal(gpu.dq, undefined);
    assertBytesEqual(bytesOf(gpu.absmax!), bytesOf(cpu.absmax!), `${tag} absmax`);
    return;
  }
  assert.equal(gpu.absmax, undefined);
  assert.ok(gpu.dq && cpu.dq);
  assert.equal(gpu.dq.offset, cpu.dq.offset, `${tag} offset`);
  assertBytesEqual(gpu.dq.codes, cpu.dq.codes, `${tag} dq codes`);
  assertBytesEqual(
    bytesOf(gpu.dq.nestedAbsmax),
    bytesOf(cpu.dq.nestedAbsmax),
    `${tag} nested absmax`,
  );
  assertBytesEqual(bytesOf(gpu.dq.nestedMap), bytesOf(cpu.dq.nestedMap), `${tag} nested map`);
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function assertBytesEqual(got: Uint8Array, want: Uint8Array, what: string) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      assert.fail(`${what}: byte ${i} is ${got[i]}, CPU reference has ${want[i]}`);
    }
  }
}

const SHAPES: Record<number, [number, number]> = {
  32: [37, 219],
  64: [41, 219],
  128: [29, 301],
  4096: [13, 9001],
};

let seed = 10;
for (const quantType of ["nf4", "fp4"] as const) {
  for (const doubleQuant of [false, true]) {
    const s = seed++;
    gpuTest(
      `quantize_4bit ${quantType} dq=${doubleQuant}: byte-identical to the CPU reference, ` +
        `blocksizes 32..4096`,
      async () => {
        const rng = new Rng(s);
        for (const bs of [32, 64, 128, 4096]) {
          const shape = SHAPES[bs];
          await assertSameAsCpu(testWeight(rng, bs, ...shape), shape, quantType, bs, doubleQuant);
        }
      },
    );
  }
}

gpuTest("quantize_4bit: chunked by whole blocks, the same bytes as in one piece", async () => {
  const rng = new Rng(3);
  const shape: [number, number] = [23, 333];
  const w = testWeight(rng, 64, ...shape);
  await assertSameAsCpu(w, shape, "nf4", 64, true, 64 * 5);
  await assertSameAsCpu(w, shape, "fp4", 64, false, 64 * 3 + 17);
});

gpuTest(
  "quantize_4bit: a 4096x11008 weight matches (two chunks where a binding holds 128 MiB)",
  async () => {
    const shape: [number, number] = [4096, 11008];
    const rng = new Rng(5);
    const w = new Float32Array(shape[0] * shape[1]);
    for (let i = 0; i < w.length; i++) w[i] = bf16(rng.normal() * 0.02);
    await assertSameAsCpu(w, shape, "nf4", 64, true);
  },
);

/**
 * Double quantization ties: absmax values 1 + v and 1 - v for float32 midpoints v of the dynamic
 * map (both exact), with 0 and 2 in each nested block, so offset = 1, nested absmax = 1, and
 * absmax - offset lands exactly on midpoints.
 */
gpuTest("quantize_4bit: double quant ties on dynamic-map midpoints follow bnb's rule", async () => {
  const map = signedDynamicMap();
  const absmaxes: number[] = [];
  for (let i = 0; i + 1 < 256; i++) {
    const mid = f(map[i] + map[i + 1]) * 0.5;
    const a = f(1 + mid);
    const b = f(1 - mid);
    if (a - 1 === mid && 1 - b === mid && a >= 0 && b >= 0) absmaxes.push(a, b);
  }
  assert.ok(absmaxes.length > 40, `only ${absmaxes.length / 2} usable midpoints`);
  const perNested: number[] = [];
  for (let i = 0; i < absmaxes.length; i += 254) {
    perNested.push(0, 2, ...absmaxes.slice(i, i + 254));
  }
  for (const bs of [32, 64]) {
    const w = new Float32Array(perNested.length * bs);
    perNested.forEach((a, j) => w[j * bs + (j % bs)] = j % 3 ? a : -a);
    const shape: [number, number] = [perNested.length, bs];
    await assertSameAsCpu(w, shape, "nf4", bs, true);
    await assertSameAsCpu(w, shape, "fp4", bs, true);
  }
});

gpuTest("quantize_4bit: bad input is refused naming the field", async (ctx) => {
  const w = new Float32Array([1, 2, NaN, 4]);
  const invalid = (pattern: RegExp) => (e: unknown) => {
    assert.ok(e instanceof QloradError && e.kind === "invalid_argument", String(e));
    assert.match((e as Error).message, pattern);
    return true;
  };
  const opts = { quantType: "nf4" as const, blocksize: 64, doubleQuant: false };
  await assert.rejects(quantize4bitGpu(ctx, w, [2, 2], opts), invalid(/weight: element 2 is NaN/));
  await assert.rejects(
    quantize4bitGpu(ctx, new Float32Array(4), [2, 2], { ...opts, blocksize: 48 }),
    invalid(/blocksize: 48/),
  );
  await assert.rejects(
    quantize4bitGpu(ctx, new Float32Array(4), [3, 2], opts),
    invalid(/weight: 4 values do not match shape \[3, 2\]/),
  );
});

closeGpuAfterTests();
