import type { Attributes, Counter, Gauge, Histogram, Meter } from "@opentelemetry/api";
import { boundedLabel, METRICS, WAIT_BUCKETS_SECONDS, type MetricDefinition } from "./catalogue.js";

/** The mailbox states the poller reports (mirrors `MailboxState` in @postroom/contracts). */
export const MAILBOX_STATES = ["connecting", "idle", "polling", "backing-off", "needs-admin", "paused", "stopped"] as const;

/** One row of the sessions-by-state gauge. */
export interface SessionCount {
  tenant: string;
  queue: string;
  state: string;
  count: number;
}

/** One durable consumer's lag, read from JetStream at scrape time. */
export interface ConsumerLag {
  consumer: string;
  pending: number;
  ackPending: number;
}

/** The shape of the fields of `MailboxStatus` (@postroom/contracts) that the poller's metrics need. */
export interface MailboxStatusLike {
  tenant: string;
  mailbox: string;
  state: string;
  backlog: number;
  lastCheckAt: string | null;
  lastError: { code: string | null; at: string } | null;
  startedAt?: string | undefined;
}

/** The fields of `AcdStatus` (@postroom/contracts) the ACD gauges need. */
export interface AcdStatusLike {
  tenant: string;
  acd: string;
  state: string;
  heldBack: number;
  unanswered: { count: number; oldestAt: string | null; alertAfterSeconds: number };
}

/** The ACD states asd-bridge reports (mirrors `AcdState` in @postroom/contracts). */
export const ACD_STATES = ["connecting", "connected", "unreachable", "stopped"] as const;

type Labels = Record<string, string>;

/** The label of a tenant or mailbox id that the configuration does not know. */
const UNKNOWN = "unknown";

/**
 * The helpers services call to record the catalogue's metrics. Each is one line at the point that
 * matters (a message fetched, a session offered, a send finished); label values are passed through
 * `boundedLabel`, so free text or an address can never become a series.
 */
export class PostroomMetrics {
  readonly #counters = new Map<string, Counter>();
  readonly #gauges = new Map<string, Gauge>();
  readonly #histograms = new Map<string, Histogram>();
  /** `${tenant}\u0000${mailbox}` → ms of the last successful check (or of the start). */
  readonly #lastSuccess = new Map<string, { tenant: string; mailbox: string; at: number }>();
  readonly #sessionSources: (() => Promise<SessionCount[]> | SessionCount[])[] = [];
  readonly #consumerSources: (() => Promise<ConsumerLag[]> | ConsumerLag[])[] = [];
  /** tenant → its mailbox ids, once the configuration is known; undefined until then. */
  #scope: Map<string, Set<string>> | undefined;
  readonly #acdSources: (() => Promise<AcdStatusLike[]> | AcdStatusLike[])[] = [];

