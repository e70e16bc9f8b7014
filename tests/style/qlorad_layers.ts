/**
 * qlorad's layer rule (docs/CONVENTIONS.md, "Layers"): which folder of src/ sits where. A new
 * folder of src/ fails the layer test until it is placed here (and in the docs).
 */
import type { LayerRule } from "./layer_check.ts";

export const QLORAD_LAYERS: LayerRule = {
  tiers: [
    // Errors, JSON, the seeded PRNG: imports nothing of src/.
    [{ name: "util", paths: ["src/util/"] }],
    // Files and number formats: safetensors, checkpoints, dtypes (bf16, f16, the NF4/FP4 code
    // tables), atomic writes. Knows no GPU.
    [{ name: "io", paths: ["src/io/"] }],
    [{ name: "gpu", paths: ["src/gpu/"] }],
    // Spans and metrics (OpenTelemetry); sees GPU memory and timings, knows no RPC and no job.
    [{ name: "telemetry", paths: ["src/telemetry/"] }],
    [{ name: "kernels", paths: ["src/kernels/"] }],
    // bitsandbytes' 4-bit format (blockwise, double quant, QuantState): the model loads with it.
    [{ name: "quant", paths: ["src/quant/"] }],
    [{ name: "model", paths: ["src/model/"] }],
    // Datasets and tokenizers into the model's micro-batches.
    [{ name: "data", paths: ["src/data/"] }],
    // The jobs. The quantize job still lives in src/quant/ (file entries: the longest path wins).
    [
      { name: "train", paths: ["src/train/"] },
      {
        name: "quantize job",
        paths: ["src/quant/quantize_model.ts", "src/quant/gpu_quantizer.ts"],
      },
    ],
    // Exports for other ecosystems (GGUF for llama.cpp): read checkpoints, adapters, tokenizers.
    [{ name: "export", paths: ["src/export/"] }],
    [{ name: "service", paths: ["src/service/"] }],
    // The front: the command line (the benchmarks live beside their scripts, in scripts/bench/).
    [{ name: "cli", paths: ["src/cli/"] }],
  ],
  // Nothing below src/service knows gRPC.
  packages: { "npm:@grpc/": "service", "npm:grpc-health-check": "service" },
};
