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

type Labels = Record<string, string>;

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
  }

  // ---- imap-poller ------------------------------------------------------------------------

  /** A message was fetched and handed on. */
  messageFetched(tenant: string, mailbox: string, bytes: number): void {
    const labels = { tenant: boundedLabel(tenant), mailbox: boundedLabel(mailbox) };
    this.#counter(METRICS.messagesFetched).add(1, labels);
    this.#counter(METRICS.bytesFetched).add(Math.max(0, bytes), labels);
  }

  /**
   * Everything the mailbox health table shows, from the status the poller already keeps:
   * state (one series per state, 1 for the current one), backlog, last success, last error.
   */
  mailboxStatus(status: MailboxStatusLike): void {
    const tenant = boundedLabel(status.tenant);
    const mailbox = boundedLabel(status.mailbox);
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
    this.#counter(METRICS.mailboxErrors).add(1, { tenant: boundedLabel(tenant), mailbox: boundedLabel(mailbox), reason: boundedLabel(reason) });
  }

  // ---- token-service ----------------------------------------------------------------------

  /** A credential was handed out. `method`: password, microsoft, google, ... */
  tokenAcquired(tenant: string, mailbox: string, method: string): void {
    this.#counter(METRICS.tokenAcquisitions).add(1, { tenant: boundedLabel(tenant), mailbox: boundedLabel(mailbox), method: boundedLabel(method) });
  }

  /** A credential request failed; `reason` is the error kind or provider code (e.g. AADSTS7000215). */
  tokenFailed(tenant: string, mailbox: string, reason: string): void {
    this.#counter(METRICS.tokenFailures).add(1, { tenant: boundedLabel(tenant), mailbox: boundedLabel(mailbox), reason: boundedLabel(reason) });
  }

  // ---- archiver ---------------------------------------------------------------------------

  /** A message was committed to disk and PostgreSQL for the first time. */
  messageArchived(tenant: string, mailbox: string): void {
    this.#counter(METRICS.messagesArchived).add(1, { tenant: boundedLabel(tenant), mailbox: boundedLabel(mailbox) });
  }

  /** The tenant's archive usage as last measured. `quotaBytes` null: no quota. */
  archiveUsage(tenant: string, usage: { usedBytes: number; freeBytes: number; quotaBytes: number | null }): void {
    const labels = { tenant: boundedLabel(tenant) };
    this.#gauge(METRICS.archiveUsed).record(usage.usedBytes, labels);
    this.#gauge(METRICS.filesystemFree).record(usage.freeBytes, labels);
    if (usage.quotaBytes !== null) this.#gauge(METRICS.archiveQuota).record(usage.quotaBytes, labels);
  }

  /** An archive disk alert was raised (once per crossing, not per check). */
  alertRaised(tenant: string, level: "warning" | "critical"): void {
    this.#counter(METRICS.alertsRaised).add(1, { tenant: boundedLabel(tenant), level });
  }

  // ---- asd-bridge -------------------------------------------------------------------------

  /** A session was offered; `arrivedAt` is when the poller saw the message arrive. */
  sessionOffered(tenant: string, queue: string, arrivedAt: Date | string, offeredAt: Date = new Date(this.now())): void {
    const labels = { tenant: boundedLabel(tenant), queue: boundedLabel(queue) };
    this.#counter(METRICS.sessionsOffered).add(1, labels);
    this.#histogram(METRICS.arrivalToOffer, WAIT_BUCKETS_SECONDS).record(secondsBetween(arrivedAt, offeredAt), labels);
  }

  /** An agent has the session now. */
  sessionAssigned(tenant: string, queue: string, offeredAt: Date | string, assignedAt: Date = new Date(this.now())): void {
    const labels = { tenant: boundedLabel(tenant), queue: boundedLabel(queue) };
    this.#histogram(METRICS.offerToAgent, WAIT_BUCKETS_SECONDS).record(secondsBetween(offeredAt, assignedAt), labels);
  }

  /** Registers where the sessions-by-state gauge reads its counts at scrape time (e.g. a SQL GROUP BY). */
  observeSessions(source: () => Promise<SessionCount[]> | SessionCount[]): void {
    this.#sessionSources.push(source);
  }

  // ---- smtp-sender ------------------------------------------------------------------------

  /** A send command finished: `sent`, `failed` (given up) or `retried`; `reason` an SMTP/classifier code. */
  sendFinished(tenant: string, mailbox: string, result: "sent" | "failed" | "retried", reason = "none"): void {
    this.#counter(METRICS.sends).add(1, { tenant: boundedLabel(tenant), mailbox: boundedLabel(mailbox), result, reason: boundedLabel(reason) });
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
    return out;
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
