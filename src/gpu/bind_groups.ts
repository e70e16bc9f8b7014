/**
 * Bind groups reused across training steps. A step records the same dispatches with the same
 * buffers every time, so its bind groups are made once and found again by pipeline and exact
 * bindings (buffer identity, offset, size). A lookup that hits allocates nothing: the key is a
 * number hashed from the bindings and checked field by field against the entry. Entries of a
 * destroyed buffer are dropped (`dropBuffer`); the cache holds at most `limit` groups and evicts
 * the oldest first (a step's working set is far smaller; per-step uniforms such as the learning
 * rate make a few new groups each step, and those age out).
 */

/** `BindingKey.size` for a binding of the whole buffer (no offset, no size in the entry). */
export const WHOLE_BUFFER = -1;

/** The part of a binding the cache keys on. */
export interface BindingKey {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

interface Entry {
  hash: number;
  pipelineId: number;
  /** bufferId, offset, size per binding. */
  fields: number[];
  group: GPUBindGroup;
}

export class BindGroupCache {
  #ids = new WeakMap<object, number>();
  #nextId = 1;
  #layouts = new WeakMap<GPUComputePipeline, GPUBindGroupLayout>();
  #buckets = new Map<number, Entry[]>();
  /** Insertion order, for eviction. */
  #order = new Set<Entry>();
  #byBuffer = new Map<number, Set<Entry>>();
  /** Scratch for one lookup's binding fields, reused so a hit allocates nothing. */
  #scratch: number[] = [];
  hits = 0;
  misses = 0;

  constructor(readonly device: GPUDevice, readonly limit = 8192) {}

  get size(): number {
    return this.#order.size;
  }

  #id(o: object): number {
    let id = this.#ids.get(o);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(o, id);
    }
    return id;
  }

  /**
   * The bind group for `pipeline` (group 0) with binding i = `resolve(i)`; `count` bindings.
   * `resolve` writes into the given key object, so callers need not allocate one per binding.
   */
  get(
    pipeline: GPUComputePipeline,
    count: number,
    resolve: (i: number, out: BindingKey) => void,
  ): GPUBindGroup {
    const pipelineId = this.#id(pipeline);
    const fields = this.#scratch;
    fields.length = count * 3;
    let h = Math.imul(pipelineId ^ 0x9e3779b9, 0x85ebca6b) ^ count;
    for (let i = 0; i < count; i++) {
      resolve(i, KEY);
      const id = this.#id(KEY.buffer);
      fields[3 * i] = id;
      fields[3 * i + 1] = KEY.offset;
      fields[3 * i + 2] = KEY.size;
      h = Math.imul(h ^ id, 0x01000193);
      h = Math.imul(h ^ KEY.offset, 0x01000193);
      h = Math.imul(h ^ KEY.size, 0x01000193);
    }
    KEY.buffer = undefined as unknown as GPUBuffer; // hold no buffer past the call
    const bucket = this.#buckets.get(h);
    if (bucket) {
      for (const e of bucket) {
        if (e.pipelineId === pipelineId && sameFields(e.fields, fields)) {
          this.hits++;
          return e.group;
        }
      }
    }
    this.misses++;
    return this.#create(pipeline, pipelineId, h, count, resolve);
  }

  #create(
    pipeline: GPUComputePipeline,
    pipelineId: number,
    hash: number,
    count: number,
    resolve: (i: number, out: BindingKey) => void,
  ): GPUBindGroup {
    let layout = this.#layouts.get(pipeline);
    if (!layout) {
      layout = pipeline.getBindGroupLayout(0);
      this.#layouts.set(pipeline, layout);
    }
    const entries: GPUBindGroupEntry[] = [];
    for (let i = 0; i < count; i++) {
      const k: BindingKey = { buffer: undefined as unknown as GPUBuffer, offset: 0, size: 0 };
      resolve(i, k);
      entries.push({
        binding: i,
        resource: k.size === WHOLE_BUFFER
          ? { buffer: k.buffer }
          : { buffer: k.buffer, offset: k.offset, size: k.size },
      });
    }
    const group = this.device.createBindGroup({ layout, entries });
    const entry: Entry = { hash, pipelineId, fields: [...this.#scratch], group };
    const bucket = this.#buckets.get(hash);
    if (bucket) bucket.push(entry);
    else this.#buckets.set(hash, [entry]);
    this.#order.add(entry);
    for (let i = 0; i < count; i++) {
      const id = entry.fields[3 * i];
      let set = this.#byBuffer.get(id);
      if (!set) this.#byBuffer.set(id, set = new Set());
      set.add(entry);
    }
    if (this.#order.size > this.limit) {
      this.#evict(this.#order.size - Math.floor(this.limit * 0.75));
    }
    return group;
  }

  #remove(e: Entry): void {
    this.#order.delete(e);
    const bucket = this.#buckets.get(e.hash);
    if (bucket) {
      const i = bucket.indexOf(e);
      if (i >= 0) bucket.splice(i, 1);
      if (bucket.length === 0) this.#buckets.delete(e.hash);
    }
    for (let i = 0; i < e.fields.length; i += 3) {
      const set = this.#byBuffer.get(e.fields[i]);
      set?.delete(e);
      if (set?.size === 0) this.#byBuffer.delete(e.fields[i]);
    }
  }

  #evict(n: number): void {
    for (const e of this.#order) {
      if (n-- <= 0) break;
      this.#remove(e);
    }
  }

  /** Forgets every group that binds `buffer` (called when it is destroyed). */
  dropBuffer(buffer: GPUBuffer): void {
    const id = this.#ids.get(buffer);
    if (id === undefined) return;
    const set = this.#byBuffer.get(id);
    if (set) { for (const e of [...set]) this.#remove(e); }
    this.#ids.delete(buffer);
  }

  /** How many cached groups bind `buffer` (tests). */
  groupsBinding(buffer: GPUBuffer): number {
    const id = this.#ids.get(buffer);
    return id === undefined ? 0 : (this.#byBuffer.get(id)?.size ?? 0);
  }

  clear(): void {
    this.#buckets.clear();
    this.#order.clear();
    this.#byBuffer.clear();
  }
}

/** One reusable key object: `get` fills it per binding instead of allocating. */
const KEY: BindingKey = { buffer: undefined as unknown as GPUBuffer, offset: 0, size: 0 };

function sameFields(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
