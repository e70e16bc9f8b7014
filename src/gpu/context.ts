/**
 * The GPU runtime: one device, one memory ledger through which every buffer goes, a
 * pipeline cache, batched dispatch (many dispatches per pass, one submit) with bind groups and
 * uniforms reused across steps, counters of the host's share of each step (`stats`), and error
 * capture that turns validation errors, OOM and device loss into typed errors.
 */
import { type AdapterDescription, type BackendChoice, findAdapter } from "./provider.ts";
import {
  GpuDeviceLostError,
  GpuOutOfMemoryError,
  GpuTimeoutError,
  GpuValidationError,
} from "./errors.ts";
import { type MemoryCategory, MemoryLedger } from "./memory.ts";
import { BindGroupCache, type BindingKey, WHOLE_BUFFER } from "./bind_groups.ts";
import { UniformCache } from "./uniforms.ts";
import { type ShaderParams, shaderSource } from "./shader_source.ts";
import type { UniformLayout } from "./uniform_layout.ts";
import {
  type GpuSettings,
  gpuSettings,
  MAX_BINDING_BYTES_ENV,
  parseBindingCap,
  processEnv,
  type SettingsEnv,
} from "../util/settings.ts";

/** A GPU buffer with its accounting; `size` is the logical byte size. */
export class GpuBuffer {
  #ctx: GpuContext;
  #destroyed = false;

  constructor(
    ctx: GpuContext,
    readonly buffer: GPUBuffer,
    readonly size: number,
    readonly category: MemoryCategory,
    readonly label: string,
  ) {
    this.#ctx = ctx;
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    this.#ctx.memory.remove(this.category, this.buffer.size);
    this.#ctx.forgetBuffer(this.buffer);
    this.buffer.destroy();
  }
}

export type Binding = GpuBuffer | { buffer: GpuBuffer; offset: number; size: number };

/** Workgroup grid for n groups: x up to the per-dimension limit, the rest in y. */
export function grid(n: number, maxPerDim = 65535): [number, number] {
  if (n <= maxPerDim) return [Math.max(1, n), 1];
  const y = Math.ceil(n / maxPerDim);
  return [Math.ceil(n / y), y];
}

const STORAGE = 0x80; // GPUBufferUsage.STORAGE
const COPY_SRC = 0x04;
const COPY_DST = 0x08;
const MAP_READ = 0x01;

/**
 * Optional per-batch timing (src/telemetry/gpu_timing.ts attaches one while a job is traced);
 * defined here so the runtime does not depend on telemetry.
 */
export interface BatchTimingHook {
  begin(label: string): BatchTiming | undefined;
}

export interface BatchTiming {
  passWrites(): GPUComputePassTimestampWrites | undefined;
  beforeFinish(encoder: GPUCommandEncoder): void;
  submitted(): void;
}

/**
 * Running totals of the host's work on the GPU, for "dispatches per step and host ms per step":
 * take `ctx.statsSnapshot()` before and after a step and subtract (`statsDelta`).
 */
export interface GpuStats {
  /** DispatchBatch objects made. */
  batches: number;
  /** Queue submits of batches (a training step should make one). */
  submits: number;
  dispatches: number;
  /** Buffer-to-buffer copies recorded in batches. */
  copies: number;
  /** Bind groups made, and dispatches that found theirs in the cache. */
  bindGroupsCreated: number;
  bindGroupHits: number;
  /** Host milliseconds recording dispatches and copies (DispatchBatch.dispatch and copy). */
  encodeMs: number;
  /** Host milliseconds in DispatchBatch.submit (finish and queue submit; Dawn's OpenGL ES
   * backend runs the work itself inside it, so there it is GPU time too). */
  submitMs: number;
}

function emptyStats(): GpuStats {
  return {
    batches: 0,
    submits: 0,
    dispatches: 0,
    copies: 0,
    bindGroupsCreated: 0,
    bindGroupHits: 0,
    encodeMs: 0,
    submitMs: 0,
  };
}

