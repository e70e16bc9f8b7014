// Original file: proto/qlorad/v1/qlorad.proto

import type { ExportFormat as _qlorad_v1_ExportFormat, ExportFormat__Output as _qlorad_v1_ExportFormat__Output } from '../../qlorad/v1/ExportFormat.ts';
import type { ExportType as _qlorad_v1_ExportType, ExportType__Output as _qlorad_v1_ExportType__Output } from '../../qlorad/v1/ExportType.ts';
import type { Long } from '@grpc/proto-loader';

export interface ExportResult {
  'output_path'?: (string);
  'format'?: (_qlorad_v1_ExportFormat);
  'type'?: (_qlorad_v1_ExportType);
  'tensors'?: (number);
  'merged_linears'?: (number);
  'f16_fallbacks'?: (string)[];
  'bytes'?: (number | string | Long);
}

export interface ExportResult__Output {
  'output_path': (string);
  'format': (_qlorad_v1_ExportFormat__Output);
  'type': (_qlorad_v1_ExportType__Output);
  'tensors': (number);
  'merged_linears': (number);
  'f16_fallbacks': (string)[];
  'bytes': (number);
}