  constructor(
    private readonly meter: Meter,
    private readonly now: () => number = Date.now,
  ) {
    // Gauges whose value is only known at scrape time are observed there.
    meter.createObservableGauge(METRICS.lastSuccessAge.name, { description: METRICS.lastSuccessAge.help }).addCallback((result) => {
      for (const { tenant, mailbox, at } of this.#lastSuccess.values()) {
        result.observe(Math.max(0, (this.now() - at) / 1000), { tenant, mailbox });
      }
    });
    meter.createObservableGauge(METRICS.sessions.name, { description: METRICS.sessions.help }).addCallback(async (result) => {
      await this.#observeAll(this.#sessionSources, (row) => result.observe(row.count, this.#labels(METRICS.sessions, row)));
    });
    const pending = meter.createObservableGauge(METRICS.consumerPending.name, { description: METRICS.consumerPending.help });
    const ackPending = meter.createObservableGauge(METRICS.consumerAckPending.name, { description: METRICS.consumerAckPending.help });
    // One batch callback, so one scrape asks JetStream once for both gauges.
    meter.addBatchObservableCallback(async (observer) => {
      await this.#observeAll(this.#consumerSources, (lag) => {
        const labels = { consumer: boundedLabel(lag.consumer) };
        observer.observe(pending, lag.pending, labels);
        observer.observe(ackPending, lag.ackPending, labels);
      });
    }, [pending, ackPending]);
    const acdState = meter.createObservableGauge(METRICS.acdState.name, { description: METRICS.acdState.help });
    const heldBack = meter.createObservableGauge(METRICS.acdHeldBack.name, { description: METRICS.acdHeldBack.help });
    const unanswered = meter.createObservableGauge(METRICS.unansweredSessions.name, { description: METRICS.unansweredSessions.help });
    const oldest = meter.createObservableGauge(METRICS.unansweredOldestAge.name, { description: METRICS.unansweredOldestAge.help });
    const alertAge = meter.createObservableGauge(METRICS.unansweredAlertAge.name, { description: METRICS.unansweredAlertAge.help });
    meter.addBatchObservableCallback(async (observer) => {
      await this.#observeAll(this.#acdSources, (st) => {
        const tenant = this.#tenant(st.tenant);
        const acd = boundedLabel(st.acd);
        for (const s of ACD_STATES) observer.observe(acdState, s === st.state ? 1 : 0, { tenant, acd, state: s });
        observer.observe(heldBack, st.heldBack, { tenant });
        observer.observe(unanswered, st.unanswered.count, { tenant });
        const at = st.unanswered.oldestAt ? Date.parse(st.unanswered.oldestAt) : NaN;
        observer.observe(oldest, Number.isNaN(at) ? 0 : Math.max(0, (this.now() - at) / 1000), { tenant });
        observer.observe(alertAge, st.unanswered.alertAfterSeconds, { tenant });
      });
    }, [acdState, heldBack, unanswered, oldest, alertAge]);
  }

  /**
   * Keeps tenant and mailbox labels to the configured ones: ids arrive in events and KV entries
   * that anyone allowed on the bus can write, and a made-up mailbox must not become a series
   * (the label is "unknown" instead). Called by the runtime as soon as the config is loaded.
   */
  limitLabelsTo(tenants: readonly { id: string; mailboxes: readonly { id: string }[] }[]): void {
    this.#scope = new Map(tenants.map((t) => [t.id, new Set(t.mailboxes.map((m) => m.id))]));
  }

  // ---- imap-poller ------------------------------------------------------------------------

  /** A message was fetched and handed on. */
  messageFetched(tenant: string, mailbox: string, bytes: number): void {
    const labels = { tenant: this.#tenant(tenant), mailbox: this.#mailbox(tenant, mailbox) };
    this.#counter(METRICS.messagesFetched).add(1, labels);
    this.#counter(METRICS.bytesFetched).add(Math.max(0, bytes), labels);
  }

  /**
   * Everything the mailbox health table shows, from the status the poller already keeps:
   * state (one series per state, 1 for the current one), backlog, last success, last error.
   */
  mailboxStatus(status: MailboxStatusLike): void {
    const tenant = this.#tenant(status.tenant);
    const mailbox = this.#mailbox(status.tenant, status.mailbox);
    const state = this.#gauge(METRICS.mailboxState);
    for (const s of MAILBOX_STATES) state.record(s === status.state ? 1 : 0, { tenant, mailbox, state: s });
    this.#gauge(METRICS.backlog).record(status.backlog, { tenant, mailbox });
    const key = `${tenant}\u0000${mailbox}`;
    const since = status.lastCheckAt ?? status.startedAt ?? null;
    const at = since ? Date.parse(since) : NaN;
    if (!Number.isNaN(at)) this.#lastSuccess.set(key, { tenant, mailbox, at });
    else if (!this.#lastSuccess.has(key)) this.#lastSuccess.set(key, { tenant, mailbox, at: this.now() });
    if (status.lastError) {
      const errorAt = Date.parse(status.lastError.at);
      const reason = boundedLabel(status.lastError.code ?? "unknown");
      if (!Number.isNaN(errorAt)) this.#gauge(METRICS.lastError).record(errorAt / 1000, { tenant, mailbox, reason });
    }
  }

  /** A mailbox check failed; `reason` is the classifier's code (never the message text). */
  mailboxError(tenant: string, mailbox: string, reason: string): void {
    this.#counter(METRICS.mailboxErrors).add(1, { tenant: this.#tenant(tenant), mailbox: this.#mailbox(tenant, mailbox), reason: boundedLabel(reason) });
  }

  // ---- token-service ----------------------------------------------------------------------

  /** A credential was handed out. `method`: password, microsoft, google, ... */
  tokenAcquired(tenant: string, mailbox: string, method: string): void {
    this.#counter(METRICS.tokenAcquisitions).add(1, { tenant: this.#tenant(tenant), mailbox: this.#mailbox(tenant, mailbox), method: boundedLabel(method) });
  }

  /** A credential request failed; `reason` is the error kind or provider code (e.g. AADSTS7000215). */
  tokenFailed(tenant: string, mailbox: string, reason: string): void {
    this.#counter(METRICS.tokenFailures).add(1, { tenant: this.#tenant(tenant), mailbox: this.#mailbox(tenant, mailbox), reason: boundedLabel(reason) });
  }

  // ---- archiver ---------------------------------------------------------------------------

  /** A message was committed to disk and PostgreSQL for the first time. */
  messageArchived(tenant: string, mailbox: string): void {
    this.#counter(METRICS.messagesArchived).add(1, { tenant: this.#tenant(tenant), mailbox: this.#mailbox(tenant, mailbox) });
  }

  /** The tenant's archive usage as last measured. `quotaBytes` null: no quota. */
  archiveUsage(tenant: string, usage: { usedBytes: number; freeBytes: number; quotaBytes: number | null }): void {
    const labels = { tenant: this.#tenant(tenant) };
    this.#gauge(METRICS.archiveUsed).record(usage.usedBytes, labels);
    this.#gauge(METRICS.filesystemFree).record(usage.freeBytes, labels);
    if (usage.quotaBytes !== null) this.#gauge(METRICS.archiveQuota).record(usage.quotaBytes, labels);
  }

  /** An archive disk alert was raised (once per crossing, not per check). */
  alertRaised(tenant: string, level: "warning" | "critical"): void {
    this.#counter(METRICS.alertsRaised).add(1, { tenant: this.#tenant(tenant), level });
  }

  // ---- asd-bridge -------------------------------------------------------------------------

  /** A session was offered; `arrivedAt` is when the poller saw the message arrive. */
  sessionOffered(tenant: string, queue: string, arrivedAt: Date | string, offeredAt: Date = new Date(this.now())): void {
    const labels = { tenant: this.#tenant(tenant), queue: boundedLabel(queue) };
    this.#counter(METRICS.sessionsOffered).add(1, labels);
    this.#histogram(METRICS.arrivalToOffer, WAIT_BUCKETS_SECONDS).record(secondsBetween(arrivedAt, offeredAt), labels);
  }

  /** An agent has the session now. */
  sessionAssigned(tenant: string, queue: string, offeredAt: Date | string, assignedAt: Date = new Date(this.now())): void {
    const labels = { tenant: this.#tenant(tenant), queue: boundedLabel(queue) };
    this.#histogram(METRICS.offerToAgent, WAIT_BUCKETS_SECONDS).record(secondsBetween(offeredAt, assignedAt), labels);
  }

  /** An ACD ended a session without an agent; `reason` is a short code, `policy` requeue/fallback/close. */
  sessionUnanswered(tenant: string, acd: string, reason: string, policy: string): void {
    this.#counter(METRICS.unanswered).add(1, { tenant: this.#tenant(tenant), acd: boundedLabel(acd), reason: boundedLabel(reason), policy: boundedLabel(policy) });
  }

  /** The ACD became unreachable (counted once per outage). */
  acdUnreachable(tenant: string, acd: string): void {
    this.#counter(METRICS.acdUnreachable).add(1, { tenant: this.#tenant(tenant), acd: boundedLabel(acd) });
  }

  /** One offer to the ACD failed and will be retried. */
  acdOfferFailed(tenant: string, acd: string, reason: string): void {
    this.#counter(METRICS.acdOfferFailures).add(1, { tenant: this.#tenant(tenant), acd: boundedLabel(acd), reason: boundedLabel(reason) });
  }

  /** asd-bridge refused an event whose payload names another tenant, mailbox or message than its subject. */
  eventRefused(tenant: string, reason: string): void {
    this.#counter(METRICS.eventsRefused).add(1, { tenant: this.#tenant(tenant), reason: boundedLabel(reason) });
  }

  /** Registers where the ACD gauges (state, held back, unanswered) read at scrape time. */
  observeAcd(source: () => Promise<AcdStatusLike[]> | AcdStatusLike[]): void {
    this.#acdSources.push(source);
  }

  /** Registers where the sessions-by-state gauge reads its counts at scrape time (e.g. a SQL GROUP BY). */
  observeSessions(source: () => Promise<SessionCount[]> | SessionCount[]): void {
    this.#sessionSources.push(source);
  }

  /** Postroom answered a CallGem transfer with TS RS2; `reason` from a closed set. */
  softdialRefusal(tenant: string, reason: string): void {
    this.#counter(METRICS.softdialRefusals).add(1, { tenant: boundedLabel(tenant), reason: boundedLabel(reason) });
  }

  /** A frame carrying TK got no MV in time; `message` is its two-letter code. */
  softdialUnacknowledged(tenant: string, message: string): void {
    this.#counter(METRICS.softdialUnacknowledged).add(1, { tenant: boundedLabel(tenant), reason: boundedLabel(message) });
  }

  // ---- smtp-sender ------------------------------------------------------------------------

  /** A send command finished: `sent`, `failed` (given up) or `retried`; `reason` an SMTP/classifier code. */
  sendFinished(tenant: string, mailbox: string, result: "sent" | "failed" | "retried", reason = "none"): void {
    this.#counter(METRICS.sends).add(1, { tenant: this.#tenant(tenant), mailbox: this.#mailbox(tenant, mailbox), result, reason: boundedLabel(reason) });
  }

  // ---- every consuming service ------------------------------------------------------------

  /** Registers where the consumer lag gauges read at scrape time (JetStream consumer info). */
  observeConsumers(source: () => Promise<ConsumerLag[]> | ConsumerLag[]): void {
    this.#consumerSources.push(source);
  }

  // ---- internals --------------------------------------------------------------------------

  #counter(m: MetricDefinition): Counter {
    let c = this.#counters.get(m.name);
    if (!c) this.#counters.set(m.name, (c = this.meter.createCounter(m.name, { description: m.help })));
    return c;
  }

  #gauge(m: MetricDefinition): Gauge {
    let g = this.#gauges.get(m.name);
    if (!g) this.#gauges.set(m.name, (g = this.meter.createGauge(m.name, { description: m.help })));
    return g;
  }

  #histogram(m: MetricDefinition, buckets: number[]): Histogram {
    let h = this.#histograms.get(m.name);
    if (!h) {
      h = this.meter.createHistogram(m.name, { description: m.help, advice: { explicitBucketBoundaries: buckets } });
      this.#histograms.set(m.name, h);
    }
    return h;
  }

  #labels(m: MetricDefinition, values: object): Attributes {
    const out: Labels = {};
    for (const l of m.labels) out[l] = boundedLabel(String((values as Record<string, unknown>)[l] ?? ""));
    if (out.tenant !== undefined) out.tenant = this.#tenant(out.tenant);
    return out;
  }

  /** A tenant label: the id when configured (or no scope is set), else "unknown". */
  #tenant(tenant: string): string {
    if (this.#scope && !this.#scope.has(tenant)) return UNKNOWN;
    return boundedLabel(tenant);
  }

  /** A mailbox label: the id when configured for that tenant (or no scope is set), else "unknown". */
  #mailbox(tenant: string, mailbox: string): string {
    if (this.#scope && !this.#scope.get(tenant)?.has(mailbox)) return UNKNOWN;
    return boundedLabel(mailbox);
  }

  async #observeAll<T>(sources: (() => Promise<T[]> | T[])[], each: (row: T) => void): Promise<void> {
    // A source that fails (NATS or PostgreSQL down) leaves its series out of this scrape instead
    // of failing the whole /metrics answer.
    const results = await Promise.allSettled(sources.map(async (s) => s()));
    for (const r of results) if (r.status === "fulfilled") for (const row of r.value) each(row);
  }
}

function secondsBetween(from: Date | string, to: Date): number {
  const start = typeof from === "string" ? Date.parse(from) : from.getTime();
  if (Number.isNaN(start)) return 0;
  return Math.max(0, (to.getTime() - start) / 1000);
}