/** after - before, field by field. */
export function statsDelta(before: GpuStats, after: GpuStats): GpuStats {
  const out = emptyStats();
  for (const k of Object.keys(out) as Array<keyof GpuStats>) out[k] = after[k] - before[k];
  return out;
}

export interface GpuOpenOptions {
  backend?: BackendChoice;
  /** Logged once with the adapter description; default prints to stderr. */
  log?: (line: string) => void;
  /**
   * Caps `maxBindingBytes` below the adapter's limits, so tests run the split paths (tables in
   * row chunks) on small tensors; default QLORAD_MAX_BINDING_BYTES, else no cap.
   */
  maxBindingBytes?: number;
  /** Where the QLORAD_* settings are read from, once, here (src/util/settings.ts); default
   * Deno.env. */
  env?: SettingsEnv;
}

export { MAX_BINDING_BYTES_ENV };

/** The forced binding cap: the option, else the settings' QLORAD_MAX_BINDING_BYTES. */
function bindingCap(options: GpuOpenOptions, settings: GpuSettings): number | undefined {
  if (options.maxBindingBytes !== undefined) {
    return parseBindingCap(options.maxBindingBytes, "maxBindingBytes");
  }
  return settings.maxBindingBytes;
}

/**
 * Features requested whenever the adapter has them: kernels pick variants by what the device
 * got (`ctx.capabilities`), never by adapter name.
 */
const OPTIONAL_FEATURES = [
  "timestamp-query",
  "shader-f16",
  "subgroups",
  "subgroup-size-control",
  "chromium-experimental-subgroup-matrix",
] as const;

/** One shape `subgroupMatrixMultiplyAccumulate` supports: M x N result, K deep, its types. */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** What the device can run beyond core WebGPU, for choosing kernel variants. */
export interface GpuCapabilities {
  /** `shader-f16`: f16 storage and arithmetic in WGSL (`enable f16;`). */
  f16: boolean;
  /** `subgroups`: subgroupAdd, subgroupShuffle, ... (`enable subgroups;`). */
  subgroups: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  /** Dawn's `chromium-experimental-subgroup-matrix` shapes; empty when the feature is absent. */
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
  timestampQuery: boolean;
}

const NO_CAPABILITIES: GpuCapabilities = {
  f16: false,
  subgroups: false,
  subgroupMinSize: 0,
  subgroupMaxSize: 0,
  subgroupMatrixConfigs: [],
  timestampQuery: false,
};

function capabilitiesOf(adapter: GPUAdapter, device: GPUDevice): GpuCapabilities {
  const info = (adapter as GPUAdapter & { info?: Record<string, unknown> }).info ?? {};
  const has = (f: string) => (device.features as unknown as { has(f: string): boolean }).has(f);
  const configs = has("chromium-experimental-subgroup-matrix")
    ? ((info.subgroupMatrixConfigs as SubgroupMatrixConfig[] | undefined) ?? []).map((c) => ({
      componentType: String(c.componentType),
      resultComponentType: String(c.resultComponentType),
      M: Number(c.M),
      N: Number(c.N),
      K: Number(c.K),
    }))
    : [];
  return {
    f16: has("shader-f16"),
    subgroups: has("subgroups"),
    subgroupMinSize: Number(info.subgroupMinSize ?? 0),
    subgroupMaxSize: Number(info.subgroupMaxSize ?? 0),
    subgroupMatrixConfigs: configs,
    timestampQuery: has("timestamp-query"),
  };
}

export class GpuContext {
  readonly memory = new MemoryLedger();
  /** Optional features the device was created with (set by `open`). */
  capabilities: GpuCapabilities = NO_CAPABILITIES;
  /** Set while a job is traced; untimed batches cost one property read. */
  timing: BatchTimingHook | undefined = undefined;
  /** Counters since the device was opened (see GpuStats). */
  readonly stats: GpuStats = emptyStats();
  readonly bindGroups: BindGroupCache;
  #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  readonly #uniforms: UniformCache;
  #errors: Error[] = [];
  #lost: GpuDeviceLostError | undefined;
  #instance: GPU | undefined;
  #bindingCap: number | undefined;

