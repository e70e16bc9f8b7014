/**
 * `qlorad quantize`: a Hugging Face checkpoint folder to a bitsandbytes 4-bit folder, on local
 * paths, with progress over the checkpoint's tensors (each one quantized or kept as it is: the
 * summary counts the same tensors, split the same way). Its settings and defaults are the Quantize RPC's
 * (src/train/settings.ts).
 */
import * as path from "node:path";
import { quantizeModel } from "../quant/quantize_model.ts";
import type { QuantizeProgress } from "../quant/quantize_model.ts";
import { type QuantizeKey, quantizeSettings } from "../train/settings.ts";
import { type Command, interruptible, parseFlags, usageError } from "./command.ts";
import { Progress } from "./progress.ts";

export const QUANTIZE: Command = {
  name: "quantize",
  usage:
    `  qlorad quantize --model DIR --out DIR [--type nf4|fp4] [--blocksize N] [--no-double-quant]
                  [--skip-modules NAME,NAME] [--overwrite]
      Quantize a Hugging Face checkpoint folder to a bitsandbytes 4-bit folder.
      Defaults: --type nf4, --blocksize 64, double quant on, --skip-modules lm_head.`,
  run: (args) => quantize(args),
};

/** Each setting's flag, as errors name it. */
const FLAGS: Record<QuantizeKey, string> = {
  quantType: "--type",
  blocksize: "--blocksize",
  doubleQuant: "--no-double-quant",
  skipModules: "--skip-modules",
};

async function quantize(args: string[]): Promise<number> {
  const values = parseFlags(args, {
    model: { type: "string" },
    out: { type: "string" },
    type: { type: "string" },
    blocksize: { type: "string" },
    "no-double-quant": { type: "boolean" },
    "skip-modules": { type: "string" },
    overwrite: { type: "boolean" },
  });
  const model = values.model ?? usageError("quantize needs --model DIR");
  const out = values.out ?? usageError("quantize needs --out DIR");
  const skip = values["skip-modules"];
  const settings = quantizeSettings({
    quantType: values.type,
    blocksize: values.blocksize,
    doubleQuant: values["no-double-quant"] ? false : undefined,
    // "--skip-modules ''" keeps nothing in full precision.
    skipModules: skip?.split(",").map((s) => s.trim()).filter((s) => s !== ""),
  }, (k) => FLAGS[k]);

  const line = quantizeProgress();
  try {
    const r = await interruptible((signal) =>
      quantizeModel({
        modelDir: path.resolve(model),
        outputDir: path.resolve(out),
        ...settings,
        overwrite: Boolean(values.overwrite),
        signal,
        onProgress: line.update,
      })
    );
    line.done();
    console.log(
      `quantized ${r.tensorsQuantized} of ${r.tensorsQuantized + r.tensorsKept} tensors ` +
        `(${r.parametersQuantized} parameters), kept ${r.tensorsKept} in their dtype; ` +
        `${r.bitsPerParameter.toFixed(3)} bits/parameter; ${mib(r.bytesIn)} -> ${
          mib(r.bytesOut)
        }; ` +
        `mean |error| ${r.meanAbsError.toPrecision(3)}, max |error| ${
          r.maxAbsError.toPrecision(3)
        }; ` +
        `wrote ${out}`,
    );
    return 0;
  } catch (err) {
    line.done();
    throw err;
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Progress on stderr over the checkpoint's tensors, with the running split into quantized and
 * kept: a bar on a terminal, a line every 10% elsewhere.
 */
export function quantizeProgress(
  tty = Deno.stderr.isTerminal(),
  write: (text: string) => void = (t) => Deno.stderr.writeSync(new TextEncoder().encode(t)),
) {
  let bar: Progress | undefined;
  let quantized = 0;
  return {
    update(p: QuantizeProgress) {
      bar ??= new Progress({ label: "tensors", total: p.total, tty, write });
      if (p.quantized) quantized++;
      bar.update(
        p.index,
        `(${quantized} quantized, ${p.index - quantized} kept) ${p.tensor}`,
      );
    },
    done() {
      bar?.done();
    },
  };
}
