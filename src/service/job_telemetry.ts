/**
 * The glue between the jobs and telemetry (here, above both, so that telemetry knows no job).
 * Train and Evaluate jobs report through hooks (src/train/train_job.ts JobHooks) that fire when a
 * phase ends. tracedJob wraps those hooks and the job's GPU getter so that the phases become
 * spans under the job span and feed the metrics:
 *
 *   read datasets    "reading dataset(s)" progress -> the job asks for the GPU
 *   load             the GPU is ready -> the last "loading <tensor>" progress
 *   train step       each metrics hook, [end - stepSeconds, end]; GPU time per kernel family
 *   eval             each eval hook (Train), or the "evaluating" progress reaching its total
 *   checkpoint write each checkpoint hook
 *
 * With tracing and metrics both off it hands back the hooks and getter unchanged.
 */
import type { Attributes } from "@opentelemetry/api";
import type { GpuContext } from "../gpu/context.ts";
import type { JobHooks } from "../train/train_job.ts";
import { attachGpuTimer, type GpuTimer } from "../telemetry/gpu_timing.ts";
import {
  metricsEnabled,
  observeGpuMemory,
  recordEval,
  recordGpuKernel,
  recordTrainStep,
} from "../telemetry/metrics.ts";
import { type JobTrace, nowMs } from "../telemetry/tracing.ts";

export type AttachedTimer = ReturnType<typeof attachGpuTimer>;

/**
 * Points the GPU memory gauge at `ctx` and times its batches per kernel family (metrics, and
 * `gpuTimeAttributes` on spans) until `detach()`.
 */
export function observeGpu(ctx: GpuContext): AttachedTimer {
  observeGpuMemory(ctx.memory);
  return attachGpuTimer(ctx, { onSample: recordGpuKernel });
}

/** `qlorad.gpu.<family>.seconds` / `.batches` since the last call, for a span. */
export function gpuTimeAttributes(timer: GpuTimer | undefined): Attributes {
  if (!timer) return {};
  const out: Attributes = {};
  for (const k of timer.take()) {
    out[`qlorad.gpu.${k.family}.seconds`] = k.seconds;
    out[`qlorad.gpu.${k.family}.batches`] = k.batches;
  }
  if (Object.keys(out).length) out["qlorad.gpu.timing"] = timer.method;
  return out;
}

export interface TracedJob {
  hooks: JobHooks;
  gpu: () => Promise<GpuContext>;
  /** Call when the job body ends (detaches the GPU timer). */
  finish(): Promise<void>;
}

export function tracedJob(
  spans: JobTrace,
  hooks: JobHooks,
  gpu: () => Promise<GpuContext>,
): TracedJob {
  if (!spans.recording && !metricsEnabled()) {
    return { hooks, gpu, finish: () => Promise.resolve() };
  }

  let timer: AttachedTimer | undefined;
  let loadStart: number | undefined;
  const tracedGpu = async () => {
    spans.phase("read datasets");
    const ctx = await gpu();
    timer ??= observeGpu(ctx);
    spans.mark();
    return ctx;
  };

  const traced: JobHooks = {
    ...hooks,
    progress(message, index, total) {
      if (message.startsWith("loading ")) {
        if (index === 1) loadStart = spans.boundary;
        if (index !== undefined && index === total) {
          spans.phase("load", { "qlorad.load.tensors": total }, loadStart);
        }
      } else if (message === "evaluating") {
        if (index !== undefined && index === total) {
          spans.phase("eval", { "qlorad.eval.batches": total });
        }
      } else if (message.startsWith("reading dataset")) {
        spans.mark();
      }
      hooks.progress?.(message, index, total);
    },
    log(level, message) {
      spans.event(level === "warning" ? "warning" : "log", { message });
      hooks.log?.(level, message);
    },
    metrics(m) {
      const end = nowMs();
      recordTrainStep({
        seconds: m.stepSeconds,
        tokens: m.tokens,
        tokensPerSecond: m.tokensPerSecond,
        loss: m.loss,
      });
      if (spans.recording) {
        const attributes: Attributes = {
          "qlorad.step": m.step,
          "qlorad.total_steps": m.totalSteps,
          "qlorad.epoch": m.epoch,
          "qlorad.loss": m.loss,
          "qlorad.learning_rate": m.learningRate,
          "qlorad.grad_norm": m.gradNorm,
          "qlorad.tokens": m.tokens,
          "qlorad.tokens_per_second": m.tokensPerSecond,
          "qlorad.paged_bytes_in": m.pagedInBytes,
          "qlorad.paged_bytes_out": m.pagedOutBytes,
          ...gpuTimeAttributes(timer?.timer),
        };
        spans.phase("train step", attributes, end - m.stepSeconds * 1000, end);
      }
      hooks.metrics?.(m);
    },
    eval(e) {
      recordEval(e.loss);
      spans.phase("eval", {
        "qlorad.step": e.step,
        "qlorad.loss": e.loss,
        "qlorad.perplexity": e.perplexity,
        "qlorad.token_accuracy": e.tokenAccuracy,
        "qlorad.tokens": e.tokens,
      });
      hooks.eval?.(e);
    },
    checkpoint(path, step, isFinal) {
      spans.phase("checkpoint write", { "qlorad.step": step, "qlorad.checkpoint.final": isFinal });
      hooks.checkpoint?.(path, step, isFinal);
    },
  };
  return {
    hooks: traced,
    gpu: tracedGpu,
    finish: async () => {
      await timer?.detach();
      timer = undefined;
    },
  };
}
