/**
 * The QLORAD_* environment variables of the GPU runtime and the kernel ladder, parsed into typed
 * settings in one place, once per consumer at its start-up (GpuContext.open, a KernelLadder's
 * first use, the Dawn polling install), instead of Deno.env reads scattered through hot paths
 * such as every GPU wait or every matmul encode. The environment is a parameter (`{get(name)}`:
 * Deno.env, or a Map in tests); a bad value is an error that names the variable. Lives in
 * src/util so every layer, src/gpu included, may use it. docs/SETTINGS.md lists every variable
 * qlorad reads, these and the ones the CLI, telemetry and scripts read themselves.
 */
import { invalidArgument } from "./errors.ts";

/** Where settings come from: Deno.env, or a Map in tests. */
export interface SettingsEnv {
  get(name: string): string | undefined;
}

/** The process environment; without --allow-env every variable reads as unset. */
export function processEnv(): SettingsEnv {
  return {
    get(name: string): string | undefined {
      try {
        return Deno.env.get(name);
      } catch {
        return undefined; // no --allow-env
      }
    },
  };
}

export const GPU_BACKEND_ENV = "QLORAD_GPU_BACKEND";
export const DAWN_POLL_ENV = "QLORAD_DAWN_POLL";
export const MAX_BINDING_BYTES_ENV = "QLORAD_MAX_BINDING_BYTES";
export const GPU_STALL_WARN_ENV = "QLORAD_GPU_STALL_WARN_S";
export const GPU_TIMEOUT_ENV = "QLORAD_GPU_TIMEOUT_S";
export const VARIANTS_ENV = "QLORAD_KERNEL_VARIANTS";
export const MODE_ENV = "QLORAD_LADDER";
export const CACHE_ENV = "QLORAD_LADDER_CACHE";
export const LOG_ENV = "QLORAD_LADDER_LOG";

export const GPU_BACKENDS = [
  "auto",
  "dawn",
  "vulkan",
  "metal",
  "d3d12",
  "opengles",
  "deno",
] as const;
export type BackendChoice = typeof GPU_BACKENDS[number];

/** `paced` (the default) paces Dawn's completion polling (src/gpu/dawn_ticks.ts). */
export type DawnPoll = "paced" | "unpaced";

export interface GpuSettings {
  /** QLORAD_GPU_BACKEND, lower-cased; default auto. */
  backend: BackendChoice;
  /** QLORAD_DAWN_POLL; default paced. */
  dawnPoll: DawnPoll;
  /** QLORAD_MAX_BINDING_BYTES: a forced cap on one binding (tests of the split paths). */
  maxBindingBytes?: number;
  /** QLORAD_GPU_STALL_WARN_S: a GPU wait this long logs a warning; default 10. */
  stallWarnS: number;
  /** QLORAD_GPU_TIMEOUT_S: a GPU wait this long fails with GpuTimeoutError; default 600. */
  timeoutS: number;
}

export type LadderMode = "time" | "prior";

export interface LadderSettings {
  /** QLORAD_KERNEL_VARIANTS: kernel -> forced variant. */
  overrides: Map<string, string>;
  /** QLORAD_LADDER; default time. */
  mode: LadderMode;
  /** QLORAD_LADDER_CACHE (`off`: null), else $XDG_CACHE_HOME or ~/.cache; null without one. */
  cachePath: string | null;
  /** QLORAD_LADDER_LOG: any non-empty value logs each timing. */
  log: boolean;
}

/** The value, or undefined when unset or empty (an empty variable means the default). */
function value(env: SettingsEnv, name: string): string | undefined {
  const v = env.get(name);
  return v === undefined || v === "" ? undefined : v;
}

function oneOf<T extends string>(name: string, raw: string, allowed: readonly T[]): T {
  if (!allowed.includes(raw as T)) {
    throw invalidArgument(`${name}=${raw} is not one of ${allowed.join(", ")}`);
  }
  return raw as T;
}