  private constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterDescription,
    instance: GPU | undefined,
    /** The QLORAD_* settings read when the context was opened. */
    readonly settings: GpuSettings,
  ) {
    this.#instance = instance;
    this.bindGroups = new BindGroupCache(device);
    this.#uniforms = new UniformCache(device, (b) => this.bindGroups.dropBuffer(b));
    device.lost.then((info) => {
      if (info.reason !== "destroyed") {
        this.#lost = new GpuDeviceLostError(info.message || String(info.reason));
      }
    });
    device.addEventListener("uncapturederror", (ev) => {
      this.#errors.push(toTypedError((ev as GPUUncapturedErrorEvent).error));
    });
  }

  static async open(options: GpuOpenOptions = {}): Promise<GpuContext> {
    const settings = gpuSettings(options.env ?? processEnv());
    const cap = bindingCap(options, settings);
    const found = await findAdapter(options.backend ?? settings.backend);
    const a = found.adapter.limits;
    const want = (name: keyof GPUSupportedLimits, cap?: number) => {
      const v = a[name] as number;
      return cap === undefined ? v : Math.min(v, cap);
    };
    const offered = found.adapter.features as unknown as { has(f: string): boolean };
    const features = OPTIONAL_FEATURES.filter((f) => offered.has(f));
    const device = await found.adapter.requestDevice({
      requiredFeatures: features as GPUFeatureName[],
      requiredLimits: {
        maxStorageBufferBindingSize: want("maxStorageBufferBindingSize"),
        maxBufferSize: want("maxBufferSize"),
        maxStorageBuffersPerShaderStage: want("maxStorageBuffersPerShaderStage"),
        maxComputeWorkgroupStorageSize: want("maxComputeWorkgroupStorageSize"),
        maxComputeInvocationsPerWorkgroup: want("maxComputeInvocationsPerWorkgroup", 256),
        maxComputeWorkgroupSizeX: want("maxComputeWorkgroupSizeX", 256),
        maxComputeWorkgroupSizeY: want("maxComputeWorkgroupSizeY", 256),
      },
    });
    const ctx = new GpuContext(device, found.description, found.instance, settings);
    ctx.capabilities = capabilitiesOf(found.adapter, device);
    ctx.#bindingCap = cap;
    const d = found.description;
    (options.log ?? ((l) => console.error(l)))(
      `qlorad: GPU ${d.provider}/${d.backend}: ${
        [d.vendor, d.architecture, d.device, d.description].filter(Boolean).join(" ")
      }${d.fallback ? " (fallback adapter)" : ""}`,
    );
    return ctx;
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /**
   * The most bytes one buffer that a kernel binds whole may hold: the smaller of
   * maxStorageBufferBindingSize and maxBufferSize, or the forced cap (GpuOpenOptions
   * .maxBindingBytes, QLORAD_MAX_BINDING_BYTES), rounded down to 16 bytes. Every splitter (tables
   * in row chunks, chunked scratch) sizes against this one number.
   */
  get maxBindingBytes(): number {
    const l = this.limits;
    const limit = Math.min(
      l.maxStorageBufferBindingSize,
      l.maxBufferSize,
      this.#bindingCap ?? Infinity,
    );
    return Math.floor(limit / 16) * 16;
  }

  /** CPU rasterizers (llvmpipe, lavapipe, SwiftShader), where barriers are costly and register
   * blocking pays; llvmpipe does not report itself as a fallback adapter, hence the names. */
  get isSoftware(): boolean {
    const d = this.adapter;
    return d.fallback ||
      /llvmpipe|lavapipe|softpipe|swiftshader|microsoft basic render/i.test(
        `${d.device} ${d.description} ${d.vendor} ${d.architecture}`,
      );
  }

  /** A short name for the adapter, used to key per-adapter caches (kernel choices). */
  get adapterKey(): string {
    const d = this.adapter;
    return `${d.provider}/${d.backend}/${d.vendor}/${d.architecture}/${d.device}/${d.description}`;
  }

  createBuffer(opts: {
    label: string;
    category: MemoryCategory;
    size: number;
    usage?: number;
  }): GpuBuffer {
    this.#throwIfLost();
    if (opts.size > this.limits.maxBufferSize) {
      throw new GpuOutOfMemoryError(
        `${opts.label}: ${opts.size} bytes exceeds the adapter's maxBufferSize ${this.limits.maxBufferSize}`,
      );
    }
    // Storage bindings want 4-byte multiples; 16 keeps vec4 access in bounds too.
    const padded = Math.max(16, Math.ceil(opts.size / 16) * 16);
    const buffer = this.device.createBuffer({
      label: opts.label,
      size: padded,
      usage: opts.usage ?? (STORAGE | COPY_SRC | COPY_DST),
    });
    this.memory.add(opts.category, padded);
    return new GpuBuffer(this, buffer, opts.size, opts.category, opts.label);
  }

  /** A new buffer holding `data`. */
  upload(label: string, category: MemoryCategory, data: ArrayBufferView): GpuBuffer {
    const buf = this.createBuffer({ label, category, size: data.byteLength });
    this.write(buf, data);
    return buf;
  }

  write(buf: GpuBuffer, data: ArrayBufferView, byteOffset = 0): void {
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0) {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(buf.buffer, byteOffset, bytes as Uint8Array<ArrayBuffer>);
  }

  /** Copies `byteLength` bytes back to the host; also surfaces any pending GPU error. */
  async read(
    buf: GpuBuffer,
    byteOffset = 0,
    byteLength = buf.size - byteOffset,
  ): Promise<ArrayBuffer> {
    const size = Math.ceil(byteLength / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: MAP_READ | COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(buf.buffer, byteOffset, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    try {
      await this.wait(staging.mapAsync(0x0001 /* GPUMapMode.READ */), `readback of ${buf.label}`);
      const out = staging.getMappedRange().slice(0, byteLength);
      staging.unmap();
      return out;
    } catch (e) {
      this.#throwIfLost();
      this.check();
      throw e;
    } finally {
      staging.destroy();
      this.check();
    }
  }

  async readF32(buf: GpuBuffer, offsetElems = 0, count?: number): Promise<Float32Array> {
    const n = count ?? buf.size / 4 - offsetElems;
    return new Float32Array(await this.read(buf, offsetElems * 4, n * 4));
  }

  async readU32(buf: GpuBuffer, offsetElems = 0, count?: number): Promise<Uint32Array> {
    const n = count ?? buf.size / 4 - offsetElems;
    return new Uint32Array(await this.read(buf, offsetElems * 4, n * 4));
  }

  /**
   * Compiles once per (shader, params, entry); compile errors carry the WGSL messages. With
   * `uniform`, the host layout is checked against the shader's struct first (once per pipeline;
   * src/gpu/uniform_layout.ts), throwing UniformLayoutError naming the field.
   */
  pipeline(
    shader: string,
    params: ShaderParams = {},
    entry = "main",
    uniform?: UniformLayout,
  ): Promise<GPUComputePipeline> {
    const key = `${shader}|${entry}|${JSON.stringify(params)}`;
    let code: string | undefined;
    if (uniform && !uniform.hasChecked(key)) {
      uniform.check(shader, code = shaderSource(shader, params), key);
    }
    let p = this.#pipelines.get(key);
    if (!p) {
      p = this.#compile(shader, code ?? shaderSource(shader, params), entry);
      this.#pipelines.set(key, p);
      p.catch(() => this.#pipelines.delete(key));
    }
    return p;
  }

  /** For WGSL built at run time (and tests); not cached. `uniform` as in `pipeline`. */
  pipelineFromCode(
    label: string,
    code: string,
    entry = "main",
    uniform?: UniformLayout,
  ): Promise<GPUComputePipeline> {
    uniform?.check(label, code);
    return this.#compile(label, code, entry);
  }

  async #compile(shader: string, code: string, entry: string) {
    const module = this.device.createShaderModule({ label: shader, code });
    try {
      return await this.wait(
        this.device.createComputePipelineAsync({
          label: `${shader}:${entry}`,
          layout: "auto",
          compute: { module, entryPoint: entry },
        }),
        `pipeline ${shader}:${entry}`,
      );
    } catch (e) {
      if (e instanceof GpuTimeoutError) throw e;
      const info = await this.wait(module.getCompilationInfo(), `compilation info of ${shader}`);
      const msgs = info.messages.map((m) => `${shader}:${m.lineNum}:${m.linePos} ${m.message}`);
      throw new GpuValidationError(
        `pipeline ${shader}:${entry}: ${msgs.join("; ") || (e as Error).message}`,
      );
    }
  }

  /** A small uniform buffer with these values, shared by every dispatch that needs the same ones
   * (src/gpu/uniforms.ts: found again without allocating; kept for two generations). */
  uniform(values: Uint32Array | Int32Array | Float32Array): GPUBuffer {
    return this.#uniforms.get(values);
  }

  batch(label = "batch"): DispatchBatch {
    this.#throwIfLost();
    this.stats.batches++;
    return new DispatchBatch(this, label);
  }

  /** A copy of the counters, to subtract from a later one (`statsDelta`). */
  statsSnapshot(): GpuStats {
    return { ...this.stats };
  }

  /**
   * Drops what the context remembers about a raw buffer (its cached bind groups); call before
   * destroying a GPUBuffer made outside `createBuffer`. GpuBuffer.destroy() calls it.
   */
  forgetBuffer(buffer: GPUBuffer): void {
    this.bindGroups.dropBuffer(buffer);
  }

  /** Waits for submitted work to finish. */
  async sync(): Promise<void> {
    await this.wait(this.device.queue.onSubmittedWorkDone(), "submitted work");
    this.check();
  }

  /**
   * Awaits a GPU promise with a watchdog: a warning after `QLORAD_GPU_STALL_WARN_S` (10 s) and a
   * GpuTimeoutError after `QLORAD_GPU_TIMEOUT_S` (600 s), both read when the context opened, so a
   * device that stops answering fails the job with a clear message instead of hanging it forever.
   */
  async wait<T>(promise: Promise<T>, what: string): Promise<T> {
    const warnMs = this.settings.stallWarnS * 1000;
    const failMs = this.settings.timeoutS * 1000;
    const started = performance.now();
    let warned: ReturnType<typeof setTimeout> | undefined;
    let failed: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<never>((_, reject) => {
          warned = setTimeout(() => {
            console.error(`qlorad: warning: GPU wait for ${what} has taken ${warnMs / 1000} s`);
          }, warnMs);
          failed = setTimeout(() => {
            const s = ((performance.now() - started) / 1000).toFixed(0);
            reject(new GpuTimeoutError(`no answer from the GPU for ${what} after ${s} s`));
          }, failMs);
        }),
      ]);
    } finally {
      clearTimeout(warned);
      clearTimeout(failed);
    }
  }

  /** Throws the first GPU error seen since the last check. */
  check(): void {
    this.#throwIfLost();
    const e = this.#errors.shift();
    if (e) {
      this.#errors.length = 0;
      throw e;
    }
  }

  #throwIfLost(): void {
    if (this.#lost) throw this.#lost;
  }

  destroy(): void {
    this.#uniforms.destroyAll();
    this.#pipelines.clear();
    this.bindGroups.clear();
    this.device.destroy();
    this.#instance = undefined;
  }
}

