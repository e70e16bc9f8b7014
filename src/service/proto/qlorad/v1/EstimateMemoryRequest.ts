// Original file: proto/qlorad/v1/qlorad.proto

import type { LoraConfig as _qlorad_v1_LoraConfig, LoraConfig__Output as _qlorad_v1_LoraConfig__Output } from '../../qlorad/v1/LoraConfig.ts';
import type { Hyperparameters as _qlorad_v1_Hyperparameters, Hyperparameters__Output as _qlorad_v1_Hyperparameters__Output } from '../../qlorad/v1/Hyperparameters.ts';
import type { QuantType as _qlorad_v1_QuantType, QuantType__Output as _qlorad_v1_QuantType__Output } from '../../qlorad/v1/QuantType.ts';

export interface EstimateMemoryRequest {
  'base_model_path'?: (string);
  'model_config_json'?: (string);
  'lora'?: (_qlorad_v1_LoraConfig | null);
  'hyperparameters'?: (_qlorad_v1_Hyperparameters | null);
  'quant_type'?: (_qlorad_v1_QuantType);
  'blocksize'?: (number);
  'double_quant'?: (boolean);
  '_double_quant'?: "double_quant";
}

export interface EstimateMemoryRequest__Output {
  'base_model_path': (string);
  'model_config_json': (string);
  'lora': (_qlorad_v1_LoraConfig__Output | null);
  'hyperparameters': (_qlorad_v1_Hyperparameters__Output | null);
  'quant_type': (_qlorad_v1_QuantType__Output);
  'blocksize': (number);
  'double_quant'?: (boolean);
  '_double_quant'?: "double_quant";
}
