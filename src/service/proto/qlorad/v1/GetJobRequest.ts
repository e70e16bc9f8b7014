// Original file: proto/qlorad/v1/qlorad.proto


export interface GetJobRequest {
  'job_id'?: (string);
}

export interface GetJobRequest__Output {
  'job_id': (string);
}