function toTypedError(error: GPUError): Error {
  const name = (error as { constructor?: { name?: string } }).constructor?.name ?? "";
  if (name.includes("OutOfMemory")) return new GpuOutOfMemoryError(error.message);
  return new GpuValidationError(error.message);
}

const NO_BINDINGS: ReadonlyArray<Binding | GPUBuffer> = [];

/** Records dispatches into compute passes of one command encoder; one submit at the end. */
export class DispatchBatch {
  #ctx: GpuContext;
  #encoder: GPUCommandEncoder;
  #pass: GPUComputePassEncoder | undefined;
  #timing: BatchTiming | undefined;
  /** What the open pass has set, so repeated pipelines and groups are not set again. */
  #pipeline: GPUComputePipeline | undefined;
  #group: GPUBindGroup | undefined;
  /** The bindings of the dispatch being recorded, read by #resolve (no closure per dispatch). */
  #bindings: ReadonlyArray<Binding | GPUBuffer> = NO_BINDINGS;
  readonly #resolve = (i: number, out: BindingKey) => resolveBinding(this.#bindings[i], out);
  /** Dispatches recorded in this batch, and host ms recording them and submitting (GpuStats). */
  dispatches = 0;
  encodeMs = 0;
  submitMs = 0;

  constructor(ctx: GpuContext, label: string) {
    this.#ctx = ctx;
    this.#encoder = ctx.device.createCommandEncoder({ label });
    this.#timing = ctx.timing?.begin(label);
  }

