import type { Classification } from "@postroom/contracts";
import type { Pool } from "@postroom/db";

export interface AttachmentRow {
  partIndex: number;
  originalName: string | null;
  storedName: string;
  contentType: string;
  contentId: string | null;
  inline: boolean;
  size: number;
  sha256: string;
}

export interface MessageRow {
  messageKey: string;
  tenant: string;
  mailbox: string;
  direction: "inbound" | "outbound";
  protocol: "imap" | "pop3" | "smtp" | "graph";
  folder: string | null;
  uidValidity: number | null;
  uid: number | null;
  uidl: string | null;
  rfcMessageId: string;
  inReplyTo: string | null;
  references: string[];
  subject: string;
  from: { address: string; name: string | null } | null;
  to: { address: string; name: string | null }[];
  cc: { address: string; name: string | null }[];
  bcc: { address: string; name: string | null }[];
  /** Stored with role 'reply-to'; replies go there first (absent on rows Postroom composed itself). */
  replyTo?: { address: string; name: string | null }[];
  dateHeader: Date | null;
  receivedAt: Date;
  size: number;
  sha256: string;
  archivePath: string;
  headers: [string, string][];
  textBody: string | null;
  htmlBody: string | null;
  classification: Classification;
  classificationReason: string | null;
  /** The Date header as sent; `dateHeader` is null when it could not be read. */
  dateRaw: string | null;
  /** For a delivery status notification: the Message-ID, status and diagnostic of what bounced. */
  bounce: { of: string | null; status: string | null; diagnostic: string | null } | null;
  oversize: boolean;
  parseError: string | null;
  offer: boolean;
  attachments: AttachmentRow[];
}

export interface StoredMessage {
  id: string;
  conversationId: string;
  archivePath: string;
  rfcMessageId: string;
  /** false when the row was already there (a redelivery). */
  inserted: boolean;
  /** Whether the row says to offer it (false for history imports and what the loop breaker held back). */
  offer: boolean;
  classification: Classification;
  classificationReason: string | null;
  /** Set when this insert tripped the loop breaker. */
  loopBreaker?: { messages: number; alert: boolean };
}

/** More than `maxMessages` from one sender to one mailbox within `windowMs` are not offered. */
export interface LoopBreakerLimit {
  maxMessages: number;
  windowMs: number;
  /**
   * The message's verdict keeps it from agents anyway (an auto-reply, a bounce): it still counts
   * and can raise the alert, but keeps its classification and reason instead of becoming "loop".
   */
  keepVerdict?: boolean;
}

/** The columns of a stored message that the archiver reports back, as PostgreSQL returns them. */
export type StoredRow = { id: string; conversation_id: string; archive_path: string; rfc_message_id: string; offer: boolean; classification: Classification; classification_reason: string | null };
export const STORED_COLUMNS = "id, conversation_id, archive_path, rfc_message_id, offer, classification, classification_reason";
/** A stored row as the archiver reports it; `inserted` says whether this delivery wrote it. */
export function stored(row: StoredRow, inserted: boolean): StoredMessage {
  return {
    id: row.id,
    conversationId: row.conversation_id,
    archivePath: row.archive_path,
    rfcMessageId: row.rfc_message_id,
    inserted,
    offer: row.offer,
    classification: row.classification,
    classificationReason: row.classification_reason,
  };
}

/** Reads and writes the history tables for the archiver. */
export class HistoryStore {
  constructor(private readonly pool: Pool) {}

  async find(messageKey: string): Promise<StoredMessage | undefined> {
    const r = await this.pool.query<StoredRow>(`SELECT ${STORED_COLUMNS} FROM messages WHERE message_key = $1`, [messageKey]);
    const row = r.rows[0];
    return row ? stored(row, false) : undefined;
  }

