/**
 * Writes the tiny Llama folder (config, tokenizer files, datasets, weights) atomically: built
 * aside and renamed into place, so a test never sees half a fixture.
 */
import { OutputDir } from "../../src/io/atomic.ts";
import { byteLengthOf, fromFloat } from "../../src/io/dtype.ts";
import { SafetensorsWriter } from "../../src/io/safetensors.ts";
import { trainBpe } from "./bpe.ts";
import { configJson } from "./config_json.ts";
import { tokenizerCorpus } from "./corpus.ts";
import { type DatasetRecord, makeDatasets } from "./datasets.ts";
import { resolveOptions, type TinyLlamaOptions } from "./options.ts";
import { SPECIAL_TOKENS, tokenizerConfigJson, tokenizerJson } from "./tokenizer_files.ts";
import { llamaTensorEntries, shardGroups, tensorValues } from "./weights.ts";

export interface TinyLlamaResult {
  dir: string;
  config: Record<string, unknown>;
  vocabSize: number;
  /** Files written, sorted. */
  files: string[];
  options: TinyLlamaOptions;
}

async function isEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return false;
    return true;
  } catch {
    return false;
  }
}

function jsonText(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}

/** Write the tiny Llama folder at `dir` (atomically: built aside, renamed into place). */
export async function makeTinyLlama(
  dir: string,
  opts: Partial<TinyLlamaOptions> = {},
): Promise<TinyLlamaResult> {
  const o = resolveOptions(opts);
  const bpe = trainBpe(tokenizerCorpus(), o.merges);
  const base = bpe.vocab.size;
  const vocabSize = base + Object.keys(SPECIAL_TOKENS).length;
  const bosId = base;
  const eosId = base + 1;
  const config = configJson(o, vocabSize, bosId, eosId);
  const data = makeDatasets(o.seed, o.trainRecords, o.evalRecords);

  const overwrite = o.overwrite || await isEmptyDir(dir);
  const out = await OutputDir.create(dir, { overwrite });
  try {
    const write = (name: string, text: string) => Deno.writeTextFile(out.file(name), text);
    await write("config.json", jsonText(config));
    await write("tokenizer.json", jsonText(tokenizerJson(bpe)));
    await write("tokenizer_config.json", jsonText(tokenizerConfigJson(base, o.maxPositions)));
    await write(
      "special_tokens_map.json",
      jsonText({ bos_token: SPECIAL_TOKENS.bos, eos_token: SPECIAL_TOKENS.eos }),
    );
    await write(
      "generation_config.json",
      jsonText({
        bos_token_id: bosId,
        do_sample: false,
        eos_token_id: eosId,
        max_length: o.maxPositions,
        transformers_version: "4.46.0",
      }),
    );
    const jsonl = (rs: DatasetRecord[]) => rs.map((r) => JSON.stringify(r) + "\n").join("");
    await write("train.jsonl", jsonl(data.train));
    await write("eval.jsonl", jsonl(data.eval));

    const entries = llamaTensorEntries(o, vocabSize);
    const groups = shardGroups(entries, o.shards);
    const pad = (k: number) => String(k).padStart(5, "0");
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    for (let s = 0; s < groups.length; s++) {
      const file = o.shards === 1
        ? "model.safetensors"
        : `model-${pad(s + 1)}-of-${pad(o.shards)}.safetensors`;
      const group = groups[s];
      const w = await SafetensorsWriter.create(
        out.file(file),
        group.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
        { format: "pt" },
      );
      try {
        for (const e of group) {
          await w.write(e.name, fromFloat(tensorValues(o, e), e.dtype));
          weightMap[e.name] = file;
          totalSize += byteLengthOf(e.dtype, e.shape);
        }
        await w.finish();
      } catch (err) {
        await w.abort();
        throw err;
      }
    }
    if (o.shards > 1) {
      const sorted = Object.fromEntries(
        Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)),
      );
      await write(
        "model.safetensors.index.json",
        jsonText({ metadata: { total_size: totalSize }, weight_map: sorted }),
      );
    }
    const files = [...Deno.readDirSync(out.path)].map((e) => e.name).sort();
    await out.commit();
    return { dir, config, vocabSize, files, options: o };
  } catch (err) {
    await out.abort();
    throw err;
  }
}
