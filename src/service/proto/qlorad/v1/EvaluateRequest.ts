// Original file: proto/qlorad/v1/qlorad.proto


export interface EvaluateRequest {
  'base_model_path'?: (string);
  'adapter_path'?: (string);
  'dataset_path'?: (string);
  'max_seq_len'?: (number);
  'batch_size'?: (number);
  'sample_prompts'?: (string)[];
  'max_new_tokens'?: (number);
  'request_id'?: (string);
}

export interface EvaluateRequest__Output {
  'base_model_path': (string);
  'adapter_path': (string);
  'dataset_path': (string);
  'max_seq_len': (number);
  'batch_size': (number);
  'sample_prompts': (string)[];
  'max_new_tokens': (number);
  'request_id': (string);
}
