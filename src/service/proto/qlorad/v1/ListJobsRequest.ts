// Original file: proto/qlorad/v1/qlorad.proto

import type { JobKind as _qlorad_v1_JobKind, JobKind__Output as _qlorad_v1_JobKind__Output } from '../../qlorad/v1/JobKind.ts';
import type { JobState as _qlorad_v1_JobState, JobState__Output as _qlorad_v1_JobState__Output } from '../../qlorad/v1/JobState.ts';

export interface ListJobsRequest {
  'kind'?: (_qlorad_v1_JobKind);
  'states'?: (_qlorad_v1_JobState)[];
  'limit'?: (number);
}

export interface ListJobsRequest__Output {
  'kind': (_qlorad_v1_JobKind__Output);
  'states': (_qlorad_v1_JobState__Output)[];
  'limit': (number);
}