  /**
   * Inserts the message with its addresses and attachments in one transaction, joining the
   * conversation of any stored message (inbound or outbound, same mailbox) that its In-Reply-To
   * or References names — and taking in the conversations of messages archived before it that
   * name it (a reply that arrived first). A concurrent insert of the same key leaves the first
   * one standing. A delivery status notification joins the conversation of the message it
   * reports on.
   *
   * With `loopBreaker`, an inbound message from a sender who already has `maxMessages` messages in
   * this mailbox received within the window of its own receive time (before or after: replicas and
   * backlogs insert out of order, and counting only earlier ones would let such a burst through)
   * is stored with offer = false and
   * (unless `keepVerdict`) classification "loop". The count runs in this transaction under a lock on (mailbox, sender),
   * so replicas archiving the same sender's mail at once count each other's rows exactly.
   */
  async insert(m: MessageRow, loopBreaker?: LoopBreakerLimit): Promise<StoredMessage> {
    const client = await this.pool.connect();
    // A checked-out client whose server goes away emits "error"; the pool listens only to idle
    // clients, so without this the process would die on a database restart. The query in
    // flight rejects all the same, and the caller waits for the database to return.
    const ignore = () => undefined;
    client.on("error", ignore);
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      // Serialise inserts of one message key so conversation creation cannot race itself.
      await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [m.messageKey]);
      const existing = await client.query<StoredRow>(`SELECT ${STORED_COLUMNS} FROM messages WHERE message_key = $1`, [m.messageKey]);
      if (existing.rows[0]) {
        await client.query("COMMIT");
        return stored(existing.rows[0], false);
      }
      let { offer, classification, classificationReason } = m;
      let tripped: StoredMessage["loopBreaker"];
      const sender = m.from?.address ?? "";
      if (loopBreaker && m.direction === "inbound" && sender !== "") {
        await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`loop-breaker/${m.tenant}/${m.mailbox}/${sender}`]);
        const windowStart = new Date(m.receivedAt.getTime() - loopBreaker.windowMs);
        const recent = await client.query<{ n: string }>(
          `SELECT count(*) AS n FROM messages
           WHERE tenant = $1 AND mailbox = $2 AND from_address = $3 AND direction = 'inbound' AND received_at > $4 AND received_at < $5`,
          [m.tenant, m.mailbox, sender, windowStart, new Date(m.receivedAt.getTime() + loopBreaker.windowMs)],
        );
        const messages = Number(recent.rows[0]!.n) + 1;
        if (messages > loopBreaker.maxMessages) {
          const minutes = loopBreaker.windowMs / 60_000;
          const was = m.classification === "human" ? "" : ` (classified ${m.classification}: ${m.classificationReason ?? "no reason"})`;
          offer = false;
          if (!loopBreaker.keepVerdict) classification = "loop";
          if (!loopBreaker.keepVerdict) classificationReason = `loop breaker: ${messages} messages from ${sender} within ${minutes} minutes (limit ${loopBreaker.maxMessages})${was}`;
          // One alert per episode: a new one only when the breaker has not held back this sender's
          // mail for a whole window.
          const prior = await client.query<{ last_tripped_at: Date }>(
            "SELECT last_tripped_at FROM loop_breaker WHERE tenant = $1 AND mailbox = $2 AND sender = $3",
            [m.tenant, m.mailbox, sender],
          );
          const last = prior.rows[0]?.last_tripped_at;
          const alert = last === undefined || last.getTime() < windowStart.getTime();
          await client.query(
            `INSERT INTO loop_breaker (tenant, mailbox, sender, alerted_at, last_tripped_at) VALUES ($1, $2, $3, now(), $4)
             ON CONFLICT (tenant, mailbox, sender) DO UPDATE SET
               last_tripped_at = GREATEST(loop_breaker.last_tripped_at, EXCLUDED.last_tripped_at),
               alerted_at = CASE WHEN $5 THEN now() ELSE loop_breaker.alerted_at END,
               tripped = loop_breaker.tripped + 1`,
            [m.tenant, m.mailbox, sender, m.receivedAt, alert],
          );
          tripped = { messages, alert };
        }
      }
      const related = [m.inReplyTo, ...m.references, m.bounce?.of].filter((x): x is string => !!x);
      let conversationId: string | undefined;
      if (related.length > 0) {
        const r = await client.query<{ conversation_id: string }>(
          "SELECT conversation_id FROM messages WHERE tenant = $1 AND mailbox = $2 AND rfc_message_id = ANY($3) ORDER BY id LIMIT 1",
          [m.tenant, m.mailbox, related],
        );
        conversationId = r.rows[0]?.conversation_id;
      }
      if (!conversationId) {
        const r = await client.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox, subject, started_at) VALUES ($1, $2, $3, $4) RETURNING id", [
          m.tenant,
          m.mailbox,
          m.subject,
          m.receivedAt,
        ]);
        conversationId = r.rows[0]!.id;
      }
      const inserted = await client.query<{ id: string }>(
        `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, folder, uid_validity, uid, uidl, rfc_message_id,
           in_reply_to, "references", subject, from_address, date_header, received_at, size, sha256, archive_path, headers,
           text_body, html_body, is_auto_reply, is_bounce, is_loop, oversize, parse_error, offer, conversation_id,
           classification, classification_reason, date_raw, bounce_of, bounce_status, bounce_diagnostic)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26,$27,$28,$29,
           $30,$31,$32,$33,$34,$35)
         RETURNING id`,
        [
          m.messageKey, m.tenant, m.mailbox, m.direction, m.protocol, m.folder, m.uidValidity, m.uid, m.uidl, m.rfcMessageId,
          m.inReplyTo, m.references, m.subject, m.from?.address ?? "", m.dateHeader, m.receivedAt, m.size, m.sha256, m.archivePath,
          JSON.stringify(m.headers), m.textBody, m.htmlBody, classification === "auto-reply", classification === "bounce", classification === "loop", m.oversize, m.parseError,
          offer, conversationId,
          classification, classificationReason, m.dateRaw, m.bounce?.of ?? null, m.bounce?.status ?? null, m.bounce?.diagnostic ?? null,
        ],
      );
      const id = inserted.rows[0]!.id;
      const addresses: [string, { address: string; name: string | null }][] = [
        ...(m.from ? [["from", m.from] as [string, { address: string; name: string | null }]] : []),
        ...m.to.map((a) => ["to", a] as [string, typeof a]),
        ...m.cc.map((a) => ["cc", a] as [string, typeof a]),
        ...m.bcc.map((a) => ["bcc", a] as [string, typeof a]),
        ...(m.replyTo ?? []).map((a) => ["reply-to", a] as [string, typeof a]),
      ];
      // One statement per table, however many addresses and parts: each round trip counts at burst rates.
      if (addresses.length > 0) {
        await client.query(
          "INSERT INTO addresses (message_id, role, address, name) SELECT $1::bigint, * FROM unnest($2::text[], $3::text[], $4::text[])",
          [id, addresses.map(([role]) => role), addresses.map(([, a]) => a.address), addresses.map(([, a]) => a.name)],
        );
      }
      if (m.attachments.length > 0) {
        const col = <K extends keyof AttachmentRow>(k: K) => m.attachments.map((a) => a[k]);
        await client.query(
          `INSERT INTO attachments (message_id, part_index, original_name, stored_name, content_type, content_id, inline, size, sha256)
           SELECT $1::bigint, * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::bigint[], $9::text[])`,
          [id, col("partIndex"), col("originalName"), col("storedName"), col("contentType"), col("contentId"), col("inline"), col("size"), col("sha256")],
        );
      }
      // Messages archived earlier that answer this one (they arrived first) join this conversation,
      // with everything already threaded to them.
      const early = await client.query<{ conversation_id: string }>(
        `SELECT DISTINCT conversation_id FROM messages
         WHERE tenant = $1 AND mailbox = $2 AND conversation_id <> $4 AND (in_reply_to = $3 OR "references" @> ARRAY[$3])`,
        [m.tenant, m.mailbox, m.rfcMessageId, conversationId],
      );
      if (early.rows.length > 0) {
        await client.query("UPDATE messages SET conversation_id = $1 WHERE conversation_id = ANY($2::bigint[])", [conversationId, early.rows.map((r) => r.conversation_id)]);
      }
      await client.query("INSERT INTO audit_events (tenant, mailbox, actor, kind, ref) VALUES ($1, $2, 'archiver', $3, $4)", [
        m.tenant,
        m.mailbox,
        m.direction === "inbound" ? "message.archived" : "reply.archived",
        m.messageKey,
      ]);
      await client.query("COMMIT");
      return { id, conversationId, archivePath: m.archivePath, rfcMessageId: m.rfcMessageId, inserted: true, offer, classification, classificationReason, ...(tripped ? { loopBreaker: tripped } : {}) };
    } catch (error) {
      // A client whose ROLLBACK fails is broken (its server went away): destroy it rather than
      // hand it to the next caller.
      if (await client.query("ROLLBACK").then(() => false, () => true)) broken = error as Error;
      throw error;
    } finally {
      client.off("error", ignore);
      client.release(broken);
    }
  }
}
