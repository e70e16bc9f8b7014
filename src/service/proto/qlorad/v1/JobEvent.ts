// Original file: proto/qlorad/v1/qlorad.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../google/protobuf/Timestamp.ts';
import type { JobState as _qlorad_v1_JobState, JobState__Output as _qlorad_v1_JobState__Output } from '../../qlorad/v1/JobState.ts';
import type { Progress as _qlorad_v1_Progress, Progress__Output as _qlorad_v1_Progress__Output } from '../../qlorad/v1/Progress.ts';
import type { TrainMetrics as _qlorad_v1_TrainMetrics, TrainMetrics__Output as _qlorad_v1_TrainMetrics__Output } from '../../qlorad/v1/TrainMetrics.ts';
import type { Checkpoint as _qlorad_v1_Checkpoint, Checkpoint__Output as _qlorad_v1_Checkpoint__Output } from '../../qlorad/v1/Checkpoint.ts';
import type { EvalResult as _qlorad_v1_EvalResult, EvalResult__Output as _qlorad_v1_EvalResult__Output } from '../../qlorad/v1/EvalResult.ts';
import type { QuantizeResult as _qlorad_v1_QuantizeResult, QuantizeResult__Output as _qlorad_v1_QuantizeResult__Output } from '../../qlorad/v1/QuantizeResult.ts';
import type { JobError as _qlorad_v1_JobError, JobError__Output as _qlorad_v1_JobError__Output } from '../../qlorad/v1/JobError.ts';
import type { Log as _qlorad_v1_Log, Log__Output as _qlorad_v1_Log__Output } from '../../qlorad/v1/Log.ts';
import type { TrainResult as _qlorad_v1_TrainResult, TrainResult__Output as _qlorad_v1_TrainResult__Output } from '../../qlorad/v1/TrainResult.ts';
import type { GeneratedText as _qlorad_v1_GeneratedText, GeneratedText__Output as _qlorad_v1_GeneratedText__Output } from '../../qlorad/v1/GeneratedText.ts';
import type { GenerateResult as _qlorad_v1_GenerateResult, GenerateResult__Output as _qlorad_v1_GenerateResult__Output } from '../../qlorad/v1/GenerateResult.ts';
import type { ExportResult as _qlorad_v1_ExportResult, ExportResult__Output as _qlorad_v1_ExportResult__Output } from '../../qlorad/v1/ExportResult.ts';
import type { Long } from '@grpc/proto-loader';

export interface JobEvent {
  'job_id'?: (string);
  'seq'?: (number | string | Long);
  'time'?: (_google_protobuf_Timestamp | null);
  'state'?: (_qlorad_v1_JobState);
  'progress'?: (_qlorad_v1_Progress | null);
  'train_metrics'?: (_qlorad_v1_TrainMetrics | null);
  'checkpoint'?: (_qlorad_v1_Checkpoint | null);
  'eval_result'?: (_qlorad_v1_EvalResult | null);
  'quantize_result'?: (_qlorad_v1_QuantizeResult | null);
  'error'?: (_qlorad_v1_JobError | null);
  'log'?: (_qlorad_v1_Log | null);
  'train_result'?: (_qlorad_v1_TrainResult | null);
  'generated_text'?: (_qlorad_v1_GeneratedText | null);
  'generate_result'?: (_qlorad_v1_GenerateResult | null);
  'export_result'?: (_qlorad_v1_ExportResult | null);
  'payload'?: "progress"|"train_metrics"|"checkpoint"|"eval_result"|"quantize_result"|"error"|"log"|"train_result"|"generated_text"|"generate_result"|"export_result";
}

export interface JobEvent__Output {
  'job_id': (string);
  'seq': (number);
  'time': (_google_protobuf_Timestamp__Output | null);
  'state': (_qlorad_v1_JobState__Output);
  'progress'?: (_qlorad_v1_Progress__Output | null);
  'train_metrics'?: (_qlorad_v1_TrainMetrics__Output | null);
  'checkpoint'?: (_qlorad_v1_Checkpoint__Output | null);
  'eval_result'?: (_qlorad_v1_EvalResult__Output | null);
  'quantize_result'?: (_qlorad_v1_QuantizeResult__Output | null);
  'error'?: (_qlorad_v1_JobError__Output | null);
  'log'?: (_qlorad_v1_Log__Output | null);
  'train_result'?: (_qlorad_v1_TrainResult__Output | null);
  'generated_text'?: (_qlorad_v1_GeneratedText__Output | null);
  'generate_result'?: (_qlorad_v1_GenerateResult__Output | null);
  'export_result'?: (_qlorad_v1_ExportResult__Output | null);
  'payload'?: "progress"|"train_metrics"|"checkpoint"|"eval_result"|"quantize_result"|"error"|"log"|"train_result"|"generated_text"|"generate_result"|"export_result";
}
