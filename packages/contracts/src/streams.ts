import type { Names } from "./names.js";

/** Tunables an operator may change per installation; everything else is fixed by design. */
export interface StreamOptions {
  /** JetStream replicas for every stream and bucket (3 in production clusters, 1 in tests). */
  replicas?: number;
  /** Window in which a re-published message id is dropped by the server (default 2 minutes). */
  dedupeWindowMs?: number;
  /** How long mail events are kept (default 14 days): long enough to replay after an outage. */
  mailMaxAgeMs?: number;
}

/**
 * A stream definition in JetStream's own field names, so nats-kit can pass it to the server as is.
 * Only features nats-server 2.9 understands are used here.
 */
export interface StreamDefinition {
  name: string;
  description: string;
  subjects: string[];
  retention: "limits" | "workqueue" | "interest";
  storage: "file" | "memory";
  num_replicas: number;
  /** Nanoseconds, as JetStream expects. */
  max_age: number;
  /** Nanoseconds. */
  duplicate_window: number;
  max_msg_size: number;
  discard: "old" | "new";
}

const MS = 1_000_000; // nanoseconds per millisecond
const DAY = 24 * 60 * 60 * 1000;

/** How long mail events stay in the MAIL stream unless configured otherwise. */
export const MAIL_EVENTS_MAX_AGE_MS = 14 * DAY;

/**
 * How long raw bytes wait in the raw-mail object store. The archiver deletes each object once it
 * is committed, so this only cleans up after a crash — and it must outlive the received event that
 * points at it: were the bytes to expire first (an archive paused for a week, say), the event would
 * arrive at an archiver with nothing to store, while the poller has already moved past that UID.
 */
export const RAW_MAIL_TTL_MS = MAIL_EVENTS_MAX_AGE_MS + 7 * DAY;

/** How long a send command waits in its work queue before the server drops it. */
export const SEND_COMMANDS_MAX_AGE_MS = 7 * DAY;

/**
 * How long smtp-sender keeps a send receipt: a day beyond the life of the command it answers, so a
 * command still in the queue (redelivered after a crash) always finds its receipt.
 */
export const SEND_RECEIPT_TTL_MS = SEND_COMMANDS_MAX_AGE_MS + DAY;

/** Every JetStream stream Postroom needs. Services call nats-kit's `ensureStreams` with this. */
export function streamDefinitions(n: Names, options: StreamOptions = {}): StreamDefinition[] {
  const replicas = options.replicas ?? 1;
  const dedupe = (options.dedupeWindowMs ?? 2 * 60 * 1000) * MS;
  const common = {
    storage: "file" as const,
    num_replicas: replicas,
    duplicate_window: dedupe,
    // Raw mail travels through the object store; events are small. 1 MiB is the server default.
    max_msg_size: 1024 * 1024,
    discard: "old" as const,
  };
  const w = n.subjects.wildcard;
  return [
    {
      ...common,
      name: n.streams.mail,
      description: "Mail lifecycle events: received, archived, sent, send-failed",
      subjects: [w.mailReceived(), w.mailArchived(), w.mailSent(), w.mailSendFailed()],
      retention: "limits",
      max_age: Math.min(options.mailMaxAgeMs ?? MAIL_EVENTS_MAX_AGE_MS, RAW_MAIL_TTL_MS) * MS,
    },
    {
      ...common,
      name: n.streams.sendCommands,
      description: "Send commands for smtp-sender; each is taken once",
      subjects: [w.mailSend()],
      retention: "workqueue",
      max_age: SEND_COMMANDS_MAX_AGE_MS * MS,
    },
    {
      ...common,
      name: n.streams.sessions,
      description: "Session lifecycle events from asd-bridge",
      subjects: [w.session()],
      retention: "limits",
      max_age: 30 * DAY * MS,
    },
    {
      ...common,
      name: n.streams.alerts,
      description: "Disk and other operator alerts",
      subjects: [w.diskAlert(), w.loopAlert()],
      retention: "limits",
      max_age: 30 * DAY * MS,
    },
  ];
}
