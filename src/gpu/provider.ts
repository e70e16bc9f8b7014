/**
 * Finds a WebGPU adapter. Dawn (npm `webgpu`) first with its native backends
 * (Vulkan, Metal, D3D12), then Dawn's OpenGL ES backend in compatibility mode
 * (Mesa llvmpipe on CPU-only machines), then Deno's own WebGPU. `QLORAD_GPU_BACKEND`
 * forces one: vulkan | metal | d3d12 | opengles | dawn (Dawn's default) | deno (parsed in
 * src/util/settings.ts).
 */
import { create, globals } from "webgpu";
import { GpuUnavailableError } from "./errors.ts";
import { installDawnTickPacing } from "./dawn_ticks.ts";
import { quietDawn } from "./dawn_log.ts";
import { type BackendChoice, gpuBackendSetting } from "../util/settings.ts";

export type { BackendChoice };

export interface AdapterDescription {
  provider: "dawn" | "deno";
  backend: string;
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  fallback: boolean;
}

export interface FoundAdapter {
  adapter: GPUAdapter;
  description: AdapterDescription;
  /** Dawn's instance: must stay referenced while the device lives, dropped on close. */
  instance?: GPU;
}

const DAWN_TOGGLES = [
  "allow_unsafe_apis",
  "vulkan_enable_f16_on_nvidia",
  "use_vulkan_memory_model",
];

let globalsInstalled = false;
/**
 * Every Dawn instance created stays referenced until exit: an instance that found no
 * adapter and is collected while another one is in use aborts the process at exit.
 */
const dawnInstances: GPU[] = [];

/**
 * Dawn's GPU* classes and usage constants (GPUBufferUsage, ...) as globals, and the pacing of
 * its completion polling (src/gpu/dawn_ticks.ts), once.
 */
function installDawnGlobals(): void {
  if (globalsInstalled) return;
  installDawnTickPacing();
  // Deno has its own GPUBufferUsage etc.; Dawn's values are the same spec constants.
  for (const [name, value] of Object.entries(globals)) {
    if (!(name in globalThis)) Object.defineProperty(globalThis, name, { value, writable: true });
  }
  globalsInstalled = true;
}

async function tryDawn(
  backend: string | undefined,
  featureLevel: "core" | "compatibility",
): Promise<FoundAdapter | undefined> {
  installDawnGlobals();
  // Unsafe APIs expose the experimental subgroup-matrix feature; NVIDIA's Vulkan driver needs
  // the f16 toggle for `shader-f16`. Both are inert where the hardware lacks the feature.
  const flags = [
    ...(backend ? [`backend=${backend}`] : []),
    `enable-dawn-features=${DAWN_TOGGLES.join(",")}`,
  ];
  // Dawn prints its notices during both native calls (src/gpu/dawn_log.ts holds them back).
  const made = quietDawn(() => create(flags) as unknown as GPU);
  const instance = made.value;
  dawnInstances.push(instance);
  const asked = quietDawn(() =>
    instance.requestAdapter({
      featureLevel,
      powerPreference: "high-performance",
    } as GPURequestAdapterOptions)
  );
  const notices = [...made.notices, ...asked.notices];
  // A rejected request keeps the notices too: they are usually why (e.g. "Couldn't load Vulkan").
  const adapter = await asked.value.catch((err: unknown) => {
    if (!notices.length) throw err;
    throw new Error(
      `${err instanceof Error ? err.message : String(err)} (Dawn: ${notices.join("; ")})`,
      {
        cause: err,
      },
    );
  });
  if (!adapter) {
    if (notices.length) throw new Error(`no adapter (Dawn: ${notices.join("; ")})`);
    return undefined;
  }
  return { adapter, instance, description: describe(adapter, "dawn", backend ?? "default") };
}

async function tryDeno(): Promise<FoundAdapter | undefined> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return undefined;
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return undefined;
  return { adapter, description: describe(adapter, "deno", "wgpu") };
}

function describe(adapter: GPUAdapter, provider: "dawn" | "deno", backend: string) {
  const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  const fallback = Boolean(
    (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
      (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter,
  );
  return {
    provider,
    backend,
    vendor: info?.vendor ?? "",
    architecture: info?.architecture ?? "",
    device: info?.device ?? "",
    description: info?.description ?? "",
    fallback,
  };
}

/** QLORAD_GPU_BACKEND (default auto); a value that is not a backend names the variable. */
export function backendFromEnv(): BackendChoice {
  return gpuBackendSetting();
}

export async function findAdapter(choice: BackendChoice = backendFromEnv()): Promise<FoundAdapter> {
  const attempts: Array<[string, () => Promise<FoundAdapter | undefined>]> = [];
  switch (choice) {
    case "deno":
      attempts.push(["deno", tryDeno]);
      break;
    case "dawn":
      attempts.push(["dawn", () => tryDawn(undefined, "core")]);
      break;
    case "opengles":
      attempts.push(["dawn opengles", () => tryDawn("opengles", "compatibility")]);
      break;
    case "vulkan":
    case "metal":
    case "d3d12":
      attempts.push([`dawn ${choice}`, () => tryDawn(choice, "core")]);
      break;
    case "auto":
      attempts.push(["dawn", () => tryDawn(undefined, "core")]);
      attempts.push(["dawn opengles", () => tryDawn("opengles", "compatibility")]);
      attempts.push(["deno", tryDeno]);
      break;
  }
  const failures: string[] = [];
  for (const [name, attempt] of attempts) {
    try {
      const found = await attempt();
      if (found) return found;
      failures.push(`${name}: no adapter`);
    } catch (e) {
      failures.push(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  throw new GpuUnavailableError(
    `no WebGPU adapter (${failures.join("; ")}). On a CPU-only Linux machine install ` +
      `libegl1 libegl-mesa0 libgl1-mesa-dri and set EGL_PLATFORM=surfaceless`,
  );
}
