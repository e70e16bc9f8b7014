/**
 * Small uniform buffers shared by content. Kernels pass their shape parameters as a uniform on
 * every dispatch; shapes repeat every step, so the buffer with the same bytes is found again
 * instead of made: the lookup hashes the 32-bit words and compares them in place, allocating
 * nothing on a hit. Two generations of GENERATION_SIZE contents each are kept (per-step values
 * such as the learning rate keep making new ones); a buffer is destroyed only when the generation
 * after its last use fills up, long after every batch that could have used it was submitted.
 */

const UNIFORM = 0x40; // GPUBufferUsage.UNIFORM
const COPY_DST = 0x08;

interface Entry {
  hash: number;
  words: Uint32Array;
  buffer: GPUBuffer;
}

export type UniformValues = Uint32Array | Int32Array | Float32Array;

/** Scratch for reading a float's bits without allocating. */
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** The 32-bit pattern of element i (exact for every value but NaN, which is handled apart). */
function word(values: UniformValues, i: number): number {
  if (values instanceof Float32Array) {
    F32[0] = values[i];
    return U32[0];
  }
  return values[i] >>> 0;
}

export class UniformCache {
  #buckets = new Map<number, Entry[]>();
  #current = new Set<Entry>();
  #retired = new Set<Entry>();

  /**
   * @param device makes and writes the buffers
   * @param onDestroy called with each buffer before it is destroyed (to drop its bind groups)
   */
  constructor(
    readonly device: GPUDevice,
    readonly onDestroy: (buffer: GPUBuffer) => void = () => {},
    readonly generationSize = 4096,
  ) {}

  get size(): number {
    return this.#current.size + this.#retired.size;
  }

  get(values: UniformValues): GPUBuffer {
    // A NaN's payload could be lost when read as a JS number: compare its exact bits instead.
    if (values instanceof Float32Array && values.some(Number.isNaN)) {
      return this.get(new Uint32Array(values.buffer, values.byteOffset, values.length));
    }
    const n = values.length;
    let h = 0x811c9dc5 ^ n;
    for (let i = 0; i < n; i++) h = Math.imul(h ^ word(values, i), 0x01000193);
    const bucket = this.#buckets.get(h);
    if (bucket) {
      for (const e of bucket) {
        if (e.words.length !== n) continue;
        let same = true;
        for (let i = 0; i < n && same; i++) same = e.words[i] === word(values, i);
        if (!same) continue;
        if (this.#retired.delete(e)) this.#add(e); // in use again: back to the current generation
        return e.buffer;
      }
    }
    const words = new Uint32Array(Math.max(4, Math.ceil(n / 4) * 4)); // padded to 16 bytes
    for (let i = 0; i < n; i++) words[i] = word(values, i);
    const buffer = this.device.createBuffer({
      size: words.byteLength,
      usage: UNIFORM | COPY_DST,
      label: "uniform",
    });
    this.device.queue.writeBuffer(buffer, 0, words);
    const e: Entry = { hash: h, words: words.subarray(0, n), buffer };
    if (bucket) bucket.push(e);
    else this.#buckets.set(h, [e]);
    this.#add(e);
    return buffer;
  }

  #add(e: Entry): void {
    if (this.#current.size >= this.generationSize) {
      for (const old of this.#retired) this.#destroy(old);
      this.#retired = this.#current;
      this.#current = new Set();
    }
    this.#current.add(e);
  }

  #destroy(e: Entry): void {
    const bucket = this.#buckets.get(e.hash)!;
    bucket.splice(bucket.indexOf(e), 1);
    if (bucket.length === 0) this.#buckets.delete(e.hash);
    this.onDestroy(e.buffer);
    e.buffer.destroy();
  }

  destroyAll(): void {
    for (const e of [...this.#current, ...this.#retired]) this.#destroy(e);
    this.#current.clear();
    this.#retired.clear();
  }
}
