// Original file: proto/qlorad/v1/qlorad.proto

import type { ExportFormat as _qlorad_v1_ExportFormat, ExportFormat__Output as _qlorad_v1_ExportFormat__Output } from '../../qlorad/v1/ExportFormat.ts';
import type { ExportType as _qlorad_v1_ExportType, ExportType__Output as _qlorad_v1_ExportType__Output } from '../../qlorad/v1/ExportType.ts';

export interface ExportRequest {
  'base_model_path'?: (string);
  'adapter_path'?: (string);
  'output_path'?: (string);
  'format'?: (_qlorad_v1_ExportFormat);
  'type'?: (_qlorad_v1_ExportType);
  'overwrite'?: (boolean);
  'request_id'?: (string);
}

export interface ExportRequest__Output {
  'base_model_path': (string);
  'adapter_path': (string);
  'output_path': (string);
  'format': (_qlorad_v1_ExportFormat__Output);
  'type': (_qlorad_v1_ExportType__Output);
  'overwrite': (boolean);
  'request_id': (string);
}
