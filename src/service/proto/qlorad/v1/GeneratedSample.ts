// Original file: proto/qlorad/v1/qlorad.proto


export interface GeneratedSample {
  'prompt'?: (string);
  'completion'?: (string);
}

export interface GeneratedSample__Output {
  'prompt': (string);
  'completion': (string);
}
