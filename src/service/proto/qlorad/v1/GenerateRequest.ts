// Original file: proto/qlorad/v1/qlorad.proto

import type { ChatMessage as _qlorad_v1_ChatMessage, ChatMessage__Output as _qlorad_v1_ChatMessage__Output } from '../../qlorad/v1/ChatMessage.ts';

export interface GenerateRequest {
  'base_model_path'?: (string);
  'adapter_path'?: (string);
  'prompt'?: (string);
  'messages'?: (_qlorad_v1_ChatMessage)[];
  'max_new_tokens'?: (number);
  'temperature'?: (number | string);
  'top_k'?: (number);
  'top_p'?: (number | string);
  'seed'?: (number);
  'stop'?: (string)[];
  'ignore_eos'?: (boolean);
  'request_id'?: (string);
  '_top_p'?: "top_p";
}

export interface GenerateRequest__Output {
  'base_model_path': (string);
  'adapter_path': (string);
  'prompt': (string);
  'messages': (_qlorad_v1_ChatMessage__Output)[];
  'max_new_tokens': (number);
  'temperature': (number);
  'top_k': (number);
  'top_p'?: (number);
  'seed': (number);
  'stop': (string)[];
  'ignore_eos': (boolean);
  'request_id': (string);
  '_top_p'?: "top_p";
}
