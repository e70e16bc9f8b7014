// Original file: proto/qlorad/v1/qlorad.proto


export interface LoraConfig {
  'r'?: (number);
  'alpha'?: (number | string);
  'dropout'?: (number | string);
  'target_modules'?: (string)[];
  'use_rslora'?: (boolean);
  '_alpha'?: "alpha";
  '_dropout'?: "dropout";
}

export interface LoraConfig__Output {
  'r': (number);
  'alpha'?: (number);
  'dropout'?: (number);
  'target_modules': (string)[];
  'use_rslora': (boolean);
  '_alpha'?: "alpha";
  '_dropout'?: "dropout";
}
