/**
 * A Generate job's settings: defaults and ranges written once (as src/train/settings.ts does for
 * the other jobs), with each error naming the user's field through `name`.
 */
import { flag, inRange, SettingError, type SettingNames } from "./settings.ts";
import type { SamplingSettings } from "./sampling.ts";

export interface GenerateSettings extends SamplingSettings {
  maxNewTokens: number;
  seed: number;
  stop: string[];
  ignoreEos: boolean;
}

export type GenerateKey = keyof GenerateSettings;

export const GENERATE_DEFAULTS: GenerateSettings = {
  maxNewTokens: 128,
  temperature: 0,
  topK: 0,
  topP: 1,
  seed: 0,
  stop: [],
  ignoreEos: false,
};

/** At most this many stop strings, each 1..MAX_STOP_CHARS characters. */
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_CHARS = 256;

export function generateSettings(
  input: { [K in GenerateKey]?: unknown },
  name: SettingNames<GenerateKey>,
): GenerateSettings {
  const d = GENERATE_DEFAULTS;
  const stop = input.stop ?? d.stop;
  const stopName = name("stop");
  if (!Array.isArray(stop)) {
    throw new SettingError(stopName, `${stopName}: must be a list of texts`);
  }
  if (stop.length > MAX_STOP_STRINGS) {
    throw new SettingError(
      stopName,
      `${stopName}: at most ${MAX_STOP_STRINGS} stop strings, got ${stop.length}`,
    );
  }
  // Whitespace is a fine stop string ("\n"); only the empty one would stop before anything.
  if (stop.some((s) => typeof s !== "string" || s.length === 0 || s.length > MAX_STOP_CHARS)) {
    throw new SettingError(stopName, `${stopName}: each must be 1..${MAX_STOP_CHARS} characters`);
  }
  return {
    maxNewTokens: inRange(
      input.maxNewTokens,
      name("maxNewTokens"),
      { min: 1, max: 4096, integer: true },
      d.maxNewTokens,
    ),
    temperature: inRange(
      input.temperature,
      name("temperature"),
      { min: 0, max: 100 },
      d.temperature,
    ),
    topK: inRange(input.topK, name("topK"), { min: 0, max: 1 << 24, integer: true }, d.topK),
    topP: inRange(input.topP, name("topP"), { min: 0, max: 1, openMin: true }, d.topP),
    seed: inRange(input.seed, name("seed"), { min: 0, max: 0xffffffff, integer: true }, d.seed),
    stop: [...stop],
    ignoreEos: flag(input.ignoreEos, name("ignoreEos"), d.ignoreEos),
  };
}
