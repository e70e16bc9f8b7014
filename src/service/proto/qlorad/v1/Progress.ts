// Original file: proto/qlorad/v1/qlorad.proto

import type { Long } from '@grpc/proto-loader';

export interface Progress {
  'message'?: (string);
  'tensor'?: (string);
  'index'?: (number);
  'total'?: (number);
  'bytes_in'?: (number | string | Long);
  'bytes_out'?: (number | string | Long);
  'quantized'?: (boolean);
}

export interface Progress__Output {
  'message': (string);
  'tensor': (string);
  'index': (number);
  'total': (number);
  'bytes_in': (number);
  'bytes_out': (number);
  'quantized': (boolean);
}
