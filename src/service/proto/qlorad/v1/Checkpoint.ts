// Original file: proto/qlorad/v1/qlorad.proto


export interface Checkpoint {
  'path'?: (string);
  'step'?: (number);
  'is_final'?: (boolean);
}

export interface Checkpoint__Output {
  'path': (string);
  'step': (number);
  'is_final': (boolean);
}
