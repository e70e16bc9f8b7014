// Original file: proto/qlorad/v1/qlorad.proto

import type { JobKind as _qlorad_v1_JobKind, JobKind__Output as _qlorad_v1_JobKind__Output } from '../../qlorad/v1/JobKind.ts';
import type { JobState as _qlorad_v1_JobState, JobState__Output as _qlorad_v1_JobState__Output } from '../../qlorad/v1/JobState.ts';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.ts';
import type { JobError as _qlorad_v1_JobError, JobError__Output as _qlorad_v1_JobError__Output } from '../../qlorad/v1/JobError.ts';
import type { JobEvent as _qlorad_v1_JobEvent, JobEvent__Output as _qlorad_v1_JobEvent__Output } from '../../qlorad/v1/JobEvent.ts';
import type { QuantizeRequest as _qlorad_v1_QuantizeRequest, QuantizeRequest__Output as _qlorad_v1_QuantizeRequest__Output } from '../../qlorad/v1/QuantizeRequest.ts';
import type { TrainRequest as _qlorad_v1_TrainRequest, TrainRequest__Output as _qlorad_v1_TrainRequest__Output } from '../../qlorad/v1/TrainRequest.ts';
import type { EvaluateRequest as _qlorad_v1_EvaluateRequest, EvaluateRequest__Output as _qlorad_v1_EvaluateRequest__Output } from '../../qlorad/v1/EvaluateRequest.ts';
import type { GenerateRequest as _qlorad_v1_GenerateRequest, GenerateRequest__Output as _qlorad_v1_GenerateRequest__Output } from '../../qlorad/v1/GenerateRequest.ts';
import type { ExportRequest as _qlorad_v1_ExportRequest, ExportRequest__Output as _qlorad_v1_ExportRequest__Output } from '../../qlorad/v1/ExportRequest.ts';
import type { Long } from '@grpc/proto-loader';

export interface Job {
  'job_id'?: (string);
  'kind'?: (_qlorad_v1_JobKind);
  'state'?: (_qlorad_v1_JobState);
  'created_time'?: (_google_protobuf_Timestamp | null);
  'started_time'?: (_google_protobuf_Timestamp | null);
  'finished_time'?: (_google_protobuf_Timestamp | null);
  'summary'?: (string);
  'last_seq'?: (number | string | Long);
  'error'?: (_qlorad_v1_JobError | null);
  'last_event'?: (_qlorad_v1_JobEvent | null);
  'owner'?: (string);
  'cancel_requested'?: (boolean);
  'quantize'?: (_qlorad_v1_QuantizeRequest | null);
  'train'?: (_qlorad_v1_TrainRequest | null);
  'evaluate'?: (_qlorad_v1_EvaluateRequest | null);
  'generate'?: (_qlorad_v1_GenerateRequest | null);
  'export'?: (_qlorad_v1_ExportRequest | null);
  'request'?: "quantize"|"train"|"evaluate"|"generate"|"export";
}

export interface Job__Output {
  'job_id': (string);
  'kind': (_qlorad_v1_JobKind__Output);
  'state': (_qlorad_v1_JobState__Output);
  'created_time': (_google_protobuf_Timestamp__Output | null);
  'started_time': (_google_protobuf_Timestamp__Output | null);
  'finished_time': (_google_protobuf_Timestamp__Output | null);
  'summary': (string);
  'last_seq': (number);
  'error': (_qlorad_v1_JobError__Output | null);
  'last_event': (_qlorad_v1_JobEvent__Output | null);
  'owner': (string);
  'cancel_requested': (boolean);
  'quantize'?: (_qlorad_v1_QuantizeRequest__Output | null);
  'train'?: (_qlorad_v1_TrainRequest__Output | null);
  'evaluate'?: (_qlorad_v1_EvaluateRequest__Output | null);
  'generate'?: (_qlorad_v1_GenerateRequest__Output | null);
  'export'?: (_qlorad_v1_ExportRequest__Output | null);
  'request'?: "quantize"|"train"|"evaluate"|"generate"|"export";
}
