/**
 * A request's model, checked before any job exists: config.json read with a size limit through
 * a path that was checked (and pinned, see confine.ts), parsed with bounded nesting, its
 * dimensions bounded (model/config_bounds.ts via llamaConfigFromHf), and, for Quantize, the
 * tensors compared with what the config says, so that a config that contradicts its weights is
 * refused at once rather than after a job has started.
 */
import { join } from "node:path";
import type { HfCheckpoint } from "../../io/checkpoint.ts";
import { readJsonFile } from "../../io/checkpoint.ts";
import {
  LINEAR_MODULES,
  linearPath,
  linearShape,
  type LlamaConfig,
  llamaConfigFromHf,
} from "../../model/config.ts";
import { invalidArgument } from "../../util/errors.ts";
import { pinPath } from "../confine.ts";
import { resolveDataPath } from "../paths.ts";

/** The largest config.json read (real ones are a few KiB). */
export const MAX_CONFIG_BYTES = 1 << 20;

/** The largest tokenizer.json a job reads whole (real ones are up to ~20 MiB). */
export const MAX_TOKENIZER_BYTES = 64 << 20;

/** Refuses a file larger than `max` bytes, naming it. */
export async function checkFileSize(hostPath: string, label: string, max: number): Promise<void> {
  const { size } = await Deno.stat(hostPath);
  if (size > max) {
    throw invalidArgument(`${label}: ${size} bytes, more than the ${max} accepted`);
  }
}

export interface ModelConfig {
  cfg: LlamaConfig;
  /** config.json as parsed. */
  raw: Record<string, unknown>;
}

/**
 * The config.json of the model folder `userPath` (field `field`): inside the data directory,
 * at most MAX_CONFIG_BYTES, valid JSON of bounded depth, a Llama-family config within bounds.
 */
export async function readModelConfig(
  dataDir: string,
  userPath: string,
  field: string,
): Promise<ModelConfig> {
  const label = `${field} ${JSON.stringify(userPath)}: config.json`;
  const file = await resolveDataPath(dataDir, join(userPath, "config.json"), field, {
    mustExist: true,
  });
  const pinned = await pinPath(file, label, "file");
  try {
    await checkFileSize(pinned.path, label, MAX_CONFIG_BYTES);
    let raw: unknown;
    try {
      raw = await readJsonFile(pinned.path);
    } catch (err) {
      // readJsonFile names the path it read; name the user's instead.
      const e = err as Error;
      e.message = e.message.split(pinned.path).join(label);
      throw e;
    }
    const cfg = llamaConfigFromHf(raw, label);
    return { cfg, raw: raw as Record<string, unknown> };
  } finally {
    await pinned.close();
  }
}

/**
 * Refuses (invalid_argument) a checkpoint whose tensors contradict its config: the embedding, every
 * linear of every layer the config counts, the final norm and lm_head must have the shapes the
 * config implies, and no tensor may belong to a layer beyond num_hidden_layers.
 */
export function checkTensorsAgainstConfig(
  ckpt: HfCheckpoint,
  cfg: LlamaConfig,
  label: string,
): void {
  const expect = (name: string, shape: readonly number[], required: boolean) => {
    if (!ckpt.has(name)) {
      if (required) {
        throw invalidArgument(`${label}: missing tensor ${name} (config.json implies it)`);
      }
      return;
    }
    const got = ckpt.info(name).shape;
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      throw invalidArgument(
        `${label}: ${name} has shape [${got.join(", ")}], config.json implies [${
          shape.join(", ")
        }]`,
      );
    }
  };
  expect("model.embed_tokens.weight", [cfg.vocab, cfg.hidden], true);
  for (let layer = 0; layer < cfg.layers; layer++) {
    for (const m of LINEAR_MODULES) {
      expect(`${linearPath(layer, m)}.weight`, linearShape(cfg, m), true);
    }
  }
  expect("model.norm.weight", [cfg.hidden], true);
  expect("lm_head.weight", [cfg.vocab, cfg.hidden], !cfg.tieEmbeddings);
  for (const name of ckpt.names()) {
    const m = name.match(/^model\.layers\.(\d+)\./);
    if (m && Number(m[1]) >= cfg.layers) {
      throw invalidArgument(
        `${label}: ${name} belongs to layer ${m[1]}, but config.json says num_hidden_layers ` +
          `${cfg.layers}`,
      );
    }
  }
}
