/** Typed GPU failures: a job fails with a clear message instead of computing a wrong result. */
import { QloradError } from "../util/errors.ts";

export class GpuError extends QloradError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("internal", message, options);
    this.name = "GpuError";
  }
}

/** No adapter could be created with any provider or backend. */
export class GpuUnavailableError extends QloradError {
  constructor(message: string) {
    super("unavailable", message);
    this.name = "GpuUnavailableError";
  }
}

/** A shader, pipeline, bind group or dispatch was rejected by WebGPU validation. */
export class GpuValidationError extends GpuError {
  constructor(message: string) {
    super(`GPU validation error: ${message}`);
    this.name = "GpuValidationError";
  }
}

export class GpuOutOfMemoryError extends QloradError {
  constructor(message: string) {
    super("resource_exhausted", `GPU out of memory: ${message}`);
    this.name = "GpuOutOfMemoryError";
  }
}

export class GpuDeviceLostError extends GpuError {
  constructor(message: string) {
    super(`GPU device lost: ${message}`);
    this.name = "GpuDeviceLostError";
  }
}

/** The device stopped answering (a wait passed QLORAD_GPU_TIMEOUT_S). */
export class GpuTimeoutError extends QloradError {
  constructor(message: string) {
    super("unavailable", `GPU timeout: ${message}`);
    this.name = "GpuTimeoutError";
  }
}
