/** Quantize a Hugging Face checkpoint folder into a bitsandbytes 4-bit folder, tensor by tensor. */
export type QuantType = "nf4" | "fp4";

export interface QuantizeOptions {
  /** Absolute path of the source model folder (config.json + safetensors). */
  modelDir: string;
  /** Absolute path of the output folder; written to a temporary name, renamed when complete. */
  outputDir: string;
  quantType: QuantType;
  blocksize: number;
  doubleQuant: boolean;
  /** Module names (suffix match, e.g. "lm_head") kept in their original dtype. */
  skipModules: string[];
  overwrite: boolean;
  signal?: AbortSignal;
  onProgress?: (p: QuantizeProgress) => void;
}

export interface QuantizeProgress {
  tensor: string;
  /** 1-based index among `total` tensors. */
  index: number;
  total: number;
  bytesIn: number;
  bytesOut: number;
  quantized: boolean;
}

export interface QuantizeResult {
  parametersQuantized: number;
  tensorsQuantized: number;
  tensorsKept: number;
  bitsPerParameter: number;
  bytesIn: number;
  bytesOut: number;
  meanAbsError: number;
  maxAbsError: number;
  outputDir: string;
}

/** Being written (issue #2); the service's Quantize handler calls this. */
export function quantizeModel(_opts: QuantizeOptions): Promise<QuantizeResult> {
  return Promise.reject(new Error("quantizeModel: not implemented yet"));
}
