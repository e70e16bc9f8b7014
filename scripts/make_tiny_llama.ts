/**
 * Command line for the tiny Llama fixture (the library is `scripts/tiny_llama/`): writes a
 * deterministic Hugging Face folder for tests and demos, then self-checks its tokenizer.
 *
 *   deno run -A scripts/make_tiny_llama.ts --out data/tiny-llama [--preset small] [--shards 3]
 *     [--model-type qwen2]
 */
import { parseArgs } from "node:util";
import { QloradError } from "../src/util/errors.ts";
import {
  llamaTensorEntries,
  makeTinyLlama,
  selfCheck,
  SMALL_LLAMA_PRESET,
  type TinyLlamaOptions,
  type TinyModelType,
} from "./tiny_llama/mod.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string" },
      preset: { type: "string" },
      hidden: { type: "string" },
      intermediate: { type: "string" },
      layers: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      "head-dim": { type: "string" },
      merges: { type: "string" },
      shards: { type: "string" },
      seed: { type: "string" },
      dtype: { type: "string" },
      "init-std": { type: "string" },
      "train-records": { type: "string" },
      "eval-records": { type: "string" },
      tie: { type: "boolean" },
      "model-type": { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help || !values.out) {
    console.log(
      "usage: deno run -A scripts/make_tiny_llama.ts --out DIR [--preset tiny|small] [--hidden N]\n" +
        "  [--intermediate N] [--layers N] [--heads N] [--kv-heads N] [--head-dim N] [--merges N]\n" +
        "  [--shards N] [--seed N] [--dtype BF16|F16|F32] [--init-std X] [--train-records N]\n" +
        "  [--eval-records N] [--tie] [--model-type llama|mistral|qwen2] [--force]",
    );
    Deno.exit(values.help ? 0 : 2);
  }
  const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));
  const opts: Partial<TinyLlamaOptions> = {
    ...(values.preset === "small" ? SMALL_LLAMA_PRESET : {}),
  };
  const set = <K extends keyof TinyLlamaOptions>(k: K, v: TinyLlamaOptions[K] | undefined) => {
    if (v !== undefined) opts[k] = v;
  };
  if (values.preset !== undefined && !["tiny", "small"].includes(values.preset)) {
    console.error(`unknown preset ${values.preset}`);
    Deno.exit(2);
  }
  set("hidden", num(values.hidden));
  set("intermediate", num(values.intermediate));
  set("layers", num(values.layers));
  set("heads", num(values.heads));
  set("kvHeads", num(values["kv-heads"]));
  set("headDim", num(values["head-dim"]));
  set("merges", num(values.merges));
  set("shards", num(values.shards));
  set("seed", num(values.seed));
  set("initStd", num(values["init-std"]));
  set("trainRecords", num(values["train-records"]));
  set("evalRecords", num(values["eval-records"]));
  set("dtype", values.dtype as TinyLlamaOptions["dtype"] | undefined);
  set("tieWordEmbeddings", values.tie);
  set("modelType", values["model-type"] as TinyModelType | undefined);
  set("overwrite", values.force);
  try {
    const r = await makeTinyLlama(values.out, opts);
    const problems = await selfCheck(values.out);
    const params = llamaTensorEntries(r.options, r.vocabSize)
      .reduce((a, e) => a + e.shape.reduce((x, y) => x * y, 1), 0);
    console.log(
      `wrote ${r.dir}: ${params} parameters, vocab ${r.vocabSize}, ${r.files.join(" ")}`,
    );
    for (const p of problems) console.error(`self-check: ${p}`);
    if (problems.length) Deno.exit(1);
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    if (e instanceof QloradError && e.kind === "failed_precondition") {
      console.error("pass --force to replace it");
    }
    Deno.exit(1);
  }
}
