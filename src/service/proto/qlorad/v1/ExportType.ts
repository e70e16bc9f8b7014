// Original file: proto/qlorad/v1/qlorad.proto

export const ExportType = {
  EXPORT_TYPE_UNSPECIFIED: 'EXPORT_TYPE_UNSPECIFIED',
  EXPORT_TYPE_F32: 'EXPORT_TYPE_F32',
  EXPORT_TYPE_F16: 'EXPORT_TYPE_F16',
  EXPORT_TYPE_BF16: 'EXPORT_TYPE_BF16',
  EXPORT_TYPE_Q8_0: 'EXPORT_TYPE_Q8_0',
  EXPORT_TYPE_Q4_0: 'EXPORT_TYPE_Q4_0',
} as const;

export type ExportType =
  | 'EXPORT_TYPE_UNSPECIFIED'
  | 0
  | 'EXPORT_TYPE_F32'
  | 1
  | 'EXPORT_TYPE_F16'
  | 2
  | 'EXPORT_TYPE_BF16'
  | 3
  | 'EXPORT_TYPE_Q8_0'
  | 4
  | 'EXPORT_TYPE_Q4_0'
  | 5

export type ExportType__Output = typeof ExportType[keyof typeof ExportType]
