/**
 * The qlorad.v1 messages as the handlers see them, named once. The types are generated from
 * proto/qlorad/v1/qlorad.proto into ./proto/ (scripts/gen_proto_types.ts, with the options the
 * server loads the proto with); requests are the forms the server receives (defaults filled in,
 * enums as names; a job's echoed request, every field filled in, has the same type), responses
 * and events the forms it sends.
 */
import type { ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import type { JobEvent } from "./proto/qlorad/v1/JobEvent.ts";

export type { QuantizeRequest__Output as QuantizeRequest } from "./proto/qlorad/v1/QuantizeRequest.ts";
export type { TrainRequest__Output as TrainRequest } from "./proto/qlorad/v1/TrainRequest.ts";
export type { EvaluateRequest__Output as EvaluateRequest } from "./proto/qlorad/v1/EvaluateRequest.ts";
export type { GenerateRequest__Output as GenerateRequest } from "./proto/qlorad/v1/GenerateRequest.ts";
export type { ExportRequest__Output as ExportRequest } from "./proto/qlorad/v1/ExportRequest.ts";
export type { EstimateMemoryRequest__Output as EstimateMemoryRequest } from "./proto/qlorad/v1/EstimateMemoryRequest.ts";
export type { LoraConfig__Output as LoraConfig } from "./proto/qlorad/v1/LoraConfig.ts";
export type { Hyperparameters__Output as Hyperparameters } from "./proto/qlorad/v1/Hyperparameters.ts";
export type { WatchJobRequest__Output as WatchJobRequest } from "./proto/qlorad/v1/WatchJobRequest.ts";
export type { GetJobRequest__Output as GetJobRequest } from "./proto/qlorad/v1/GetJobRequest.ts";
export type { ListJobsRequest__Output as ListJobsRequest } from "./proto/qlorad/v1/ListJobsRequest.ts";
export type { CancelJobRequest__Output as CancelJobRequest } from "./proto/qlorad/v1/CancelJobRequest.ts";

export type { JobState__Output as JobStateName } from "./proto/qlorad/v1/JobState.ts";
export type { JobKind__Output as JobKindName } from "./proto/qlorad/v1/JobKind.ts";
export type { JobEvent } from "./proto/qlorad/v1/JobEvent.ts";
export type { Job } from "./proto/qlorad/v1/Job.ts";
export type { ListJobsResponse } from "./proto/qlorad/v1/ListJobsResponse.ts";
export type { CancelJobResponse } from "./proto/qlorad/v1/CancelJobResponse.ts";
export type { EstimateMemoryResponse } from "./proto/qlorad/v1/EstimateMemoryResponse.ts";

/** A request as a job record keeps it: every field filled in but the request_id, added later. */
export type Echoed<Req> = Omit<Req, "request_id">;

/** The call of a job-starting or job-following RPC: one request in, JobEvents out. */
export type JobEventStream<Req> = ServerWritableStream<Req, JobEvent>;

/** The call of a unary RPC. */
export type UnaryCall<Req, Res> = ServerUnaryCall<Req, Res>;
