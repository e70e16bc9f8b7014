// Original file: proto/qlorad/v1/qlorad.proto

export const LrScheduler = {
  LR_SCHEDULER_UNSPECIFIED: 'LR_SCHEDULER_UNSPECIFIED',
  LR_SCHEDULER_CONSTANT: 'LR_SCHEDULER_CONSTANT',
  LR_SCHEDULER_LINEAR: 'LR_SCHEDULER_LINEAR',
  LR_SCHEDULER_COSINE: 'LR_SCHEDULER_COSINE',
} as const;

export type LrScheduler =
  | 'LR_SCHEDULER_UNSPECIFIED'
  | 0
  | 'LR_SCHEDULER_CONSTANT'
  | 1
  | 'LR_SCHEDULER_LINEAR'
  | 2
  | 'LR_SCHEDULER_COSINE'
  | 3

export type LrScheduler__Output = typeof LrScheduler[keyof typeof LrScheduler]
