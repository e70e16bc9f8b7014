/**
 * A Hugging Face model folder: config.json plus model.safetensors or a sharded
 * model.safetensors.index.json (REFERENCE.md §7). Tensor bytes are read on demand.
 */
import { join } from "node:path";
import { invalidArgument, notFound, QloradError } from "../util/errors.ts";
import { parseJsonText } from "../util/json.ts";
import { PARTIAL_MARK } from "./atomic.ts";
import { firstDuplicateKey } from "./json_keys.ts";
import { SafetensorsFile, type TensorInfo } from "./safetensors.ts";

export const CONFIG_FILE = "config.json";
export const SINGLE_WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";

/** A tensor's place: which file of the folder, and where in it. */
export interface CheckpointTensorInfo extends TensorInfo {
  /** File name inside the checkpoint folder. */
  file: string;
}

/** Weights (any format) and datasets: not copied along as "other files". */
const NOT_OTHER_FILE_PATTERN =
  /\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx|jsonl)$|\.(safetensors|bin)\.index\.json$/;

/** Read and parse a JSON file: notFound when missing, invalidArgument naming the fault. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw notFound(`${path}: no such file`);
    throw e;
  }
  return parseJsonText(text, path);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A shard name must be a plain file name inside the folder. */
function isPlainFileName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !/[\/\\\0]/.test(name);
}

/**
 * model.safetensors.index.json: `weight_map` (tensor -> shard file name in the same folder) and
 * `metadata`. A tensor named twice in the text is refused (JSON.parse would keep the last).
 */
