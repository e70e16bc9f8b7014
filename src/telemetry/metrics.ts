/**
 * qlorad's metric instruments. They exist only while a meter provider is configured
 * (setup.ts calls startMetrics); until then every record function returns at its first line, so
 * metrics cost nothing when telemetry is off. Instruments are made per provider because the API's
 * global meter is a no-op, not a proxy: instruments made before registration would stay no-ops.
 *
 * Observable instruments read their sources (the job manager, the GPU memory ledger) only when
 * a reader collects: every OTEL_METRIC_EXPORT_INTERVAL, or on a Prometheus scrape. The fleet
 * gauges read the fleet's dispatch queue (BullMQ's job counts, a Redis round trip), in a callback of their own, so a slow or
 * unreachable store delays or drops only them.
 */
import type {
  Attributes,
  BatchObservableResult,
  Counter,
  Gauge,
  Histogram,
  Meter,
  Observable,
} from "@opentelemetry/api";
import { MEMORY_CATEGORIES, type MemoryBytes } from "../gpu/memory.ts";

/** The meter (instrumentation scope) name. */
export const METER_NAME = "qlorad";

/** Job states as JobManager names them; every one is reported, zeros included. */
export const JOB_STATES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const;

/** Attribute keys shared by metrics and spans. */
export const ATTR = {
  rpcSystem: "rpc.system",
  rpcService: "rpc.service",
  rpcMethod: "rpc.method",
  rpcStatus: "rpc.grpc.status_code",
  jobId: "qlorad.job.id",
  jobKind: "qlorad.job.kind",
  jobState: "qlorad.job.state",
  memoryCategory: "qlorad.memory.category",
  kernelFamily: "qlorad.kernel.family",
  timingMethod: "qlorad.timing.method",
  quantized: "qlorad.quantized",
} as const;

/** What a job looks like to the jobs gauges (JobManager.list() records fit). */
export interface JobSnapshot {
  kind: string;
  state: string;
}

/** The whole fleet's job counts, from its dispatch queue (JobManager.fleetCounts). */
export interface FleetJobCounts {
  queued: number;
  running: number;
}

/** Anything with the GPU memory ledger's `current()` (GpuContext.memory). */
export interface MemorySource {
  current(): MemoryBytes;
}

interface Instruments {
  meter: Meter;
  rpcCalls: Counter;
  rpcDuration: Histogram;
  stepDuration: Histogram;
  tokensPerSecond: Gauge;
  loss: Gauge;
  trainTokens: Counter;
  evalLoss: Gauge;
  quantizedTensors: Counter;
  quantizedBytes: Counter;
  streamsRefused: Counter;
  kernelDuration: Histogram;
  observables: Observable[];
  collect: (r: BatchObservableResult) => void;
  fleetObservables: Observable[];
  collectFleet: (r: BatchObservableResult) => Promise<void>;
}

/**
 * How long a collection waits for the store's counts: past it the fleet gauges observe nothing
 * in that collection (the store's own calls fail at once when it is known to be unreachable;
 * this bounds one that does not answer).
 */
const FLEET_READ_TIMEOUT_MS = 2_000;

/** Histogram buckets in seconds (the SDK's defaults suit milliseconds). */
const RPC_BUCKETS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
  1800,
  7200,
];
const STEP_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const KERNEL_BUCKETS = [
  1e-4,
  2.5e-4,
  5e-4,
  1e-3,
  2.5e-3,
  5e-3,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  5,
];

let instruments: Instruments | undefined;
let jobsSource: (() => readonly JobSnapshot[]) | undefined;
let memorySource: MemorySource | undefined;
let streamsSource: (() => number) | undefined;
let fleetSource: (() => Promise<FleetJobCounts>) | undefined;

