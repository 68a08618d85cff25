export { names, token, InvalidTokenError } from "./names.js";
export type { Names, Subjects, StreamNames, ConsumerNames, BucketNames } from "./names.js";
export { streamDefinitions, MAIL_EVENTS_MAX_AGE_MS, RAW_MAIL_TTL_MS } from "./streams.js";
export type { StreamDefinition, StreamOptions } from "./streams.js";
export * from "./messages.js";
export { IngestControl, ingestKey } from "./control.js";
export { MailboxLease, ReplicaHeartbeat, leaseKey, replicaKey, replicaKeys, isStalled } from "./ingestion.js";
export { MailboxAuthStatus } from "./auth-status.js";
