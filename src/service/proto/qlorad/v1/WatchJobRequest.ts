// Original file: proto/qlorad/v1/qlorad.proto

import type { Long } from '@grpc/proto-loader';

export interface WatchJobRequest {
  'job_id'?: (string);
  'from_seq'?: (number | string | Long);
}

export interface WatchJobRequest__Output {
  'job_id': (string);
  'from_seq': (number);
}
