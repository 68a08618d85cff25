import { randomUUID } from "node:crypto";
import type { Pool } from "@postroom/db";

export interface SessionRow {
  id: string;
  state: string;
  queue: string;
  created: boolean;
}

/** Session lifecycle in PostgreSQL. A message has at most one session, whatever is redelivered. */
export class SessionStore {
  constructor(private readonly pool: Pool) {}

  /** Creates the session for a message, or returns the one that exists. */
  async createOrGet(input: {
    tenant: string;
    mailbox: string;
    messageId: string;
    queue: string;
    acd: string;
    warnings: string[];
    /** The email's trace context, kept so the agent's reply continues the same trace. */
    traceparent?: string;
  }): Promise<SessionRow> {
    const id = randomUUID();
    // One statement (the session and its first history row, atomically), not BEGIN, two INSERTs
    // and COMMIT: four round trips on the path of every offer became one.
    const r = await this.pool.query<{ id: string }>(
      `WITH s AS (
         INSERT INTO sessions (id, tenant, mailbox, message_id, queue, acd, state, warnings, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, 'created', $7, $8) ON CONFLICT (message_id) DO NOTHING RETURNING id)
       INSERT INTO session_events (session_id, state) SELECT id, 'created' FROM s RETURNING session_id AS id`,
      [id, input.tenant, input.mailbox, input.messageId, input.queue, input.acd, input.warnings, input.traceparent ?? null],
    );
    if (r.rows[0]) return { id, state: "created", queue: input.queue, created: true };
    const existing = await this.pool.query<{ id: string; state: string; queue: string }>("SELECT id, state, queue FROM sessions WHERE message_id = $1", [input.messageId]);
    const row = existing.rows[0]!;
    return { ...row, created: false };
  }

