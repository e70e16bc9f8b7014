// Original file: proto/qlorad/v1/qlorad.proto

import type { LoraConfig as _qlorad_v1_LoraConfig, LoraConfig__Output as _qlorad_v1_LoraConfig__Output } from '../../qlorad/v1/LoraConfig.ts';
import type { Hyperparameters as _qlorad_v1_Hyperparameters, Hyperparameters__Output as _qlorad_v1_Hyperparameters__Output } from '../../qlorad/v1/Hyperparameters.ts';

export interface TrainRequest {
  'base_model_path'?: (string);
  'dataset_path'?: (string);
  'eval_dataset_path'?: (string);
  'output_path'?: (string);
  'lora'?: (_qlorad_v1_LoraConfig | null);
  'hyperparameters'?: (_qlorad_v1_Hyperparameters | null);
  'resume_from'?: (string);
  'overwrite'?: (boolean);
  'request_id'?: (string);
}

export interface TrainRequest__Output {
  'base_model_path': (string);
  'dataset_path': (string);
  'eval_dataset_path': (string);
  'output_path': (string);
  'lora': (_qlorad_v1_LoraConfig__Output | null);
  'hyperparameters': (_qlorad_v1_Hyperparameters__Output | null);
  'resume_from': (string);
  'overwrite': (boolean);
  'request_id': (string);
}
