// Original file: proto/qlorad/v1/qlorad.proto

import type { LogLevel as _qlorad_v1_LogLevel, LogLevel__Output as _qlorad_v1_LogLevel__Output } from '../../qlorad/v1/LogLevel.ts';

export interface Log {
  'level'?: (_qlorad_v1_LogLevel);
  'message'?: (string);
}

export interface Log__Output {
  'level': (_qlorad_v1_LogLevel__Output);
  'message': (string);
}