function positiveSeconds(env: SettingsEnv, name: string, fallback: number): number {
  const raw = value(env, name);
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) {
    throw invalidArgument(
      `${name} must be a positive number of seconds, got ${JSON.stringify(raw)}`,
    );
  }
  return v;
}

/** A binding cap in bytes (`what` names where it came from: an option or the variable). */
export function parseBindingCap(raw: string | number, what: string): number {
  const v = Number(raw);
  if (typeof raw === "string" && raw.trim() === "" || !Number.isInteger(v) || v < 16) {
    throw invalidArgument(`${what} must be an integer >= 16 (bytes), got ${JSON.stringify(raw)}`);
  }
  return v;
}

/** QLORAD_GPU_BACKEND alone (the provider's default when no context is opened). */
export function gpuBackendSetting(env: SettingsEnv = processEnv()): BackendChoice {
  return oneOf(
    GPU_BACKEND_ENV,
    (value(env, GPU_BACKEND_ENV) ?? "auto").toLowerCase(),
    GPU_BACKENDS,
  );
}

/** QLORAD_DAWN_POLL alone (read once, when Dawn's globals are installed). */
export function dawnPollSetting(env: SettingsEnv = processEnv()): DawnPoll {
  return oneOf(DAWN_POLL_ENV, value(env, DAWN_POLL_ENV) ?? "paced", ["paced", "unpaced"] as const);
}

/** The GPU runtime's settings; GpuContext.open reads them once. */
export function gpuSettings(env: SettingsEnv = processEnv()): GpuSettings {
  const cap = value(env, MAX_BINDING_BYTES_ENV);
  return {
    backend: gpuBackendSetting(env),
    dawnPoll: dawnPollSetting(env),
    maxBindingBytes: cap === undefined ? undefined : parseBindingCap(cap, MAX_BINDING_BYTES_ENV),
    stallWarnS: positiveSeconds(env, GPU_STALL_WARN_ENV, 10),
    timeoutS: positiveSeconds(env, GPU_TIMEOUT_ENV, 600),
  };
}

/** `matmul=blocked, attention=row` -> Map; syntax errors name the variable. */
export function parseVariantOverrides(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (raw ?? "").split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const m = /^([a-z0-9_]+)\s*=\s*([a-z0-9_]+)$/.exec(item);
    if (!m) {
      throw invalidArgument(`${VARIANTS_ENV}: "${item}" is not kernel=variant`);
    }
    out.set(m[1], m[2]);
  }
  return out;
}

/** QLORAD_LADDER alone; the message names the variable and the value. */
export function parseLadderMode(raw: string | undefined): LadderMode {
  const mode = raw === undefined || raw === "" ? "time" : raw;
  if (mode !== "time" && mode !== "prior") {
    throw invalidArgument(`${MODE_ENV}: "${mode}" is not one of time, prior`);
  }
  return mode;
}

/** QLORAD_LADDER_CACHE (`off`: none), else under $XDG_CACHE_HOME, else under ~/.cache. */
export function ladderCachePath(env: SettingsEnv = processEnv()): string | null {
  const explicit = value(env, CACHE_ENV);
  if (explicit !== undefined) return explicit === "off" ? null : explicit;
  const xdg = value(env, "XDG_CACHE_HOME");
  if (xdg) return `${xdg}/qlorad/ladder.json`;
  const home = value(env, "HOME");
  return home ? `${home}/.cache/qlorad/ladder.json` : null;
}

/** The kernel ladder's settings; a KernelLadder reads them once, at its first use. */
export function ladderSettings(env: SettingsEnv = processEnv()): LadderSettings {
  return {
    overrides: parseVariantOverrides(env.get(VARIANTS_ENV)),
    mode: parseLadderMode(env.get(MODE_ENV)),
    cachePath: ladderCachePath(env),
    log: Boolean(env.get(LOG_ENV)),
  };
}
