// Original file: proto/qlorad/v1/qlorad.proto

export const LogLevel = {
  LOG_LEVEL_UNSPECIFIED: 'LOG_LEVEL_UNSPECIFIED',
  LOG_LEVEL_INFO: 'LOG_LEVEL_INFO',
  LOG_LEVEL_WARNING: 'LOG_LEVEL_WARNING',
} as const;

export type LogLevel =
  | 'LOG_LEVEL_UNSPECIFIED'
  | 0
  | 'LOG_LEVEL_INFO'
  | 1
  | 'LOG_LEVEL_WARNING'
  | 2

export type LogLevel__Output = typeof LogLevel[keyof typeof LogLevel]
