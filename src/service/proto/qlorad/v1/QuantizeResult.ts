// Original file: proto/qlorad/v1/qlorad.proto

import type { Long } from '@grpc/proto-loader';

export interface QuantizeResult {
  'parameters_quantized'?: (number | string | Long);
  'tensors_quantized'?: (number);
  'tensors_kept'?: (number);
  'bits_per_parameter'?: (number | string);
  'bytes_in'?: (number | string | Long);
  'bytes_out'?: (number | string | Long);
  'mean_abs_error'?: (number | string);
  'max_abs_error'?: (number | string);
  'output_path'?: (string);
}

export interface QuantizeResult__Output {
  'parameters_quantized': (number);
  'tensors_quantized': (number);
  'tensors_kept': (number);
  'bits_per_parameter': (number);
  'bytes_in': (number);
  'bytes_out': (number);
  'mean_abs_error': (number);
  'max_abs_error': (number);
  'output_path': (string);
}
