/**
 * The jobs layer's front door, kept so that importers (the gRPC handlers, the server, tests) need
 * not know how it is split. The pieces live in src/service/jobs/:
 * - records.ts: what a job is (record, events, payloads);
 * - store.ts: the JobStore interface, where records and event logs are kept, and what every
 *   implementation must guarantee;
 * - local_store.ts: the embedded store on the node's own disk (the default);
 * - manager.ts: the queue and scheduler (JobManager) on top of a store;
 * - recovery.ts: what happens at start to jobs a dead server left unended.
 *
 * Nothing here knows gRPC: payloads use the proto's field names, and the handlers translate.
 */
export { endedRecord, isTerminal, nextEvent, selectRecords } from "./jobs/records.ts";
export type {
  JobErrorInfo,
  JobEvent,
  JobKind,
  JobPayload,
  JobRecord,
  JobState,
  ListFilter,
  ProgressPayload,
} from "./jobs/records.ts";
export { StoreConflictError } from "./jobs/store.ts";
export type {
  ConflictReason,
  JobStore,
  Lease,
  ReadOptions,
  StoredJob,
  WriteOptions,
} from "./jobs/store.ts";
export { localJobsDir, LocalJobStore } from "./jobs/local_store.ts";
export { JobManager, shutDownAtCheckpoint } from "./jobs/manager.ts";
export type {
  JobContext,
  JobManagerOptions,
  JobRebuilder,
  JobRun,
  JobSubmission,
  RebuiltJob,
} from "./jobs/manager.ts";
export { RESTARTED_WHILE_QUEUED, RESTARTED_WHILE_RUNNING } from "./jobs/recovery.ts";
