// Original file: proto/qlorad/v1/qlorad.proto


export interface CancelJobRequest {
  'job_id'?: (string);
}

export interface CancelJobRequest__Output {
  'job_id': (string);
}
