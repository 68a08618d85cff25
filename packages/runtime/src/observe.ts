import {
  DiskAlert,
  MailArchived,
  MailboxStatus,
  MailReceived,
  MailSent,
  SendFailed,
  SessionAssigned,
  SessionOffered,
  type Names,
} from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import { onPublished, openKv, retryTransient, type NatsConnection } from "@postroom/nats-kit";
import type { Logger, SessionCount, Telemetry } from "@postroom/telemetry";

/**
 * Metrics derived from the events a service emits. Each event is a fact the metric counts (a
 * message fetched, archived, offered, sent), and `onPublished` reports each stored event once, so
 * a redelivery that republishes the same message id is not counted twice. Recognising an event
 * uses the contracts' schemas and subject builders only — no subject is spelled here.
 *
 * `pool` (asd-bridge) lets the time-to-offer and time-to-agent histograms look up when the email
 * arrived and when the session was offered: those times live in PostgreSQL, not in the events.
 */
export function recordEmittedEvents(options: { telemetry: Telemetry; names: Names; pool?: Pool | undefined; logger: Logger }): () => void {
  const { telemetry, names, pool, logger } = options;
  const m = telemetry.metrics;
  const lookup = async (sql: string, key: string): Promise<string | null> => {
    if (!pool) return null;
    const { rows } = await pool.query<{ at: Date | null }>(sql, [key]);
    return rows[0]?.at ? rows[0].at.toISOString() : null;
  };
  return onPublished((subject, payload) => {
    const s = names.subjects;
    const received = MailReceived.safeParse(payload);
    // Payload shapes overlap (an archived event carries the received event's fields), so the
    // subject decides; a schema match alone is not enough.
    if (received.success && subject === s.mailReceived(received.data.source.tenant, received.data.source.mailbox)) {
      m.messageFetched(received.data.source.tenant, received.data.source.mailbox, received.data.raw.size);
      return;
    }
    const archived = MailArchived.safeParse(payload);
    if (archived.success && subject === s.mailArchived(archived.data.tenant, archived.data.mailbox)) {
      m.messageArchived(archived.data.tenant, archived.data.mailbox);
      return;
    }
    const offered = SessionOffered.safeParse(payload);
    if (offered.success && subject === s.sessionOffered(offered.data.tenant, offered.data.mailbox)) {
      const o = offered.data;
      lookup("SELECT received_at AS at FROM messages WHERE message_key = $1", o.messageKey)
        .then((arrivedAt) => m.sessionOffered(o.tenant, o.queue, arrivedAt ?? o.offeredAt, new Date(o.offeredAt)))
        .catch((error: unknown) => logger.debug({ problem: (error as Error).message }, "arrival time not found for the offer metric"));
      return;
    }
    const assigned = SessionAssigned.safeParse(payload);
    if (assigned.success && subject === s.sessionAssigned(assigned.data.tenant, assigned.data.mailbox)) {
      const a = assigned.data;
      lookup("SELECT offered_at AS at FROM sessions WHERE id::text = $1", a.sessionId)
        .then((offeredAt) => m.sessionAssigned(a.tenant, a.queue, offeredAt ?? a.assignedAt, new Date(a.assignedAt)))
        .catch((error: unknown) => logger.debug({ problem: (error as Error).message }, "offer time not found for the agent metric"));
      return;
    }
    const sent = MailSent.safeParse(payload);
    if (sent.success && subject === s.mailSent(sent.data.tenant, sent.data.mailbox)) {
      m.sendFinished(sent.data.tenant, sent.data.mailbox, "sent");
      return;
    }
    const failed = SendFailed.safeParse(payload);
    if (failed.success && subject === s.mailSendFailed(failed.data.tenant, failed.data.mailbox)) {
      const f = failed.data;
      // The reply code is the bounded reason; the server's text is not a label.
      m.sendFinished(f.tenant, f.mailbox, f.permanent ? "failed" : "retried", f.responseCode !== null ? String(f.responseCode) : "no-code");
      return;
    }
    const alert = DiskAlert.safeParse(payload);
    if (alert.success && subject === s.diskAlert(alert.data.tenant, alert.data.mailbox)) {
      const a = alert.data;
      m.archiveUsage(a.tenant, { usedBytes: a.usedBytes, freeBytes: a.filesystemFreeBytes, quotaBytes: a.quotaBytes > 0 ? a.quotaBytes : null });
      if (a.level === "warning" || a.level === "critical") m.alertRaised(a.tenant, a.level);
    }
  });
}

/**
 * Feeds the mailbox health metrics (state, backlog, last success, last error) from the
 * mailbox-status bucket the pollers keep. Every replica of a tenant's poller reports the same
 * values, read from the same bucket; dashboards take `max by (tenant, mailbox)`.
 */
export async function watchMailboxStatus(options: { nc: NatsConnection; names: Names; telemetry: Telemetry; tenants?: string[] | undefined; replicas?: number }): Promise<{ stop(): void }> {
  const { names, telemetry } = options;
  const kv = await openKv(options.nc, names.buckets.mailboxStatus, { replicas: options.replicas ?? 1 });
  // The watch is an ordered consumer made by a JetStream request: with a cluster node down it can
  // time out like any other, and the poller exited at start on it in the chaos run.
  const watcher = await retryTransient(() => kv.watch());
  const lastErrorAt = new Map<string, string>();
  void (async () => {
    for await (const entry of watcher) {
      if (entry.operation !== "PUT") continue;
      const parsed = MailboxStatus.safeParse(entry.value.length ? entry.json() : null);
      if (!parsed.success) continue;
      const st = parsed.data;
      // The smtp-sender's entry for the same mailbox has its own key; only the poller's counts here.
      if (entry.key !== names.mailboxKey(st.tenant, st.mailbox)) continue;
      if (options.tenants && !options.tenants.includes(st.tenant)) continue;
      telemetry.metrics.mailboxStatus(st);
      if (st.lastError && lastErrorAt.get(entry.key) !== st.lastError.at) {
        // The first sighting after a start only sets the baseline: an old error is not a new one.
        if (lastErrorAt.has(entry.key) || Date.now() - Date.parse(st.lastError.at) < 60_000) {
          telemetry.metrics.mailboxError(st.tenant, st.mailbox, st.lastError.code ?? "unknown");
        }
        lastErrorAt.set(entry.key, st.lastError.at);
      }
    }
  })();
  return { stop: () => watcher.stop() };
}

/** Sessions by tenant, queue and state, counted by PostgreSQL at scrape time. */
export function sessionCounts(pool: Pool, tenant?: string): () => Promise<SessionCount[]> {
  return async () => {
    const { rows } = await pool.query<{ tenant: string; queue: string; state: string; count: string }>(
      `SELECT tenant, queue, state, count(*)::text AS count FROM sessions
        WHERE ($1::text IS NULL OR tenant = $1) GROUP BY tenant, queue, state`,
      [tenant ?? null],
    );
    return rows.map((r) => ({ tenant: r.tenant, queue: r.queue, state: r.state, count: Number(r.count) }));
  };
}
