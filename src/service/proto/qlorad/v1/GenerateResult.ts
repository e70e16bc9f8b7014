// Original file: proto/qlorad/v1/qlorad.proto

import type { FinishReason as _qlorad_v1_FinishReason, FinishReason__Output as _qlorad_v1_FinishReason__Output } from '../../qlorad/v1/FinishReason.ts';

export interface GenerateResult {
  'text'?: (string);
  'finish_reason'?: (_qlorad_v1_FinishReason);
  'prompt_tokens'?: (number);
  'generated_tokens'?: (number);
  'token_ids'?: (number)[];
  'prefill_tokens_per_second'?: (number | string);
  'decode_tokens_per_second'?: (number | string);
}

export interface GenerateResult__Output {
  'text': (string);
  'finish_reason': (_qlorad_v1_FinishReason__Output);
  'prompt_tokens': (number);
  'generated_tokens': (number);
  'token_ids': (number)[];
  'prefill_tokens_per_second': (number);
  'decode_tokens_per_second': (number);
}
