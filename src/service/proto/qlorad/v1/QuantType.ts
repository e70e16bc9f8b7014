// Original file: proto/qlorad/v1/qlorad.proto

export const QuantType = {
  QUANT_TYPE_UNSPECIFIED: 'QUANT_TYPE_UNSPECIFIED',
  QUANT_TYPE_NF4: 'QUANT_TYPE_NF4',
  QUANT_TYPE_FP4: 'QUANT_TYPE_FP4',
} as const;

export type QuantType =
  | 'QUANT_TYPE_UNSPECIFIED'
  | 0
  | 'QUANT_TYPE_NF4'
  | 1
  | 'QUANT_TYPE_FP4'
  | 2

export type QuantType__Output = typeof QuantType[keyof typeof QuantType]
