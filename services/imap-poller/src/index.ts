export { Poller } from "./poller.js";
export type { PollerOptions } from "./poller.js";
export { MailboxWorker } from "./mailbox-worker.js";
export type { MailboxWorkerOptions } from "./mailbox-worker.js";
export { classifyImapError } from "./classify.js";
export { Backoff } from "./backoff.js";
