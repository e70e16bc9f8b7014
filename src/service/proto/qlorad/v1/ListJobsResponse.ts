// Original file: proto/qlorad/v1/qlorad.proto

import type { Job as _qlorad_v1_Job, Job__Output as _qlorad_v1_Job__Output } from '../../qlorad/v1/Job.ts';

export interface ListJobsResponse {
  'jobs'?: (_qlorad_v1_Job)[];
}

export interface ListJobsResponse__Output {
  'jobs': (_qlorad_v1_Job__Output)[];
}
