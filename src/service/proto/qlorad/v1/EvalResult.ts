// Original file: proto/qlorad/v1/qlorad.proto

import type { GeneratedSample as _qlorad_v1_GeneratedSample, GeneratedSample__Output as _qlorad_v1_GeneratedSample__Output } from '../../qlorad/v1/GeneratedSample.ts';
import type { Long } from '@grpc/proto-loader';

export interface EvalResult {
  'loss'?: (number | string);
  'perplexity'?: (number | string);
  'token_accuracy'?: (number | string);
  'tokens'?: (number | string | Long);
  'samples'?: (_qlorad_v1_GeneratedSample)[];
  'examples'?: (number | string | Long);
  'step'?: (number);
}

export interface EvalResult__Output {
  'loss': (number);
  'perplexity': (number);
  'token_accuracy': (number);
  'tokens': (number);
  'samples': (_qlorad_v1_GeneratedSample__Output)[];
  'examples': (number);
  'step': (number);
}
