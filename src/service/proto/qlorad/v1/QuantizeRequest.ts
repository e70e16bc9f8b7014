// Original file: proto/qlorad/v1/qlorad.proto

import type { QuantType as _qlorad_v1_QuantType, QuantType__Output as _qlorad_v1_QuantType__Output } from '../../qlorad/v1/QuantType.ts';

export interface QuantizeRequest {
  'model_path'?: (string);
  'output_path'?: (string);
  'quant_type'?: (_qlorad_v1_QuantType);
  'blocksize'?: (number);
  'double_quant'?: (boolean);
  'skip_modules'?: (string)[];
  'overwrite'?: (boolean);
  'request_id'?: (string);
  '_double_quant'?: "double_quant";
}

export interface QuantizeRequest__Output {
  'model_path': (string);
  'output_path': (string);
  'quant_type': (_qlorad_v1_QuantType__Output);
  'blocksize': (number);
  'double_quant'?: (boolean);
  'skip_modules': (string)[];
  'overwrite': (boolean);
  'request_id': (string);
  '_double_quant'?: "double_quant";
}
