/**
 * Every metric Postroom exports, in one list. Services never spell a metric name: they call the
 * helpers in `metrics.ts`, which create instruments from this list. The dashboards and alert rules
 * under `deploy/` are tested against it, so a rename here is a reviewed diff there too.
 *
 * This file has no dependencies so that `@postroom/nats-kit` can import it (through the
 * `@postroom/telemetry/catalogue` entry point) without loading the OpenTelemetry SDK.
 *
 * Names follow `postroom_<component>_<thing>_<unit>`; counters end in `_total`. Labels are bounded:
 * tenant, mailbox and queue ids come from the configuration, every other label from a closed set
 * (a reason code, a state, a level). An email address is never a label. Every series also carries
 * `service_name` (the OpenTelemetry resource's service), added by the exporter.
 */

/** How a metric is recorded. */
export type MetricKind = "counter" | "gauge" | "histogram";

/** One exported metric. */
export interface MetricDefinition {
  /** The Prometheus name, exactly as scraped (a histogram adds `_bucket`, `_sum`, `_count`). */
  readonly name: string;
  readonly kind: MetricKind;
  /** The question it answers, shown as the Prometheus HELP text. */
  readonly help: string;
  /** The only labels it carries (besides `service_name`). */
  readonly labels: readonly string[];
  /** The service(s) that export it. */
  readonly services: readonly string[];
}

const CONSUMERS = ["imap-poller", "archiver", "asd-bridge", "smtp-sender"] as const;

/** Buckets for "how long did a customer wait" histograms: 1 s to 1 day. */
export const WAIT_BUCKETS_SECONDS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400];

