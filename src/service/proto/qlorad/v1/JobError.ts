// Original file: proto/qlorad/v1/qlorad.proto


export interface JobError {
  'code'?: (string);
  'message'?: (string);
}

export interface JobError__Output {
  'code': (string);
  'message': (string);
}