async function readWeightIndex(
  indexPath: string,
): Promise<{ weightMap: Map<string, string>; indexMetadata: Record<string, unknown> }> {
  let text: string;
  try {
    text = await Deno.readTextFile(indexPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw notFound(`${indexPath}: no such file`);
    throw e;
  }
  const index = parseJsonText(text, indexPath);
  if (!isPlainObject(index) || !isPlainObject(index.weight_map)) {
    throw invalidArgument(`${indexPath}: "weight_map" must be an object`);
  }
  const twice = firstDuplicateKey(text);
  if (twice !== undefined) {
    throw invalidArgument(
      `${indexPath}: ${JSON.stringify(twice)} is listed twice (which shard holds it is ambiguous)`,
    );
  }
  for (const [tensor, shard] of Object.entries(index.weight_map)) {
    if (typeof shard !== "string" || !isPlainFileName(shard)) {
      throw invalidArgument(
        `${indexPath}: tensor ${JSON.stringify(tensor)}: shard ${
          JSON.stringify(shard)
        } must be a file name in the same folder`,
      );
    }
  }
  return {
    weightMap: new Map(Object.entries(index.weight_map as Record<string, string>)),
    indexMetadata: isPlainObject(index.metadata) ? index.metadata : {},
  };
}

// ---- checkpoint ----------------------------------------------------------------------------

/** An opened Hugging Face checkpoint folder. Close it to release the shard files. */
export class HfCheckpoint {
  readonly dir: string;
  /** config.json as parsed. */
  readonly config: Record<string, unknown>;
  /** Weight file names (one, or the shards in name order). */
  readonly weightFiles: readonly string[];
  /** True when loaded through model.safetensors.index.json. */
  readonly sharded: boolean;
  /** The index's `metadata` (e.g. total_size), empty when not sharded. */
  readonly indexMetadata: Record<string, unknown>;
  #files: Map<string, SafetensorsFile>;
  #where: Map<string, string>; // tensor -> file name
  #other: string[];

  private constructor(
    dir: string,
    config: Record<string, unknown>,
    files: Map<string, SafetensorsFile>,
    where: Map<string, string>,
    sharded: boolean,
    indexMetadata: Record<string, unknown>,
    other: string[],
  ) {
    this.dir = dir;
    this.config = config;
    this.#files = files;
    this.#where = where;
    this.sharded = sharded;
    this.indexMetadata = indexMetadata;
    this.weightFiles = [...files.keys()];
    this.#other = other;
  }

  static async open(dir: string): Promise<HfCheckpoint> {
    const listing: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile) listing.push(e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw notFound(`${dir}: no such folder`);
      if (e instanceof Error && /not a directory/i.test(e.message)) {
        throw invalidArgument(`${dir}: not a folder`);
      }
      throw e;
    }
    listing.sort();
    const has = new Set(listing);
    const configPath = join(dir, CONFIG_FILE);
    if (!has.has(CONFIG_FILE)) throw notFound(`${configPath}: no such file`);
    const config = await readJsonFile(configPath);
    if (!isPlainObject(config)) throw invalidArgument(`${configPath}: not a JSON object`);

    const files = new Map<string, SafetensorsFile>();
    const where = new Map<string, string>();
    const closeAll = () => {
      for (const f of files.values()) f.close();
    };
    const other = listing.filter((n) =>
      n !== CONFIG_FILE && !NOT_OTHER_FILE_PATTERN.test(n) && !n.includes(PARTIAL_MARK) &&
      !n.startsWith(".")
    );
    try {
      // Like transformers: a single model.safetensors wins over an index.
      if (has.has(SINGLE_WEIGHTS_FILE)) {
        const f = await SafetensorsFile.open(join(dir, SINGLE_WEIGHTS_FILE));
        files.set(SINGLE_WEIGHTS_FILE, f);
        for (const n of f.names()) where.set(n, SINGLE_WEIGHTS_FILE);
        return new HfCheckpoint(dir, config, files, where, false, {}, other);
      }
      if (!has.has(WEIGHTS_INDEX_FILE)) {
        const hint = listing.some((n) => /\.bin$|\.pt$|\.pth$/.test(n))
          ? " (only PyTorch .bin weights found; convert them to safetensors)"
          : "";
        throw notFound(
          `${dir}: no ${SINGLE_WEIGHTS_FILE} and no ${WEIGHTS_INDEX_FILE}${hint}`,
        );
      }
      const indexPath = join(dir, WEIGHTS_INDEX_FILE);
      const { weightMap, indexMetadata } = await readWeightIndex(indexPath);
      const shardNames = [...new Set(weightMap.values())].sort();
      for (const shard of shardNames) {
        if (!has.has(shard)) {
          const first = [...weightMap].find(([, s]) => s === shard)![0];
          throw notFound(
            `${indexPath}: shard ${JSON.stringify(shard)} (holding tensor ${
              JSON.stringify(first)
            }) does not exist in ${dir}`,
          );
        }
        files.set(shard, await SafetensorsFile.open(join(dir, shard)));
      }
      // Which shard really holds each tensor: one and only one, and the one the index names.
      const holder = new Map<string, string>();
      for (const [shard, f] of files) {
        for (const tensor of f.names()) {
          const other = holder.get(tensor);
          if (other !== undefined) {
            throw invalidArgument(
              `${dir}: tensor ${JSON.stringify(tensor)} is in two shards, ${
                JSON.stringify(other)
              } and ${JSON.stringify(shard)}`,
            );
          }
          holder.set(tensor, shard);
          if (!weightMap.has(tensor)) {
            throw invalidArgument(
              `${join(dir, shard)}: tensor ${
                JSON.stringify(tensor)
              } is not listed in ${indexPath} "weight_map"`,
            );
          }
        }
      }
      for (const [tensor, shard] of weightMap) {
        const actual = holder.get(tensor);
        if (actual !== shard) {
          throw invalidArgument(
            `${indexPath}: tensor ${JSON.stringify(tensor)} is mapped to ${
              JSON.stringify(shard)
            }, which does not contain it (${
              actual === undefined ? "no shard does" : `it is in ${JSON.stringify(actual)}`
            })`,
          );
        }
      }
      // Shard by shard, each in its header order: readers stream one file after the other.
      for (const [shard, f] of files) for (const tensor of f.names()) where.set(tensor, shard);
      return new HfCheckpoint(dir, config, files, where, true, indexMetadata, other);
    } catch (e) {
      closeAll();
      throw e;
    }
  }

  /** Tensor names in file order: shard by shard (shards by name), each in its header order. */
  names(): string[] {
    return [...this.#where.keys()];
  }

  has(name: string): boolean {
    return this.#where.has(name);
  }

  #file(name: string): [SafetensorsFile, string] {
    const file = this.#where.get(name);
    if (file === undefined) throw notFound(`${this.dir}: no tensor ${JSON.stringify(name)}`);
    const f = this.#files.get(file);
    if (!f) throw new QloradError("failed_precondition", `${this.dir}: checkpoint is closed`);
    return [f, file];
  }

  info(name: string): CheckpointTensorInfo {
    const [f, file] = this.#file(name);
    return { ...f.info(name), file };
  }

  readBytes(name: string): Promise<Uint8Array> {
    return this.#file(name)[0].readBytes(name);
  }

  /** A floating-point tensor decoded to float32. */
  readFloat32(name: string): Promise<Float32Array> {
    return this.#file(name)[0].readFloat32(name);
  }

  /** Any tensor decoded to float64. */
  readFloat64(name: string): Promise<Float64Array> {
    return this.#file(name)[0].readFloat64(name);
  }

  /**
   * Non-weight files to copy along with derived models (tokenizer.json, tokenizer_config.json,
   * generation_config.json, special_tokens_map.json, tokenizer.model, README, LICENSE ...).
   * Left out: config.json (writers of derived models rewrite it), weights in any format,
   * datasets (*.jsonl), hidden files and unfinished `.partial-` files.
   */
  otherFiles(): string[] {
    return [...this.#other];
  }

  close(): void {
    for (const f of this.#files.values()) f.close();
    this.#files.clear();
  }
}
