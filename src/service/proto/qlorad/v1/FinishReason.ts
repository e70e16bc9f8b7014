// Original file: proto/qlorad/v1/qlorad.proto

export const FinishReason = {
  FINISH_REASON_UNSPECIFIED: 'FINISH_REASON_UNSPECIFIED',
  FINISH_REASON_EOS: 'FINISH_REASON_EOS',
  FINISH_REASON_STOP: 'FINISH_REASON_STOP',
  FINISH_REASON_LENGTH: 'FINISH_REASON_LENGTH',
} as const;

export type FinishReason =
  | 'FINISH_REASON_UNSPECIFIED'
  | 0
  | 'FINISH_REASON_EOS'
  | 1
  | 'FINISH_REASON_STOP'
  | 2
  | 'FINISH_REASON_LENGTH'
  | 3

export type FinishReason__Output = typeof FinishReason[keyof typeof FinishReason]
