/**
 * The kernel ladder's disk cache: per adapter and kernel, the timing runs behind a choice, keyed
 * by a fingerprint of the kernel's shaders and probe so an edited kernel is timed again. Entries
 * older than MAX_AGE_DAYS, or from another ladder version, are not used. A file that cannot be
 * read or parsed is reported and treated as empty; writes re-read the file (other processes may
 * have added kernels since) and go through src/io/atomic.ts, so a crash never leaves half a file.
 */
import { dirname } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import type { LadderKernel } from "./ladder_registry.ts";
import type { RunTimes } from "./ladder_probe.ts";

/** Bump when the timing method or the cache format changes, so cached choices are made again. */
export const LADDER_VERSION = 2;
/** Choices older than this are timed from scratch (drivers and machines change). */
export const MAX_AGE_DAYS = 30;

export interface CacheEntry {
  /** The merged choice (redundant with `runs`; kept for people reading the file). */
  variant: string;
  fingerprint: string;
  runs: RunTimes[];
  /** ISO time of the first run: the age that MAX_AGE_DAYS counts. */
  firstMeasuredAt: string;
  /** ISO time of the latest run. */
  measuredAt: string;
}

/** adapterKey -> kernel -> entry */
export type CacheFile = Record<string, Record<string, CacheEntry>>;

/** FNV-1a, 32 bits, as 8 hex digits: enough to notice an edited shader. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

const SHADER_DIR = new URL("../../shaders/", import.meta.url);
const fingerprints = new Map<string, string>();

/** The kernel's fingerprint: ladder version, variants, probe and prior source, shader texts. */
export function ladderFingerprint(k: LadderKernel): string {
  let f = fingerprints.get(k.name);
  if (f === undefined) {
    // The probe's and prior's source too: a changed probe shape invalidates old timings.
    let text = `v${LADDER_VERSION}|${k.name}|${k.variants.join(",")}|${k.probe}|${k.prior}`;
    for (const s of k.shaders) {
      try {
        text += `|${s}:${Deno.readTextFileSync(new URL(s, SHADER_DIR))}`;
      } catch {
        text += `|${s}:?`;
      }
    }
    f = fnv1a(text);
    fingerprints.set(k.name, f);
  }
  return f;
}

/** The file's adapters table; `problem` says why an unusable file was treated as empty. */
export function readLadderCache(path: string): { file: CacheFile; problem?: string } {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { file: {} };
    return { file: {}, problem: `cannot read ${path}: ${(e as Error).message}` };
  }
  try {
    const raw = JSON.parse(text);
    if (raw?.version !== LADDER_VERSION || typeof raw.adapters !== "object" || !raw.adapters) {
      return { file: {}, problem: `${path}: not a version ${LADDER_VERSION} ladder cache` };
    }
    return { file: raw.adapters as CacheFile };
  } catch (e) {
    return { file: {}, problem: `${path}: ${(e as Error).message}` };
  }
}

function validEntry(e: unknown, k: LadderKernel): e is CacheEntry {
  const c = e as CacheEntry | undefined;
  return typeof c === "object" && c !== null && typeof c.variant === "string" &&
    k.variants.includes(c.variant) && c.fingerprint === ladderFingerprint(k) &&
    Array.isArray(c.runs) && c.runs.length > 0 &&
    c.runs.every((r) => typeof r === "object" && r !== null) &&
    typeof c.firstMeasuredAt === "string" && Number.isFinite(Date.parse(c.firstMeasuredAt));
}

/**
 * One cache file (or none: `path` null keeps entries in memory only), read once on first use;
 * problems go to `log`.
 */
export class LadderCache {
  #file: CacheFile | undefined;

  constructor(readonly path: string | null, readonly log: (line: string) => void) {}

  #load(): CacheFile {
    if (this.#file) return this.#file;
    if (this.path === null) return (this.#file = {});
    const { file, problem } = readLadderCache(this.path);
    if (problem) this.log(`ignoring the cache (${problem}); choices will be timed again`);
    return (this.#file = file);
  }

  /** The entry for this adapter and kernel, unless missing, invalid or older than MAX_AGE_DAYS. */
  entry(adapterKey: string, k: LadderKernel, now: number): CacheEntry | undefined {
    const e = this.#load()[adapterKey]?.[k.name];
    if (!validEntry(e, k)) return undefined;
    const ageDays = (now - Date.parse(e.firstMeasuredAt)) / 86_400_000;
    return ageDays <= MAX_AGE_DAYS ? e : undefined;
  }

  /**
   * Keeps the entry in memory and writes it to the file, merged with what other processes wrote
   * since it was read; a file that cannot be written is logged and the entry kept in memory.
   */
  async store(adapterKey: string, kernel: string, entry: CacheEntry): Promise<void> {
    (this.#load()[adapterKey] ??= {})[kernel] = entry;
    if (this.path === null) return;
    try {
      const { file } = readLadderCache(this.path);
      (file[adapterKey] ??= {})[kernel] = entry;
      await Deno.mkdir(dirname(this.path), { recursive: true });
      await writeFileAtomic(
        this.path,
        JSON.stringify({ version: LADDER_VERSION, adapters: file }, null, 1) + "\n",
      );
    } catch (e) {
      this.log(`cannot write ${this.path} (${(e as Error).message}); choices kept in memory`);
    }
  }
}
