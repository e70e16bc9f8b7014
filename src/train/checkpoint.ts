/**
 * Training checkpoints: everything a run needs to continue bit for bit — the adapter (also a
 * usable PEFT folder), AdamW moments and step, the data cursor, and the settings it ran with.
 * Each checkpoint folder is built under a temporary name, fsynced, then renamed into place, so
 * a crash at any moment leaves either the whole checkpoint or none of it.
 */
import { join } from "node:path";
import { OutputDir, writeFileAtomic } from "../io/atomic.ts";
import { SafetensorsFile, writeSafetensors } from "../io/safetensors.ts";
import { readJsonFile } from "../io/checkpoint.ts";
import { asBytes } from "../io/dtype.ts";
import type { LoraLayout } from "../model/lora.ts";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, saveAdapter } from "./peft.ts";
import { invalidArgument, notFound } from "../util/errors.ts";

export const CHECKPOINTS_DIR = "checkpoints";
const OPTIMIZER_FILE = "optimizer.safetensors";
const STATE_FILE = "trainer_state.json";
const FORMAT = "qlorad-checkpoint-1";

export interface DataCursor {
  epoch: number;
  /** Index of the next micro-batch (or example) within the epoch's order. */
  index: number;
}

export interface TrainerState {
  format: string;
  /** Optimizer steps completed. */
  step: number;
  totalSteps: number;
  cursor: DataCursor;
  /** The settings the run was started with; a resume must match them. */
  settings: Record<string, unknown>;
  /** Training loss of the last step, for the summary. */
  lastLoss?: number;
  /** Label tokens trained on so far. */
  tokensSeen: number;
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, "0")}`;
}

/** Writes `<outputDir>/checkpoints/step-N` atomically; returns its path. */
export async function saveCheckpoint(
  outputDir: string,
  layout: LoraLayout,
  adapter: Float32Array,
  optimizer: { m: Float32Array; v: Float32Array; step: number },
  state: Omit<TrainerState, "format">,
  baseModel: string,
): Promise<string> {
  const final = join(outputDir, CHECKPOINTS_DIR, checkpointName(state.step));
  const out = await OutputDir.create(final, { overwrite: true });
  try {
    await saveAdapter(out.path, layout, adapter, baseModel);
    await writeSafetensors(out.file(OPTIMIZER_FILE), [
      { name: "exp_avg", dtype: "F32", shape: [optimizer.m.length], data: asBytes(optimizer.m) },
      { name: "exp_avg_sq", dtype: "F32", shape: [optimizer.v.length], data: asBytes(optimizer.v) },
    ], { format: "pt", optimizer_step: String(optimizer.step) });
    await writeFileAtomic(
      out.file(STATE_FILE),
      JSON.stringify({ format: FORMAT, ...state }, null, 2) + "\n",
    );
    await out.commit();
  } catch (e) {
    await out.abort();
    throw e;
  }
  return final;
}

export interface LoadedCheckpoint {
  dir: string;
  state: TrainerState;
  adapterDir: string;
  optimizer: { m: Float32Array; v: Float32Array; step: number };
}

/** The newest complete checkpoint under `<outputDir>/checkpoints`, if any. */
export async function latestCheckpoint(outputDir: string): Promise<string | undefined> {
  const dir = join(outputDir, CHECKPOINTS_DIR);
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory && /^step-\d{8}$/.test(e.name)) names.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  names.sort();
  return names.length ? join(dir, names.at(-1)!) : undefined;
}

/**
 * Reads a checkpoint folder, or the newest checkpoint of an output folder. The adapter itself
 * is read by the caller through peft.loadAdapter(`adapterDir`).
 */
export async function loadCheckpoint(path: string): Promise<LoadedCheckpoint> {
  let dir = path;
  try {
    await Deno.stat(join(dir, STATE_FILE));
  } catch {
    const latest = await latestCheckpoint(path);
    if (!latest) {
      throw notFound(
        `${path}: no checkpoint (expected ${STATE_FILE}, or ${CHECKPOINTS_DIR}/step-*)`,
      );
    }
    dir = latest;
  }
  const state = await readJsonFile(join(dir, STATE_FILE)) as TrainerState;
  if (!state || state.format !== FORMAT) {
    throw invalidArgument(`${join(dir, STATE_FILE)}: not a ${FORMAT} trainer state`);
  }
  for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPTIMIZER_FILE]) {
    try {
      await Deno.stat(join(dir, f));
    } catch {
      throw invalidArgument(`${dir}: incomplete checkpoint, ${f} is missing`);
    }
  }
  const opt = await SafetensorsFile.open(join(dir, OPTIMIZER_FILE));
  try {
    const m = await opt.readFloat32("exp_avg");
    const v = await opt.readFloat32("exp_avg_sq");
    const step = Number(opt.metadata.optimizer_step);
    if (!Number.isInteger(step) || step !== state.step) {
      throw invalidArgument(
        `${dir}: optimizer step ${step} does not match trainer step ${state.step}`,
      );
    }
    return { dir, state, adapterDir: dir, optimizer: { m, v, step } };
  } finally {
    opt.close();
  }
}
