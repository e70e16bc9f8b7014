// Original file: proto/qlorad/v1/qlorad.proto

import type { Long } from '@grpc/proto-loader';

export interface TrainMetrics {
  'step'?: (number);
  'total_steps'?: (number);
  'epoch'?: (number | string);
  'loss'?: (number | string);
  'learning_rate'?: (number | string);
  'grad_norm'?: (number | string);
  'tokens_per_second'?: (number | string);
  'memory_bytes'?: ({[key: string]: number | string | Long});
  'eta_seconds'?: (number | string);
  'paged_bytes_in'?: (number | string | Long);
  'paged_bytes_out'?: (number | string | Long);
  'tokens'?: (number | string | Long);
}

export interface TrainMetrics__Output {
  'step': (number);
  'total_steps': (number);
  'epoch': (number);
  'loss': (number);
  'learning_rate': (number);
  'grad_norm': (number);
  'tokens_per_second': (number);
  'memory_bytes': ({[key: string]: number});
  'eta_seconds': (number);
  'paged_bytes_in': (number);
  'paged_bytes_out': (number);
  'tokens': (number);
}
