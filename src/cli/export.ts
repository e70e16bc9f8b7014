/**
 * `qlorad export`: a trained model out of qlorad, on local paths. `--gguf` writes one GGUF file
 * for llama.cpp / Ollama (the base with the adapter folded in, or the base alone), with
 * `--lora-only` the adapter alone as a GGUF LoRA for llama.cpp's `--lora`; `--merge` writes a
 * full-precision Hugging Face checkpoint (dequantized base + scaling * B * A). The formats, types
 * and defaults are the Export RPC's (src/train/settings.ts); an error names the flag.
 */
import * as path from "node:path";
import { exportGguf, type GgufFileType } from "../export/export_gguf.ts";
import { isInside } from "../service/paths.ts";
import { mergeAdapter } from "../train/merge.ts";
import {
  EXPORT_DEFAULTS,
  EXPORT_TYPES,
  type ExportFormat,
  type ExportKey,
  exportSettings,
} from "../train/settings.ts";
import {
  type Command,
  type CommandIo,
  CONSOLE_IO,
  interruptible,
  parseFlags,
  usageError,
} from "./command.ts";
import { Progress } from "./progress.ts";

const D = EXPORT_DEFAULTS.type;

export const EXPORT: Command = {
  name: "export",
  usage:
    `  qlorad export --gguf --base DIR [--adapter DIR] [--lora-only] --out FILE.gguf [--type TYPE]
                [--overwrite]
      Write a GGUF file for llama.cpp / Ollama: the base with the adapter merged in (the base
      alone without --adapter); with --lora-only the adapter alone, to load with llama.cpp's
      --lora on the base's GGUF. --type ${EXPORT_TYPES.gguf.join("|")} (--lora-only: ${
      EXPORT_TYPES["gguf-lora"].join("|")
    }); default ${D.gguf}.
  qlorad export --merge --base DIR --adapter DIR --out DIR [--dtype ${
      EXPORT_TYPES.hf.join("|")
    }] [--overwrite]
      Write a full-precision Hugging Face checkpoint: dequantized base + scaling*B*A.
      Default: --dtype ${D.hf}.`,
  run: (args, io) => exportModel(args, io),
};

async function exportModel(args: string[], io: CommandIo): Promise<number> {
  const values = parseFlags(args, {
    gguf: { type: "boolean" },
    merge: { type: "boolean" },
    "lora-only": { type: "boolean" },
    base: { type: "string" },
    adapter: { type: "string" },
    out: { type: "string" },
    type: { type: "string" },
    dtype: { type: "string" },
    overwrite: { type: "boolean" },
  });
  if (values.gguf === values.merge) {
    usageError(
      values.gguf ? "--gguf and --merge exclude each other" : "export needs --gguf or --merge",
    );
  }
  const merge = Boolean(values.merge);
  if (merge && values["lora-only"]) usageError("--lora-only goes with --gguf, not --merge");
  if (merge && values.type !== undefined) {
    usageError("--type goes with --gguf; --merge has --dtype");
  }
  if (!merge && values.dtype !== undefined) {
    usageError("--dtype goes with --merge; --gguf has --type");
  }
  const format: ExportFormat = merge ? "hf" : values["lora-only"] ? "gguf-lora" : "gguf";
  const flagOf = (k: ExportKey) => k === "type" ? (merge ? "--dtype" : "--type") : "--gguf";
  const { type } = exportSettings({ format, type: merge ? values.dtype : values.type }, flagOf);
  const base = values.base ?? usageError("export needs --base DIR");
  const out = values.out ?? usageError(`export needs --out ${merge ? "DIR" : "FILE.gguf"}`);
  const adapter = values.adapter ??
    (format === "gguf" ? undefined : usageError(
      `export ${merge ? "--merge" : "--lora-only"} needs --adapter DIR`,
    ));
  const overwrite = Boolean(values.overwrite);
  await refuseOutputOverInput(out, [["--base", base], ["--adapter", adapter]]);

  const progress = progressReporter(io, io === CONSOLE_IO && Deno.stderr.isTerminal());
  try {
    const line = await interruptible(async (signal) => {
      if (merge) {
        const r = await mergeAdapter({
          baseModelDir: path.resolve(base),
          adapterDir: path.resolve(adapter!),
          outputDir: path.resolve(out),
          dtype: type.toUpperCase() as "BF16" | "F16" | "F32",
          overwrite,
          signal,
          onProgress: progress.update,
        });
        return `merged the adapter into ${r.merged} linear layers; wrote ${r.tensors} tensors to ${out}`;
      }
      const r = await exportGguf({
        baseModelDir: path.resolve(base),
        adapterDir: adapter === undefined ? undefined : path.resolve(adapter),
        mode: format === "gguf-lora" ? "lora" : "merged",
        outputPath: path.resolve(out),
        type: type.toUpperCase() as GgufFileType,
        overwrite,
        signal,
        onProgress: progress.update,
      });
      const what = format === "gguf-lora"
        ? `the adapter (lora alpha ${r.loraAlpha}) as a GGUF LoRA`
        : adapter === undefined
        ? "the base model"
        : `the base with the adapter merged into ${r.merged} linear layers`;
      const fallbacks = r.fallbacks.length > 0
        ? `; ${r.fallbacks.length} matrices kept at F16 (rows not a multiple of 32)`
        : "";
      return `wrote ${what}: ${r.tensors} tensors, ${type.toUpperCase()}, to ${out}${fallbacks}`;
    });
    progress.done();
    io.print(line);
    return 0;
  } catch (err) {
    progress.done();
    throw err;
  }
}

/** Every this many percent a plain progress line is printed where the output is not a terminal. */
const LINE_EVERY_PERCENT = 5;

/**
 * Per-tensor progress on stderr (src/cli/progress.ts): a bar rewritten in place on a terminal;
 * elsewhere (a log, a pipe) a plain line each time another LINE_EVERY_PERCENT percent is done,
 * and at the end.
 */
export function progressReporter(io: CommandIo, tty: boolean) {
  const enc = new TextEncoder();
  const write = tty
    ? (text: string) => Deno.stderr.writeSync(enc.encode(text))
    : (text: string) => io.printError(text.replace(/\n$/, ""));
  let bar: Progress | undefined;
  return {
    update(tensor: string, index: number, total: number) {
      bar ??= new Progress({
        label: "tensors",
        total,
        tty,
        write,
        everyPercent: LINE_EVERY_PERCENT,
      });
      bar.update(index, tensor);
    },
    done() {
      bar?.done();
    },
  };
}

/**
 * An output that is an input, lies inside one, or holds one would be replaced (`--overwrite`)
 * while it is being read: refused up front, as the Export RPC refuses it. Symlinks are resolved
 * first, so a link to the base is the base.
 */
async function refuseOutputOverInput(
  out: string,
  inputs: Array<[string, string | undefined]>,
): Promise<void> {
  const output = await realPathSoFar(out);
  for (const [flag, input] of inputs) {
    if (input === undefined) continue;
    const real = await realPathSoFar(input);
    if (isInside(real, output) || isInside(output, real)) {
      usageError(`--out ${out}: must not be ${flag} (an input), inside it, or contain it`);
    }
  }
}

/** The absolute path with symlinks resolved as far as it exists (an output may not yet). */
async function realPathSoFar(p: string): Promise<string> {
  const abs = path.resolve(p);
  try {
    return await Deno.realPath(abs);
  } catch {
    const parent = path.dirname(abs);
    return parent === abs ? abs : path.join(await realPathSoFar(parent), path.basename(abs));
  }
}