  /**
   * Moves a session to a new state and records it in the history. `agent: null` clears the
   * holder (back to a queue); leaving it out keeps it. `queue` moves it (overflow, transfer),
   * `acd` hands it to another ACD (the unanswered policy's fallback to the built-in distributor).
   * A completed, failed or closed session stays so: a late event from an ACD does not reopen it.
   * Once an agent has it (assigned, delivered, completed) the email is no longer unanswered.
   */
  async transition(id: string, state: SessionState, detail: Record<string, unknown> = {}, extra: { agent?: string | null; outcome?: string; queue?: string; acd?: string } = {}): Promise<boolean> {
    const r = await this.pool.query(
      `WITH s AS (
         UPDATE sessions SET state = $2, updated_at = now(),
           offered_at = CASE WHEN $2 = 'offered' THEN now() ELSE offered_at END,
           agent = CASE WHEN $6 THEN $4 ELSE agent END, outcome = COALESCE($5, outcome), queue = COALESCE($7, queue),
           acd = COALESCE($8, acd),
           unanswered_at = CASE WHEN $2 IN ('assigned', 'delivered', 'completed') THEN NULL ELSE unanswered_at END,
           requeue_at = NULL
         WHERE id = $1 AND state NOT IN (${FINAL}) RETURNING id)
       INSERT INTO session_events (session_id, state, detail) SELECT id, $2, $3 FROM s`,
      [id, state, JSON.stringify(detail), extra.agent ?? null, extra.outcome ?? null, "agent" in extra, extra.queue ?? null, extra.acd ?? null],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /**
   * Records that session.offered is being published for this session; false if it was before
   * (a re-offer after a reconnect or restart must not announce it again).
   */
  async markAnnounced(id: string): Promise<boolean> {
    const r = await this.pool.query("UPDATE sessions SET announced_at = now() WHERE id = $1 AND announced_at IS NULL", [id]);
    return (r.rowCount ?? 0) > 0;
  }

  /**
   * Records that the ACD let the session go without an agent: state `unanswered` (waiting for
   * `requeueAt`, or for the fallback queue) or `closed` (the close policy: final, outcome
   * "unanswered"). `unanswered_at` keeps the first time, so a requeued email's age keeps growing.
   * Returns false when the session had already ended (nothing to do).
   */
  async markUnanswered(id: string, input: { state: "unanswered" | "closed"; reason: string; policy: string; requeueAt: Date | null; detail?: Record<string, unknown> }): Promise<boolean> {
    const r = await this.pool.query(
      `WITH s AS (
         UPDATE sessions SET state = $2, updated_at = now(), agent = NULL,
           unanswered_at = COALESCE(unanswered_at, now()), unanswered_reason = $3, requeue_at = $4,
           outcome = CASE WHEN $2 = 'closed' THEN 'unanswered' ELSE outcome END
         WHERE id = $1 AND state NOT IN (${FINAL}) RETURNING id)
       INSERT INTO session_events (session_id, state, detail) SELECT id, $2, $5 FROM s`,
      [id, input.state, input.reason, input.requeueAt, JSON.stringify({ reason: input.reason, policy: input.policy, ...(input.requeueAt ? { requeueAt: input.requeueAt.toISOString() } : {}), ...input.detail })],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /**
   * Which offer of this email to its ACD this is: 1 at first, one more after each time the ACD let
   * it go unanswered and the policy requeued it. Restarts and retries of one offer keep the number.
   */
  async offerNumber(id: string): Promise<number> {
    const r = await this.pool.query<{ n: number }>("SELECT 1 + count(*)::int AS n FROM session_events WHERE session_id = $1 AND state = 'unanswered'", [id]);
    return r.rows[0]?.n ?? 1;
  }

  /** Unanswered emails of a tenant not yet ended: how many, and since when the oldest waits. */
  async unansweredSummary(tenant: string): Promise<{ count: number; oldestAt: Date | null }> {
    const r = await this.pool.query<{ count: string; oldest: Date | null }>(
      `SELECT count(*)::text AS count, min(unanswered_at) AS oldest FROM sessions
       WHERE tenant = $1 AND unanswered_at IS NOT NULL AND state NOT IN (${FINAL})`,
      [tenant],
    );
    return { count: Number(r.rows[0]?.count ?? 0), oldestAt: r.rows[0]?.oldest ?? null };
  }

  /** Sessions an ACD still has to hear about after a restart (not final, already released once). */
  async unfinished(tenant: string): Promise<{ id: string; mailbox: string; queue: string; state: string; acd: string; agent: string | null; offered_at: Date | null; announced_at: Date | null; requeue_at: Date | null }[]> {
    const r = await this.pool.query<{ id: string; mailbox: string; queue: string; state: string; acd: string; agent: string | null; offered_at: Date | null; announced_at: Date | null; requeue_at: Date | null }>(
      `SELECT id, mailbox, queue, state, acd, agent, offered_at, announced_at, requeue_at FROM sessions
       WHERE tenant = $1 AND state NOT IN ('created', ${FINAL}) ORDER BY offered_at, created_at`,
      [tenant],
    );
    return r.rows;
  }

  /** The state history of a session, oldest first. */
  async history(id: string): Promise<{ state: string; at: Date; detail: Record<string, unknown> }[]> {
    const r = await this.pool.query<{ state: string; at: Date; detail: Record<string, unknown> }>("SELECT state, at, detail FROM session_events WHERE session_id = $1 ORDER BY id", [id]);
    return r.rows;
  }

  /**
   * One session with its email, only if it belongs to this tenant (and agent, when given): the
   * API's tenant boundary is this WHERE clause, so a foreign id reads exactly like a missing one.
   */
  async forAgent(tenant: string, id: string, agent?: string): Promise<SessionDetail | undefined> {
    if (!UUID.test(id)) return undefined;
    const r = await this.pool.query<SessionDetail>(
      `SELECT s.id, s.tenant, s.mailbox, s.queue, s.state, s.agent, s.outcome, s.warnings, s.created_at, s.offered_at,
              m.id AS message_row, m.message_key, m.subject, m.from_address, m.date_header, m.received_at, m.text_body, m.html_body,
              m.archive_path, m.rfc_message_id, m.parse_error, m.classification, m.classification_reason, m.date_raw
       FROM sessions s JOIN messages m ON m.id = s.message_id
       WHERE s.id = $1 AND s.tenant = $2 AND ($3::text IS NULL OR s.agent = $3)`,
      [id, tenant, agent ?? null],
    );
    return r.rows[0];
  }

  async addresses(messageRow: string): Promise<{ role: string; address: string; name: string | null }[]> {
    const r = await this.pool.query<{ role: string; address: string; name: string | null }>("SELECT role, address, name FROM addresses WHERE message_id = $1", [messageRow]);
    return r.rows;
  }

  async attachments(messageRow: string): Promise<{ part_index: number; original_name: string | null; stored_name: string; content_type: string; size: string; inline: boolean; content_id: string | null }[]> {
    const r = await this.pool.query<{ part_index: number; original_name: string | null; stored_name: string; content_type: string; size: string; inline: boolean; content_id: string | null }>(
      "SELECT part_index, original_name, stored_name, content_type, size, inline, content_id FROM attachments WHERE message_id = $1 ORDER BY part_index",
      [messageRow],
    );
    return r.rows;
  }

  /** Sessions an agent holds, newest first. */
  async ofAgent(tenant: string, agent: string): Promise<{ id: string; mailbox: string; queue: string; state: string; subject: string; from_address: string; offered_at: Date | null }[]> {
    const r = await this.pool.query<{ id: string; mailbox: string; queue: string; state: string; subject: string; from_address: string; offered_at: Date | null }>(
      `SELECT s.id, s.mailbox, s.queue, s.state, m.subject, m.from_address, s.offered_at FROM sessions s JOIN messages m ON m.id = s.message_id
       WHERE s.tenant = $1 AND s.agent = $2 AND s.state IN ('assigned', 'delivered') ORDER BY s.offered_at DESC`,
      [tenant, agent],
    );
    return r.rows;
  }

  /** The trace context stored with a session, if any. */
  async traceparent(sessionId: string): Promise<string | undefined> {
    const r = await this.pool.query<{ traceparent: string | null }>("SELECT traceparent FROM sessions WHERE id = $1", [sessionId]);
    return r.rows[0]?.traceparent ?? undefined;
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The lifecycle states a session passes through; each change is a row in session_events.
 * `unanswered`: the ACD let it go without an agent and the policy will offer it again;
 * `closed`: ended without an agent by the close policy. Neither is ever `completed`.
 */
export type SessionState = "created" | "offered" | "queued" | "assigned" | "delivered" | "transferred" | "completed" | "timed-out" | "unanswered" | "closed" | "failed";

/** States a session never leaves (SQL list). */
const FINAL = "'completed', 'failed', 'closed'";

export interface SessionDetail {
  id: string;
  tenant: string;
  mailbox: string;
  queue: string;
  state: string;
  agent: string | null;
  outcome: string | null;
  warnings: string[];
  created_at: Date;
  offered_at: Date | null;
  message_row: string;
  message_key: string;
  subject: string;
  from_address: string;
  date_header: Date | null;
  received_at: Date;
  text_body: string | null;
  html_body: string | null;
  archive_path: string;
  rfc_message_id: string;
  parse_error: string | null;
  /** The archiver's verdict: human, auto-reply, bounce, bulk or loop. */
  classification: string;
  classification_reason: string | null;
  /** The Date header as sent (null when absent); date_header is null when it could not be read. */
  date_raw: string | null;
}
