// Original file: proto/qlorad/v1/qlorad.proto

import type { Long } from '@grpc/proto-loader';

export interface TrainResult {
  'output_path'?: (string);
  'steps'?: (number);
  'first_loss'?: (number | string);
  'final_loss'?: (number | string);
  'eval_loss'?: (number | string);
  'eval_perplexity'?: (number | string);
  'tokens_per_second'?: (number | string);
  'train_seconds'?: (number | string);
  'peak_memory_bytes'?: ({[key: string]: number | string | Long});
  'trainable_parameters'?: (number | string | Long);
  'resumed_from_step'?: (number);
}

export interface TrainResult__Output {
  'output_path': (string);
  'steps': (number);
  'first_loss': (number);
  'final_loss': (number);
  'eval_loss': (number);
  'eval_perplexity': (number);
  'tokens_per_second': (number);
  'train_seconds': (number);
  'peak_memory_bytes': ({[key: string]: number});
  'trainable_parameters': (number);
  'resumed_from_step': (number);
}
