/**
 * `qlorad export --merge`: a full-precision Hugging Face checkpoint from a 4-bit (or full) base and
 * a PEFT adapter: the dequantized base plus scaling * B * A in every adapted linear.
 */
import * as path from "node:path";
import { mergeAdapter } from "../train/merge.ts";
import { type Command, parseFlags, usageError } from "./command.ts";

export const EXPORT: Command = {
  name: "export",
  usage:
    `  qlorad export --merge --base DIR --adapter DIR --out DIR [--dtype bf16|f16|f32] [--overwrite]
      Write a full-precision Hugging Face checkpoint: dequantized base + scaling*B*A.
      Default: --dtype bf16.`,
  run: (args) => exportMerged(args),
};

async function exportMerged(args: string[]): Promise<number> {
  const values = parseFlags(args, {
    merge: { type: "boolean" },
    base: { type: "string" },
    adapter: { type: "string" },
    out: { type: "string" },
    dtype: { type: "string" },
    overwrite: { type: "boolean" },
  });
  if (!values.merge) usageError("export needs --merge (the only export there is)");
  const base = values.base ?? usageError("export needs --base DIR");
  const adapter = values.adapter ?? usageError("export needs --adapter DIR");
  const out = values.out ?? usageError("export needs --out DIR");
  const dtype = (values.dtype ?? "bf16").toUpperCase();
  if (dtype !== "BF16" && dtype !== "F16" && dtype !== "F32") {
    usageError(`--dtype must be bf16, f16 or f32, not ${values.dtype}`);
  }
  const r = await mergeAdapter({
    baseModelDir: path.resolve(base),
    adapterDir: path.resolve(adapter),
    outputDir: path.resolve(out),
    dtype,
    overwrite: Boolean(values.overwrite),
  });
  console.log(
    `merged the adapter into ${r.merged} linear layers; wrote ${r.tensors} tensors to ${out}`,
  );
  return 0;
}
