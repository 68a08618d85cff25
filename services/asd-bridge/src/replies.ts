import { MailSent, SendFailed, type Names } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import { ack, DurableConsumer, type NatsConnection, type Verdict } from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import { checkSubject, type EventRefusal } from "./tenant-guard.js";

/** What became of one reply, as the agent sees it. */
export type ReplyState = "queued" | "held" | "sent" | "failed" | "bounced";

/** One reply, reply-all or forward an agent asked for, with its outcome (agent API `replies`). */
export interface ReplyView {
  commandId: string;
  kind: "reply" | "reply-all" | "forward";
  to: string[];
  cc: string[];
  text: string;
  state: ReplyState;
  requestedAt: string;
  updatedAt: string;
  /** The server's own words (sent: its 250 line; failed: its refusal), when there was a server answer. */
  serverResponse: string | null;
  responseCode: number | null;
  /** Why it failed or is held, in smtp-sender's words (may name a fix). */
  reason: string | null;
  /** What the agent can do about it; null when nothing is needed. */
  whatToDo: string | null;
  /** Recipients the server refused while it took the others. */
  refused: { recipient: string; response: string }[];
  /** For a bounced reply: the delivery report's status and diagnostic. */
  bounce: { status: string | null; diagnostic: string | null; at: string } | null;
}

interface Row {
  command_id: string;
  kind: ReplyView["kind"];
  to_addresses: string[];
  cc_addresses: string[];
  body_text: string;
  state: Exclude<ReplyState, "bounced">;
  server_response: string | null;
  response_code: number | null;
  reason: string | null;
  refused: { recipient: string; response: string }[];
  requested_at: Date;
  updated_at: Date;
  bounce_status: string | null;
  bounce_diagnostic: string | null;
  bounced_at: Date | null;
}

/**
 * What an agent can do about a reply that did not (fully) go out: a pure function of the SMTP
 * facts smtp-sender reported. Enhanced status codes (RFC 3463) first, as they say more than the
 * basic code; the wording is for an agent, not an administrator.
 */
export function whatToDo(r: { state: ReplyState; responseCode: number | null; serverResponse: string | null; reason: string | null; refused: unknown[] }): string | null {
  const text = `${r.serverResponse ?? ""} ${r.reason ?? ""}`;
  const enhanced = /\b([245])\.(\d{1,3})\.(\d{1,3})\b/.exec(text);
  const code = enhanced ? `${enhanced[2]}.${enhanced[3]}` : "";
  if (r.state === "sent") return r.refused.length ? "Some recipients did not get it: check their addresses, then send to them again with Edit." : null;
  if (r.state === "queued") return null;
  if (r.state === "held") return "Held until an administrator fixes the mailbox's sending; it goes out by itself afterwards. Nothing to do here.";
  if (r.state === "bounced") return "The customer's server returned it later: check the address with the customer (or use another one), then Edit and send again.";
  if (code === "1.1" || code === "1.2" || code === "1.3" || code === "1.10") return "The address does not exist: check it with the customer, correct it with Edit and send again.";
  if (code === "2.2" || code === "2.1") return "The recipient's mailbox is full or disabled: try again later (Retry), or reach the customer another way.";
  if (code === "3.4" || code === "2.3") return "The message is too large for the receiving server: remove attachments or shorten it, then send again.";
  if (code.startsWith("7.")) return "The server refused it by policy (spam or sender rules): ask an administrator before retrying.";
  if (/header injection|not a valid e-mail address|no recipients/.test(text)) return "Correct the recipients or subject with Edit and send again.";
  if (r.responseCode !== null && r.responseCode >= 400 && r.responseCode < 500) return "The server was temporarily unavailable for too long: Retry.";
  return "Retry, or Edit and send again; if it fails the same way, ask an administrator.";
}

/**
 * asd-bridge's side of agent replies: records each one it hands to smtp-sender (`queued`), and
 * follows `mail.sent` / `mail.send-failed` to `sent`, `held` or `failed`. Idempotent: each event
 * is an UPDATE keyed by the command id whose WHERE clause only moves a reply forward (queued →
 * held → sent | failed; sent and failed are final), so a redelivered or late event changes
 * nothing. Events of commands that are not agent replies (alerts, tests) find no row and are
 * acknowledged. "Bounced" is not stored: it is read from the archive, where a delivery report
 * names the reply it reports on (`messages.bounce_of`, from the classifier).
 */
export class ReplyTracker {
  #sent: DurableConsumer<MailSent> | undefined;
  #failed: DurableConsumer<SendFailed> | undefined;

  constructor(
    private readonly o: {
      nc: NatsConnection;
      names: Names;
      pool: Pool;
      logger: Logger;
      tenant?: string;
      /** A result event the tenant guard refused (the bridge logs and counts it). */
      onRefused?: (r: EventRefusal, subject: string, e: { tenant: string; mailbox: string }) => void;
    },
  ) {}