  /** Bindings go to group 0 in order; a uniform (GPUBuffer) may be among them. */
  dispatch(
    pipeline: GPUComputePipeline,
    bindings: ReadonlyArray<Binding | GPUBuffer>,
    workgroups: readonly [number, number?, number?],
  ): this {
    const t0 = performance.now();
    const stats = this.#ctx.stats;
    if (!this.#pass) {
      const writes = this.#timing?.passWrites();
      this.#pass = this.#encoder.beginComputePass(writes ? { timestampWrites: writes } : undefined);
    }
    const cache = this.#ctx.bindGroups;
    const misses = cache.misses;
    this.#bindings = bindings;
    const group = cache.get(pipeline, bindings.length, this.#resolve);
    this.#bindings = NO_BINDINGS;
    if (cache.misses === misses) stats.bindGroupHits++;
    else stats.bindGroupsCreated++;
    if (pipeline !== this.#pipeline) {
      this.#pass.setPipeline(pipeline);
      this.#pipeline = pipeline;
    }
    if (group !== this.#group) {
      this.#pass.setBindGroup(0, group);
      this.#group = group;
    }
    this.#pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1);
    this.dispatches++;
    stats.dispatches++;
    const dt = performance.now() - t0;
    stats.encodeMs += dt;
    this.encodeMs += dt;
    return this;
  }

  copy(src: GpuBuffer, srcOffset: number, dst: GpuBuffer, dstOffset: number, size: number): this {
    const t0 = performance.now();
    this.#endPass();
    this.#encoder.copyBufferToBuffer(src.buffer, srcOffset, dst.buffer, dstOffset, size);
    this.#ctx.stats.copies++;
    const dt = performance.now() - t0;
    this.#ctx.stats.encodeMs += dt;
    this.encodeMs += dt;
    return this;
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = undefined;
    this.#pipeline = undefined;
    this.#group = undefined;
  }

  submit(): void {
    const t0 = performance.now();
    this.#endPass();
    this.#timing?.beforeFinish(this.#encoder);
    this.#ctx.device.queue.submit([this.#encoder.finish()]);
    this.#timing?.submitted();
    this.#ctx.stats.submits++;
    const dt = performance.now() - t0;
    this.#ctx.stats.submitMs += dt;
    this.submitMs += dt;
  }
}

/** Fills `out` with what a binding names: a whole buffer, or a slice of one. */
function resolveBinding(b: Binding | GPUBuffer, out: BindingKey): void {
  if (b instanceof GpuBuffer) {
    out.buffer = b.buffer;
    out.offset = 0;
    out.size = WHOLE_BUFFER;
  } else if ("buffer" in b && b.buffer instanceof GpuBuffer) {
    out.buffer = b.buffer.buffer;
    out.offset = b.offset;
    out.size = b.size;
  } else {
    out.buffer = b as GPUBuffer;
    out.offset = 0;
    out.size = WHOLE_BUFFER;
  }
}
