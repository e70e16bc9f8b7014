// Original file: proto/qlorad/v1/qlorad.proto

export const ExportFormat = {
  EXPORT_FORMAT_UNSPECIFIED: 'EXPORT_FORMAT_UNSPECIFIED',
  EXPORT_FORMAT_GGUF_MERGED: 'EXPORT_FORMAT_GGUF_MERGED',
  EXPORT_FORMAT_GGUF_LORA: 'EXPORT_FORMAT_GGUF_LORA',
  EXPORT_FORMAT_HF_MERGED: 'EXPORT_FORMAT_HF_MERGED',
} as const;

export type ExportFormat =
  | 'EXPORT_FORMAT_UNSPECIFIED'
  | 0
  | 'EXPORT_FORMAT_GGUF_MERGED'
  | 1
  | 'EXPORT_FORMAT_GGUF_LORA'
  | 2
  | 'EXPORT_FORMAT_HF_MERGED'
  | 3

export type ExportFormat__Output = typeof ExportFormat[keyof typeof ExportFormat]
