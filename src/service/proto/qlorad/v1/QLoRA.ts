// Original file: proto/qlorad/v1/qlorad.proto

import type { MethodDefinition } from '@grpc/proto-loader'
import type { CancelJobRequest as _qlorad_v1_CancelJobRequest, CancelJobRequest__Output as _qlorad_v1_CancelJobRequest__Output } from '../../qlorad/v1/CancelJobRequest.ts';
import type { CancelJobResponse as _qlorad_v1_CancelJobResponse, CancelJobResponse__Output as _qlorad_v1_CancelJobResponse__Output } from '../../qlorad/v1/CancelJobResponse.ts';
import type { EstimateMemoryRequest as _qlorad_v1_EstimateMemoryRequest, EstimateMemoryRequest__Output as _qlorad_v1_EstimateMemoryRequest__Output } from '../../qlorad/v1/EstimateMemoryRequest.ts';
import type { EstimateMemoryResponse as _qlorad_v1_EstimateMemoryResponse, EstimateMemoryResponse__Output as _qlorad_v1_EstimateMemoryResponse__Output } from '../../qlorad/v1/EstimateMemoryResponse.ts';
import type { EvaluateRequest as _qlorad_v1_EvaluateRequest, EvaluateRequest__Output as _qlorad_v1_EvaluateRequest__Output } from '../../qlorad/v1/EvaluateRequest.ts';
import type { ExportRequest as _qlorad_v1_ExportRequest, ExportRequest__Output as _qlorad_v1_ExportRequest__Output } from '../../qlorad/v1/ExportRequest.ts';
import type { GenerateRequest as _qlorad_v1_GenerateRequest, GenerateRequest__Output as _qlorad_v1_GenerateRequest__Output } from '../../qlorad/v1/GenerateRequest.ts';
import type { GetJobRequest as _qlorad_v1_GetJobRequest, GetJobRequest__Output as _qlorad_v1_GetJobRequest__Output } from '../../qlorad/v1/GetJobRequest.ts';
import type { Job as _qlorad_v1_Job, Job__Output as _qlorad_v1_Job__Output } from '../../qlorad/v1/Job.ts';
import type { JobEvent as _qlorad_v1_JobEvent, JobEvent__Output as _qlorad_v1_JobEvent__Output } from '../../qlorad/v1/JobEvent.ts';
import type { ListJobsRequest as _qlorad_v1_ListJobsRequest, ListJobsRequest__Output as _qlorad_v1_ListJobsRequest__Output } from '../../qlorad/v1/ListJobsRequest.ts';
import type { ListJobsResponse as _qlorad_v1_ListJobsResponse, ListJobsResponse__Output as _qlorad_v1_ListJobsResponse__Output } from '../../qlorad/v1/ListJobsResponse.ts';
import type { QuantizeRequest as _qlorad_v1_QuantizeRequest, QuantizeRequest__Output as _qlorad_v1_QuantizeRequest__Output } from '../../qlorad/v1/QuantizeRequest.ts';
import type { TrainRequest as _qlorad_v1_TrainRequest, TrainRequest__Output as _qlorad_v1_TrainRequest__Output } from '../../qlorad/v1/TrainRequest.ts';
import type { WatchJobRequest as _qlorad_v1_WatchJobRequest, WatchJobRequest__Output as _qlorad_v1_WatchJobRequest__Output } from '../../qlorad/v1/WatchJobRequest.ts';

export interface QLoRADefinition {
  CancelJob: MethodDefinition<_qlorad_v1_CancelJobRequest, _qlorad_v1_CancelJobResponse, _qlorad_v1_CancelJobRequest__Output, _qlorad_v1_CancelJobResponse__Output>
  EstimateMemory: MethodDefinition<_qlorad_v1_EstimateMemoryRequest, _qlorad_v1_EstimateMemoryResponse, _qlorad_v1_EstimateMemoryRequest__Output, _qlorad_v1_EstimateMemoryResponse__Output>
  Evaluate: MethodDefinition<_qlorad_v1_EvaluateRequest, _qlorad_v1_JobEvent, _qlorad_v1_EvaluateRequest__Output, _qlorad_v1_JobEvent__Output>
  Export: MethodDefinition<_qlorad_v1_ExportRequest, _qlorad_v1_JobEvent, _qlorad_v1_ExportRequest__Output, _qlorad_v1_JobEvent__Output>
  Generate: MethodDefinition<_qlorad_v1_GenerateRequest, _qlorad_v1_JobEvent, _qlorad_v1_GenerateRequest__Output, _qlorad_v1_JobEvent__Output>
  GetJob: MethodDefinition<_qlorad_v1_GetJobRequest, _qlorad_v1_Job, _qlorad_v1_GetJobRequest__Output, _qlorad_v1_Job__Output>
  ListJobs: MethodDefinition<_qlorad_v1_ListJobsRequest, _qlorad_v1_ListJobsResponse, _qlorad_v1_ListJobsRequest__Output, _qlorad_v1_ListJobsResponse__Output>
  Quantize: MethodDefinition<_qlorad_v1_QuantizeRequest, _qlorad_v1_JobEvent, _qlorad_v1_QuantizeRequest__Output, _qlorad_v1_JobEvent__Output>
  Train: MethodDefinition<_qlorad_v1_TrainRequest, _qlorad_v1_JobEvent, _qlorad_v1_TrainRequest__Output, _qlorad_v1_JobEvent__Output>
  WatchJob: MethodDefinition<_qlorad_v1_WatchJobRequest, _qlorad_v1_JobEvent, _qlorad_v1_WatchJobRequest__Output, _qlorad_v1_JobEvent__Output>
}
