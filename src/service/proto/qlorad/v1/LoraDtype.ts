// Original file: proto/qlorad/v1/qlorad.proto

export const LoraDtype = {
  LORA_DTYPE_UNSPECIFIED: 'LORA_DTYPE_UNSPECIFIED',
  LORA_DTYPE_F32: 'LORA_DTYPE_F32',
  LORA_DTYPE_BF16: 'LORA_DTYPE_BF16',
} as const;

export type LoraDtype =
  | 'LORA_DTYPE_UNSPECIFIED'
  | 0
  | 'LORA_DTYPE_F32'
  | 1
  | 'LORA_DTYPE_BF16'
  | 2

export type LoraDtype__Output = typeof LoraDtype[keyof typeof LoraDtype]
