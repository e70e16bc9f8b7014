// Original file: proto/qlorad/v1/qlorad.proto

import type { Long } from '@grpc/proto-loader';

export interface EstimateMemoryResponse {
  'bytes_by_category'?: ({[key: string]: number | string | Long});
  'total_bytes'?: (number | string | Long);
}

export interface EstimateMemoryResponse__Output {
  'bytes_by_category': ({[key: string]: number});
  'total_bytes': (number);
}