  async start(): Promise<void> {
    const { nc, names, tenant } = this.o;
    const problem = (p: { subject: string; reason: string; error?: unknown }) => this.o.logger.warn({ subject: p.subject, reason: p.reason, ...(p.error ? errorFields(p.error) : {}) }, "send result not recorded yet");
    this.#sent = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.asdBridgeSent(tenant),
      filterSubject: names.subjects.wildcard.mailSent(tenant),
      schema: MailSent,
      handler: (e, msg) => this.#guarded(names.subjects.mailSent, msg.subject, e, () => this.#onSent(e)),
      maxAckPending: 16,
      onProblem: problem,
    });
    this.#failed = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.asdBridgeSendFailed(tenant),
      filterSubject: names.subjects.wildcard.mailSendFailed(tenant),
      schema: SendFailed,
      handler: (e, msg) => this.#guarded(names.subjects.mailSendFailed, msg.subject, e, () => this.#onFailed(e)),
      maxAckPending: 16,
      onProblem: problem,
    });
    await this.#sent.start();
    await this.#failed.start();
  }

  async stop(): Promise<void> {
    await this.#sent?.stop();
    await this.#failed?.stop();
  }

  /** Records a reply before its command is published, so no result can arrive for an unknown reply. */
  async queued(r: { commandId: string; tenant: string; mailbox: string; sessionId: string; agent: string; kind: ReplyView["kind"]; to: string[]; cc: string[]; text: string }): Promise<void> {
    await this.o.pool.query(
      `INSERT INTO agent_replies (command_id, tenant, mailbox, session_id, agent, kind, to_addresses, cc_addresses, body_text)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (command_id) DO NOTHING`,
      [r.commandId, r.tenant, r.mailbox, r.sessionId, r.agent, r.kind, r.to, r.cc, r.text],
    );
  }

  /**
   * A result only for the mailbox its subject names (as smtp-sender checks commands): one tenant's
   * publisher must not mark another tenant's reply sent or failed. The UPDATEs below also carry
   * tenant and mailbox, so a command id of another mailbox finds no row.
   */
  async #guarded(build: (tenant: string, mailbox: string) => string, subject: string, e: { tenant: string; mailbox: string }, handle: () => Promise<Verdict>): Promise<Verdict> {
    const refusal = checkSubject(build, subject, e);
    if (!refusal) return handle();
    this.o.onRefused?.(refusal, subject, e);
    return { action: "term", reason: refusal.detail };
  }

  async #onSent(e: MailSent): Promise<Verdict> {
    await this.o.pool.query(
      `UPDATE agent_replies SET state = 'sent', rfc_message_id = $2, server_response = $3, refused = $4, reason = NULL, updated_at = now()
       WHERE command_id = $1 AND tenant = $5 AND mailbox = $6 AND state IN ('queued', 'held')`,
      [e.commandId, e.rfcMessageId, e.serverResponse, JSON.stringify(e.refused ?? []), e.tenant, e.mailbox],
    );
    return ack;
  }

  async #onFailed(e: SendFailed): Promise<Verdict> {
    // permanent: false is "held for an administrator"; it must not undo a later "sent".
    const state = e.permanent ? "failed" : "held";
    await this.o.pool.query(
      `UPDATE agent_replies SET state = $2, server_response = $3, response_code = $4, reason = $5, updated_at = now()
       WHERE command_id = $1 AND tenant = $6 AND mailbox = $7 AND (state = 'queued' OR (state = 'held' AND $2 = 'failed'))`,
      [e.commandId, state, e.serverResponse, e.responseCode, e.reason, e.tenant, e.mailbox],
    );
    return ack;
  }

  /**
   * A session's replies, oldest first, each with its state. A sent reply that a delivery report
   * in the same mailbox names (`bounce_of` = its Message-ID) shows as bounced.
   */
  async ofSession(sessionId: string): Promise<ReplyView[]> {
    const r = await this.o.pool.query<Row>(
      `SELECT r.command_id, r.kind, r.to_addresses, r.cc_addresses, r.body_text, r.state, r.server_response, r.response_code, r.reason, r.refused,
              r.requested_at, r.updated_at, b.bounce_status, b.bounce_diagnostic, b.received_at AS bounced_at
       FROM agent_replies r
       LEFT JOIN LATERAL (
         SELECT m.bounce_status, m.bounce_diagnostic, m.received_at FROM messages m
         WHERE r.rfc_message_id IS NOT NULL AND m.tenant = r.tenant AND m.mailbox = r.mailbox AND m.bounce_of = r.rfc_message_id
         ORDER BY m.id LIMIT 1) b ON true
       WHERE r.session_id = $1 ORDER BY r.requested_at, r.command_id`,
      [sessionId],
    );
    return r.rows.map((row) => {
      const state: ReplyState = row.state === "sent" && row.bounced_at ? "bounced" : row.state;
      const view = {
        commandId: row.command_id,
        kind: row.kind,
        to: row.to_addresses,
        cc: row.cc_addresses,
        text: row.body_text,
        state,
        requestedAt: row.requested_at.toISOString(),
        updatedAt: row.updated_at.toISOString(),
        serverResponse: row.server_response,
        responseCode: row.response_code,
        reason: row.reason,
        refused: row.refused,
        bounce: row.bounced_at ? { status: row.bounce_status, diagnostic: row.bounce_diagnostic, at: row.bounced_at.toISOString() } : null,
      };
      return { ...view, whatToDo: whatToDo(view) };
    });
  }
}
