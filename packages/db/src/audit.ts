import type { Pool } from "./pool.js";

/** Who acted: an agent or supervisor through the agent API, an operator (config reload, sign-in of a mailbox), or a service on its own. */
export type AuditActorKind = "agent" | "supervisor" | "operator" | "service";

/**
 * The actions people take, as `audit_events.kind`. Services' own events (`message.archived`,
 * `message.purged`, ...) share the table and are written by their services directly.
 */
export type AuditAction =
  | "agent.login"
  | "agent.login-refused"
  | "agent.login-locked"
  | "agent.logout"
  | "agent.logout-everywhere"
  | "queue.login"
  | "queue.logout"
  | "session.open"
  | "session.accept"
  | "session.attachment"
  | "session.reply"
  | "session.reply-all"
  | "session.forward"
  | "session.transfer"
  | "session.close"
  | "supervisor.audit"
  | "config.reload"
  | "mailbox.sign-in";

/** One row to append. */
export interface AuditEntry {
  tenant: string;
  actorKind: AuditActorKind;
  /** The agent id, or the operator / service that acted. */
  actor: string;
  kind: AuditAction;
  mailbox?: string | null;
  sessionId?: string | null;
  /** The message key the action was about, when there is one. */
  ref?: string | null;
  commandId?: string | null;
  /** The client's address as the API saw it (the socket's peer). */
  clientAddress?: string | null;
  /** What else says what happened (recipients, outcome, target, why refused); never a secret. */
  detail?: Record<string, unknown>;
}

/** One row as read back. */
export interface AuditRow {
  id: string;
  at: Date;
  tenant: string;
  actorKind: AuditActorKind;
  actor: string;
  kind: string;
  mailbox: string | null;
  sessionId: string | null;
  ref: string | null;
  commandId: string | null;
  clientAddress: string | null;
  detail: Record<string, unknown>;
}

/** What to read: always one tenant. */
export interface AuditQuery {
  tenant: string;
  /** Only rows at or after this time. */
  since?: Date;
  /** Only rows before this time. */
  until?: Date;
  /** Only this actor (agent id). */
  actor?: string;
  /** Only kinds starting with this (e.g. "session." or "agent.login"). */
  kindPrefix?: string;
  /** Also the services' own events (message.archived, ...); by default only people's actions. */
  includeService?: boolean;
  /** Newest rows first, at most this many (default 500, at most 10,000). */
  limit?: number;
}

/** Appends one audit row. The table refuses UPDATE, DELETE and TRUNCATE (migration 40). */
export async function recordAudit(pool: Pick<Pool, "query">, e: AuditEntry): Promise<void> {
  await pool.query(
    `INSERT INTO audit_events (tenant, mailbox, actor_kind, actor, kind, ref, session_id, command_id, client_address, detail)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [e.tenant, e.mailbox ?? null, e.actorKind, e.actor, e.kind, e.ref ?? null, e.sessionId ?? null, e.commandId ?? null, e.clientAddress ?? null, JSON.stringify(e.detail ?? {})],
  );
}

/** A tenant's audit rows, newest first. The tenant is part of every query: no call reads across tenants. */
export async function queryAudit(pool: Pick<Pool, "query">, q: AuditQuery): Promise<AuditRow[]> {
  const limit = Math.min(Math.max(1, Math.trunc(q.limit ?? 500)), 10_000);
  const r = await pool.query<{
    id: string;
    at: Date;
    tenant: string;
    actor_kind: AuditActorKind;
    actor: string;
    kind: string;
    mailbox: string | null;
    session_id: string | null;
    ref: string | null;
    command_id: string | null;
    client_address: string | null;
    detail: Record<string, unknown>;
  }>(
    `SELECT id::text, at, tenant, actor_kind, actor, kind, mailbox, session_id, ref, command_id, client_address, detail
     FROM audit_events
     WHERE tenant = $1
       AND ($2::timestamptz IS NULL OR at >= $2)
       AND ($3::timestamptz IS NULL OR at < $3)
       AND ($4::text IS NULL OR actor = $4)
       AND ($5::text IS NULL OR starts_with(kind, $5))
       AND ($6 OR actor_kind <> 'service')
     ORDER BY at DESC, id DESC
     LIMIT $7`,
    [q.tenant, q.since ?? null, q.until ?? null, q.actor ?? null, q.kindPrefix ?? null, q.includeService ?? false, limit],
  );
  return r.rows.map((row) => ({
    id: row.id,
    at: row.at,
    tenant: row.tenant,
    actorKind: row.actor_kind,
    actor: row.actor,
    kind: row.kind,
    mailbox: row.mailbox,
    sessionId: row.session_id,
    ref: row.ref,
    commandId: row.command_id,
    clientAddress: row.client_address,
    detail: row.detail,
  }));
}
