// Original file: proto/qlorad/v1/qlorad.proto

export const JobKind = {
  JOB_KIND_UNSPECIFIED: 'JOB_KIND_UNSPECIFIED',
  JOB_KIND_QUANTIZE: 'JOB_KIND_QUANTIZE',
  JOB_KIND_TRAIN: 'JOB_KIND_TRAIN',
  JOB_KIND_EVALUATE: 'JOB_KIND_EVALUATE',
  JOB_KIND_GENERATE: 'JOB_KIND_GENERATE',
  JOB_KIND_EXPORT: 'JOB_KIND_EXPORT',
} as const;

export type JobKind =
  | 'JOB_KIND_UNSPECIFIED'
  | 0
  | 'JOB_KIND_QUANTIZE'
  | 1
  | 'JOB_KIND_TRAIN'
  | 2
  | 'JOB_KIND_EVALUATE'
  | 3
  | 'JOB_KIND_GENERATE'
  | 4
  | 'JOB_KIND_EXPORT'
  | 5

export type JobKind__Output = typeof JobKind[keyof typeof JobKind]