/** Buckets for "how long did handling one message take": 5 ms to 2 min. */
export const HANDLE_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export const METRICS = {
  messagesFetched: {
    name: "postroom_imap_poller_messages_fetched_total",
    kind: "counter",
    help: "Messages fetched from a mailbox and handed to the archiver.",
    labels: ["tenant", "mailbox"],
    services: ["imap-poller"],
  },
  bytesFetched: {
    name: "postroom_imap_poller_fetched_bytes_total",
    kind: "counter",
    help: "Raw message bytes fetched from a mailbox.",
    labels: ["tenant", "mailbox"],
    services: ["imap-poller"],
  },
  backlog: {
    name: "postroom_imap_poller_backlog_messages",
    kind: "gauge",
    help: "Messages in the mailbox newer than the cursor, not yet fetched.",
    labels: ["tenant", "mailbox"],
    services: ["imap-poller"],
  },
  mailboxState: {
    name: "postroom_imap_poller_mailbox_state",
    kind: "gauge",
    help: "1 for the mailbox's current state, 0 for every other state.",
    labels: ["tenant", "mailbox", "state"],
    services: ["imap-poller"],
  },
  lastSuccessAge: {
    name: "postroom_imap_poller_last_success_age_seconds",
    kind: "gauge",
    help: "Seconds since the last successful check of the mailbox (since start if none yet).",
    labels: ["tenant", "mailbox"],
    services: ["imap-poller"],
  },
  lastError: {
    name: "postroom_imap_poller_last_error_timestamp_seconds",
    kind: "gauge",
    help: "Unix time of the mailbox's latest error of each reason; the newest one is its last error.",
    labels: ["tenant", "mailbox", "reason"],
    services: ["imap-poller"],
  },
  mailboxErrors: {
    name: "postroom_imap_poller_errors_total",
    kind: "counter",
    help: "Failed mailbox checks, by classified reason.",
    labels: ["tenant", "mailbox", "reason"],
    services: ["imap-poller"],
  },
  tokenAcquisitions: {
    name: "postroom_token_service_acquisitions_total",
    kind: "counter",
    help: "Credentials handed out, by authentication method.",
    labels: ["tenant", "mailbox", "method"],
    services: ["token-service"],
  },
  tokenFailures: {
    name: "postroom_token_service_failures_total",
    kind: "counter",
    help: "Credential requests that failed, by reason (needs-admin reasons included).",
    labels: ["tenant", "mailbox", "reason"],
    services: ["token-service"],
  },
  messagesArchived: {
    name: "postroom_archiver_messages_archived_total",
    kind: "counter",
    help: "Messages committed to disk and PostgreSQL (each once).",
    labels: ["tenant", "mailbox"],
    services: ["archiver"],
  },
  archiveUsed: {
    name: "postroom_archiver_archive_used_bytes",
    kind: "gauge",
    help: "Bytes the tenant's archive uses on disk.",
    labels: ["tenant"],
    services: ["archiver"],
  },
  archiveQuota: {
    name: "postroom_archiver_archive_quota_bytes",
    kind: "gauge",
    help: "The tenant's archive quota in bytes (absent when the tenant has none).",
    labels: ["tenant"],
    services: ["archiver"],
  },
  filesystemFree: {
    name: "postroom_archiver_filesystem_free_bytes",
    kind: "gauge",
    help: "Free bytes on the filesystem that holds the tenant's archive.",
    labels: ["tenant"],
    services: ["archiver"],
  },
  alertsRaised: {
    name: "postroom_archiver_alerts_raised_total",
    kind: "counter",
    help: "Archive disk alerts raised, by level (warning, critical).",
    labels: ["tenant", "level"],
    services: ["archiver"],
  },
  sessions: {
    name: "postroom_asd_bridge_sessions",
    kind: "gauge",
    help: "Sessions by state (offered, assigned, completed, ...), per queue.",
    labels: ["tenant", "queue", "state"],
    services: ["asd-bridge"],
  },
  sessionsOffered: {
    name: "postroom_asd_bridge_sessions_offered_total",
    kind: "counter",
    help: "Sessions offered to the ACD (one per message).",
    labels: ["tenant", "queue"],
    services: ["asd-bridge"],
  },
  arrivalToOffer: {
    name: "postroom_asd_bridge_arrival_to_offer_seconds",
    kind: "histogram",
    help: "Seconds from the message's arrival in the mailbox (as the poller saw it) to its offer.",
    labels: ["tenant", "queue"],
    services: ["asd-bridge"],
  },
  offerToAgent: {
    name: "postroom_asd_bridge_offer_to_agent_seconds",
    kind: "histogram",
    help: "Seconds from a session's offer until an agent has it.",
    labels: ["tenant", "queue"],
    services: ["asd-bridge"],
  },
  softdialRefusals: {
    name: "postroom_asd_bridge_softdial_refusals_total",
    kind: "counter",
    help: "CallGem transfers (CT) Postroom refused with TS RS2, by reason (unknown-agent, agent-busy, held-by-another-agent, delivery-error).",
    labels: ["tenant", "reason"],
    services: ["asd-bridge"],
  },
  softdialUnacknowledged: {
    name: "postroom_asd_bridge_softdial_unacknowledged_frames_total",
    kind: "counter",
    help: "Frames sent to CallGem with a TK that no MV acknowledged within the deadline; reason is the frame's two-letter message code.",
    labels: ["tenant", "reason"],
    services: ["asd-bridge"],
  },
  unanswered: {
    name: "postroom_asd_bridge_unanswered_total",
    kind: "counter",
    help: "Sessions an ACD ended without an agent (queue timeout without overflow, abandon, refusal), by reason and the policy applied.",
    labels: ["tenant", "acd", "reason", "policy"],
    services: ["asd-bridge"],
  },
  unansweredSessions: {
    name: "postroom_asd_bridge_unanswered_sessions",
    kind: "gauge",
    help: "Emails recorded unanswered that no agent has yet and that are not closed.",
    labels: ["tenant"],
    services: ["asd-bridge"],
  },
  unansweredOldestAge: {
    name: "postroom_asd_bridge_unanswered_oldest_age_seconds",
    kind: "gauge",
    help: "Seconds since the oldest open unanswered email was first recorded unanswered (0 when none).",
    labels: ["tenant"],
    services: ["asd-bridge"],
  },
  unansweredAlertAge: {
    name: "postroom_asd_bridge_unanswered_alert_age_seconds",
    kind: "gauge",
    help: "The tenant's configured age (unanswered.alertAfterSeconds) after which unanswered emails raise an alert.",
    labels: ["tenant"],
    services: ["asd-bridge"],
  },
  acdState: {
    name: "postroom_asd_bridge_acd_state",
    kind: "gauge",
    help: "1 for the ACD's current state (connecting, connected, unreachable, stopped), 0 for the others.",
    labels: ["tenant", "acd", "state"],
    services: ["asd-bridge"],
  },
  acdHeldBack: {
    name: "postroom_asd_bridge_acd_held_back_sessions",
    kind: "gauge",
    help: "Offers held back because the ACD is unreachable; they go out when it answers again.",
    labels: ["tenant"],
    services: ["asd-bridge"],
  },
  acdUnreachable: {
    name: "postroom_asd_bridge_acd_unreachable_total",
    kind: "counter",
    help: "Times the ACD became unreachable (an outage began).",
    labels: ["tenant", "acd"],
    services: ["asd-bridge"],
  },
  acdOfferFailures: {
    name: "postroom_asd_bridge_acd_offer_failures_total",
    kind: "counter",
    help: "Offers to the ACD that failed and will be retried, by reason (timeout, unreachable, http-<code>).",
    labels: ["tenant", "acd", "reason"],
    services: ["asd-bridge"],
  },
  eventsRefused: {
    name: "postroom_asd_bridge_events_refused_total",
    kind: "counter",
    help: "Events asd-bridge refused because their payload names another tenant, mailbox or message than their subject (terminated, never offered), by reason.",
    labels: ["tenant", "reason"],
    services: ["asd-bridge"],
  },
  sends: {
    name: "postroom_smtp_sender_sends_total",
    kind: "counter",
    help: "Send commands finished, by result (sent, failed, retried) and reason.",
    labels: ["tenant", "mailbox", "result", "reason"],
    services: ["smtp-sender"],
  },
  consumerPending: {
    name: "postroom_jetstream_consumer_pending_messages",
    kind: "gauge",
    help: "Messages in the stream the service's durable consumer has not been given yet.",
    labels: ["consumer"],
    services: CONSUMERS,
  },
  consumerAckPending: {
    name: "postroom_jetstream_consumer_ack_pending_messages",
    kind: "gauge",
    help: "Messages given to the service's durable consumer and not yet acknowledged.",
    labels: ["consumer"],
    services: CONSUMERS,
  },
  handled: {
    name: "postroom_jetstream_handled_total",
    kind: "counter",
    help: "Messages a durable consumer handled, by verdict (ack, retry, term): the rate and errors of RED.",
    labels: ["consumer", "result"],
    services: CONSUMERS,
  },
  handleDuration: {
    name: "postroom_jetstream_handle_duration_seconds",
    kind: "histogram",
    help: "Seconds a durable consumer's handler took for one message: the duration of RED.",
    labels: ["consumer"],
    services: CONSUMERS,
  },
} as const satisfies Record<string, MetricDefinition>;

export type MetricKey = keyof typeof METRICS;

/** Every metric, as a list (for the dashboards' test and the README table). */
export const METRIC_LIST: readonly MetricDefinition[] = Object.values(METRICS);

/**
 * The metric a Prometheus series name belongs to: histograms are scraped as `_bucket`, `_sum`
 * and `_count`. Returns undefined for a name that is not in the catalogue.
 */
export function metricOfSeries(series: string): MetricDefinition | undefined {
  for (const m of METRIC_LIST) {
    if (m.name === series) return m;
    if (m.kind === "histogram" && [`${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`].includes(series)) return m;
  }
  return undefined;
}

const BOUNDED = /^[a-z0-9][a-z0-9_.-]{0,47}$/i;

/**
 * Keeps a label value bounded: ids and reason codes pass, anything else (a free-text error
 * message, an address) becomes "other", so a caller's mistake cannot blow up the series count or
 * leak a customer's address into Prometheus.
 */
export function boundedLabel(value: string | undefined | null): string {
  if (value === undefined || value === null || value === "") return "none";
  return BOUNDED.test(value) ? value : "other";
}