/** Makes the instruments on `meter` (setup.ts, when metrics are configured). */
export function startMetrics(meter: Meter): void {
  stopMetrics();
  const jobs = meter.createObservableGauge("qlorad.jobs", {
    description: "Jobs known to the server, by kind and state",
    unit: "{job}",
  });
  const queueDepth = meter.createObservableGauge("qlorad.jobs.queue.depth", {
    description: "Jobs waiting behind the running one",
    unit: "{job}",
  });
  const gpuMemory = meter.createObservableGauge("qlorad.gpu.memory.usage", {
    description: "GPU bytes held, by ledger category",
    unit: "By",
  });
  const streams = meter.createObservableGauge("qlorad.rpc.streams.open", {
    description: "Job event streams open (Quantize, Train, Evaluate, WatchJob)",
    unit: "{stream}",
  });
  const fleetQueueDepth = meter.createObservableGauge("qlorad.fleet.jobs.queue.depth", {
    description:
      "Jobs waiting in the fleet's dispatch queue (BullMQ wait + delayed), across every replica " +
      "(what autoscalers watch)",
    unit: "{job}",
  });
  const fleetRunning = meter.createObservableGauge("qlorad.fleet.jobs.running", {
    description: "Jobs a replica's worker holds in the fleet's dispatch queue (BullMQ active)",
    unit: "{job}",
  });
  const observables = [jobs, queueDepth, gpuMemory, streams];
  const fleetObservables = [fleetQueueDepth, fleetRunning];
  const collectFleet = async (r: BatchObservableResult) => {
    const source = fleetSource;
    if (!source) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const counts = await Promise.race([
        source(),
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), FLEET_READ_TIMEOUT_MS);
        }),
      ]);
      if (!counts) return;
      r.observe(fleetQueueDepth, counts.queued);
      r.observe(fleetRunning, counts.running);
    } catch {
      // The store is unreachable: observe nothing rather than a made-up count (health says
      // why). A cumulative exporter (Prometheus) then repeats the last values.
    } finally {
      clearTimeout(timer);
    }
  };
  const collect = (r: BatchObservableResult) => {
    if (jobsSource) {
      const counts = new Map<string, number>();
      let queued = 0;
      for (const j of jobsSource()) {
        const key = `${j.kind}\u0000${j.state}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        if (j.state === "QUEUED") queued++;
      }
      const kinds = new Set(["quantize", "train", "evaluate", "generate"]);
      for (const key of counts.keys()) kinds.add(key.split("\u0000")[0]);
      for (const kind of kinds) {
        for (const state of JOB_STATES) {
          r.observe(jobs, counts.get(`${kind}\u0000${state}`) ?? 0, {
            [ATTR.jobKind]: kind,
            [ATTR.jobState]: state,
          });
        }
      }
      r.observe(queueDepth, queued);
    }
    if (streamsSource) r.observe(streams, streamsSource());
    if (memorySource) {
      const bytes = memorySource.current();
      for (const c of MEMORY_CATEGORIES) {
        r.observe(gpuMemory, bytes[c], { [ATTR.memoryCategory]: c });
      }
    }
  };
  meter.addBatchObservableCallback(collect, observables);
  meter.addBatchObservableCallback(collectFleet, fleetObservables);
  instruments = {
    meter,
    rpcCalls: meter.createCounter("qlorad.rpc.server.calls", {
      description: "Finished RPCs, by method and status code",
      unit: "{call}",
    }),
    rpcDuration: meter.createHistogram("rpc.server.call.duration", {
      description: "RPC duration, until the last message of a stream",
      unit: "s",
      advice: { explicitBucketBoundaries: RPC_BUCKETS },
    }),
    stepDuration: meter.createHistogram("qlorad.train.step.duration", {
      description: "Wall time of one optimizer step (all micro-batches)",
      unit: "s",
      advice: { explicitBucketBoundaries: STEP_BUCKETS },
    }),
    tokensPerSecond: meter.createGauge("qlorad.train.tokens_per_second", {
      description: "Input tokens per second of the last step",
      unit: "{token}/s",
    }),
    loss: meter.createGauge("qlorad.train.loss", {
      description: "Training loss of the last step (mean token cross-entropy, nats)",
      unit: "1",
    }),
    trainTokens: meter.createCounter("qlorad.train.tokens", {
      description: "Input tokens trained on",
      unit: "{token}",
    }),
    evalLoss: meter.createGauge("qlorad.eval.loss", {
      description: "Loss of the last evaluation (nats)",
      unit: "1",
    }),
    quantizedTensors: meter.createCounter("qlorad.quantize.tensors", {
      description: "Tensors written by Quantize jobs (quantized or kept)",
      unit: "{tensor}",
    }),
    quantizedBytes: meter.createCounter("qlorad.quantize.output", {
      description: "Bytes written by Quantize jobs for their tensors",
      unit: "By",
    }),
    streamsRefused: meter.createCounter("qlorad.rpc.streams.refused", {
      description: "Job event streams refused at a limit, by limit (connection or total)",
      unit: "{stream}",
    }),
    kernelDuration: meter.createHistogram("qlorad.gpu.kernel.duration", {
      description: "GPU time of one submitted batch, by kernel family (batch label)",
      unit: "s",
      advice: { explicitBucketBoundaries: KERNEL_BUCKETS },
    }),
    observables,
    collect,
    fleetObservables,
    collectFleet,
  };
}

/** Drops the instruments (setup.ts, at shutdown). */
export function stopMetrics(): void {
  if (!instruments) return;
  instruments.meter.removeBatchObservableCallback(instruments.collect, instruments.observables);
  instruments.meter.removeBatchObservableCallback(
    instruments.collectFleet,
    instruments.fleetObservables,
  );
  instruments = undefined;
}

/** Whether anything records metrics now. */
export function metricsEnabled(): boolean {
  return instruments !== undefined;
}

/** Where the jobs gauges read from, e.g. `() => jobs.list()`; returns a function that unsets it. */
export function observeJobs(list: () => readonly JobSnapshot[]): () => void {
  jobsSource = list;
  return () => {
    if (jobsSource === list) jobsSource = undefined;
  };
}

/**
 * Where the fleet gauges read from: the fleet dispatch queue's counts (one BullMQ getJobCounts
 * per collection). Returns a function that unsets it.
 */
export function observeFleetJobs(counts: () => Promise<FleetJobCounts>): () => void {
  fleetSource = counts;
  return () => {
    if (fleetSource === counts) fleetSource = undefined;
  };
}

/** Where the open-streams gauge reads from; returns a function that unsets it. */
export function observeStreams(count: () => number): () => void {
  streamsSource = count;
  return () => {
    if (streamsSource === count) streamsSource = undefined;
  };
}

/** A job event stream refused at its per-connection or total limit. */
export function recordStreamRefused(limit: "connection" | "total"): void {
  instruments?.streamsRefused.add(1, { "qlorad.stream.limit": limit });
}

/** Where the GPU memory gauge reads from (a GpuContext's `memory` ledger). */
export function observeGpuMemory(ledger: MemorySource | undefined): void {
  memorySource = ledger;
}

/** One finished call of `path` ("qlorad.v1.QLoRA/Quantize") with its gRPC status code. */
export function recordRpc(path: string, code: number, seconds: number): void {
  if (!instruments) return;
  const slash = path.lastIndexOf("/");
  const attrs: Attributes = {
    [ATTR.rpcService]: path.slice(0, Math.max(0, slash)),
    [ATTR.rpcMethod]: path.slice(slash + 1),
    [ATTR.rpcStatus]: code,
  };
  instruments.rpcCalls.add(1, attrs);
  instruments.rpcDuration.record(seconds, attrs);
}

export function recordTrainStep(m: {
  seconds: number;
  tokens: number;
  tokensPerSecond: number;
  loss: number;
}): void {
  if (!instruments) return;
  instruments.stepDuration.record(m.seconds);
  instruments.tokensPerSecond.record(m.tokensPerSecond);
  instruments.loss.record(m.loss);
  instruments.trainTokens.add(m.tokens);
}

export function recordEval(loss: number): void {
  instruments?.evalLoss.record(loss);
}

export function recordQuantizedTensor(quantized: boolean, bytesOut: number): void {
  if (!instruments) return;
  const attrs = { [ATTR.quantized]: quantized };
  instruments.quantizedTensors.add(1, attrs);
  instruments.quantizedBytes.add(bytesOut, attrs);
}

export function recordGpuKernel(family: string, seconds: number, method: string): void {
  instruments?.kernelDuration.record(seconds, {
    [ATTR.kernelFamily]: family,
    [ATTR.timingMethod]: method,
  });
}
