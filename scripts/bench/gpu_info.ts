/**
 * What the GPU check records about the adapter it ran on: Dawn's description, the features the
 * adapter offers and the device got, every WebGPU limit, the capabilities kernels choose variants
 * by (f16, subgroups, subgroup-matrix shapes, timestamps), and the raw adapter info Dawn reports.
 */
import type { GpuCapabilities, GpuContext } from "../../src/gpu/context.ts";
import { type AdapterDescription, findAdapter } from "../../src/gpu/provider.ts";

/** The WebGPU limits by name (the spec's list; Dawn's object has getters, not own keys). */
const LIMIT_NAMES = [
  "maxTextureDimension1D",
  "maxTextureDimension2D",
  "maxTextureDimension3D",
  "maxTextureArrayLayers",
  "maxBindGroups",
  "maxBindGroupsPlusVertexBuffers",
  "maxBindingsPerBindGroup",
  "maxDynamicUniformBuffersPerPipelineLayout",
  "maxDynamicStorageBuffersPerPipelineLayout",
  "maxSampledTexturesPerShaderStage",
  "maxSamplersPerShaderStage",
  "maxStorageBuffersPerShaderStage",
  "maxStorageTexturesPerShaderStage",
  "maxUniformBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
  "maxStorageBufferBindingSize",
  "minUniformBufferOffsetAlignment",
  "minStorageBufferOffsetAlignment",
  "maxVertexBuffers",
  "maxBufferSize",
  "maxVertexAttributes",
  "maxVertexBufferArrayStride",
  "maxInterStageShaderVariables",
  "maxColorAttachments",
  "maxColorAttachmentBytesPerSample",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
];

export interface GpuInfo {
  adapter: string;
  description: AdapterDescription;
  isSoftware: boolean;
  deviceFeatures: string[];
  /** What the adapter offers (a second adapter request); null when that failed. */
  adapterFeatures: string[] | null;
  /** The device's limits (as requested: most raised to the adapter's). */
  limits: Record<string, number>;
  /** The adapter's own limits; null when the second request failed. */
  adapterLimits: Record<string, number> | null;
  capabilities: GpuCapabilities;
  /** adapter.info's fields as Dawn reports them (subgroup sizes, subgroupMatrixConfigs, ...). */
  adapterInfo: Record<string, unknown> | null;
  problems: string[];
}

function limitsOf(l: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const v = (l as unknown as Record<string, unknown>)[name];
    if (typeof v === "number") out[name] = v;
  }
  return out;
}

function featuresOf(set: unknown): string[] {
  return [...(set as Iterable<string>)].map(String).sort();
}

/** Copies an info object's readable fields (getters on the prototype too) into plain JSON. */
function plain(info: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key in info as Record<string, unknown>) {
    const v = (info as Record<string, unknown>)[key];
    if (typeof v === "function") continue;
    out[key] = v === undefined ? null : JSON.parse(JSON.stringify(v ?? null));
  }
  return out;
}

/** What the context itself knows: no new adapter request. */
export function describeDevice(ctx: GpuContext): GpuInfo {
  return {
    adapter: ctx.adapterKey,
    description: ctx.adapter,
    isSoftware: ctx.isSoftware,
    deviceFeatures: featuresOf(ctx.device.features),
    adapterFeatures: null,
    limits: limitsOf(ctx.limits),
    adapterLimits: null,
    capabilities: ctx.capabilities,
    adapterInfo: null,
    problems: [],
  };
}

/**
 * The device's description plus what the adapter offers, read from a second request for the
 * same adapter (the context keeps none); a failed request is noted in `problems`.
 */
export async function describeGpu(ctx: GpuContext): Promise<GpuInfo> {
  const info = describeDevice(ctx);
  try {
    const found = await findAdapter();
    info.adapterFeatures = featuresOf(found.adapter.features);
    info.adapterLimits = limitsOf(found.adapter.limits);
    info.adapterInfo = plain((found.adapter as GPUAdapter & { info?: unknown }).info ?? {});
  } catch (e) {
    info.problems.push(`second adapter request: ${(e as Error).message}`);
  }
  return info;
}
