import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { findMailbox, type Mailbox, type PostroomConfig } from "@postroom/config";
import { LOOP_HEADER, loopStamp, mailboxOfSubject, RAW_MAIL_TTL_MS, replyRecipients, SendRequested, type MailboxStatus, type MailSent, type Names, type ObjectRef, type SendFailed, type SubjectMailbox } from "@postroom/contracts";
import { untilDatabaseAnswers, type Pool } from "@postroom/db";
import {
  ack,
  CredentialClient,
  CredentialUnavailableError,
  DurableConsumer,
  jetStreamOf,
  openKv,
  openObjectStore,
  publishJson,
  whileWorking,
  type KV,
  type NatsConnection,
  type ObjectStore,
  type Verdict,
} from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import type Mail from "nodemailer/lib/mailer/index.js";
import { classifySmtpError, defaultRetryPolicy, planRetry, type RetryPolicy, type SmtpVerdict } from "./classify.js";
import {
  assertAddress,
  assertSafeHeader,
  forwardedBlock,
  cleanReceivedSubject,
  forwardSubject,
  mergeRecipients,
  messageIdFor,
  quoteHtml,
  quoteText,
  RefusedCommandError,
  replyReferences,
  replySubject,
  textToHtml,
  type OriginalMessage,
} from "./compose.js";
import { SendRateLimiter } from "./rate-limit.js";
import { GraphSender, GraphSendError, graphTarget } from "./graph-send.js";
import { appendToSentFolder } from "./sent-folder.js";
import { SendReceipts } from "./send-receipts.js";
import { SmtpPools, type PoolSendResult } from "./smtp-pool.js";

/**
 * Metrics seam: the telemetry package hangs counters and histograms here. Labels are bounded —
 * tenant and mailbox ids, kinds and outcomes, never an address or a subject.
 */
export interface SmtpSenderEvents {
  /** The server accepted a message after `attempts` SMTP attempts; `ms` is the last SMTP conversation. */
  onSent?(event: { tenant: string; mailbox: string; kind: SendRequested["kind"]; bytes: number; attempts: number; ms: number }): void;
  /** An attempt failed and the command will be retried (4xx, connection) or held (needs an administrator). */
  onDeferred?(event: { tenant: string; mailbox: string; verdict: "retry" | "needs-admin"; responseCode: number | null }): void;
  /** The command ended without being sent (refused before sending, 5xx, or given up). */
  onFailed?(event: { tenant: string; mailbox: string; kind: SendRequested["kind"]; responseCode: number | null }): void;
  /** A send waited for the per-mailbox rate limit. */
  onRateLimited?(event: { tenant: string; mailbox: string; waitMs: number }): void;
}

export interface SenderOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  pool: Pool;
  logger: Logger;
  /** Consume only this tenant's commands (per-tenant deployments); all when absent. */
  tenant?: string;
  /**
   * Commands in hand at once across all mailboxes (default 32): while one waits for its SMTP
   * turn, others are composed and recorded, and their rows' commits share WAL flushes. Each
   * mailbox is still rate-limited and has at most `connectionsPerMailbox` SMTP connections.
   */
  concurrency?: number;
  /** SMTP connections per mailbox at most, each logged in once and reused (default 4). */
  connectionsPerMailbox?: number;
  /** Retry timing (default {@link defaultRetryPolicy}). */
  retry?: RetryPolicy;
  /** Clock, for the rate limiter and the give-up age. */
  now?: () => number;
  /**
   * Called right after the "sent" row is committed and before mail.sent is published and the
   * command acknowledged — the seam the crash tests stop the process at. Not for production use.
   */
  afterAccepted?: (commandId: string) => Promise<void>;
  /**
   * Called after the server's 250 and its receipt in JetStream, before the "sent" row is written —
   * where a sender dies that waits for a stopped PostgreSQL. Crash tests only.
   */
  beforeRecorded?: (commandId: string) => Promise<void>;
  /** Metrics seam (see {@link SmtpSenderEvents}). */
  events?: SmtpSenderEvents;
  /**
   * The IMAP folder a mailbox's sent messages are copied to ("Sent", "Sent Items"), or undefined
   * for no copy (the default: Exchange Online and Gmail file submitted mail themselves).
   */
  sentFolder?: (tenant: string, mailbox: string) => string | undefined;
}

/** How long JetStream waits for an ack (or a progress signal) before giving the command to another sender. */
const ACK_WAIT_MS = 30_000;

/** An archived original with what replies and forwards need from the archive. */
interface Original extends OriginalMessage {
  archivePath: string;
  /** Set when retention removed the files (rows, bodies and addresses stay). */
  purgedAt?: Date | null;
  attachments: { name: string; path: string; contentType: string; contentId: string | null; inline: boolean }[];
}

/** The `sends` row. */
interface SendRow {
  tenant: string;
  mailbox: string;
  state: "pending" | "sending" | "sent" | "failed";
  attempts: number;
  raw_object: string | null;
  raw_size: string | null;
  raw_sha256: string | null;
  envelope: { from: string; to: string[] } | null;
  in_reply_to: string | null;
  reply_references: string[];
  server_response: string | null;
  sent_at: Date | null;
  refused: { recipient: string; response: string }[];
  /** The composed message itself when it fits in memory (≤ INLINE_RAW_MAX_BYTES); else in `raw_object`. */
  raw?: Buffer | null;
}

/** The `sends` columns a send works with; `raw` (the bytes) only where they are needed. */
const ROW_COLUMNS = "tenant, mailbox, state, attempts, raw_object, raw_size, raw_sha256, envelope, in_reply_to, reply_references, server_response, sent_at, refused";

/**
 * Composed messages up to this size are kept in memory and in the `sends` row (migration 55) and
 * sent from there; larger ones (forwards with attachments) stream through the object store.
 */
export const INLINE_RAW_MAX_BYTES = 256 * 1024;

/** A message composed in memory, with what its row records. */
interface Composed {
  bytes: Buffer;
  sha256: string;
  objectName: string;
  envelope: { from: string; to: string[] };
  inReplyTo: string | null;
  references: string[];
}

/** What taking a command in hand came to: an SMTP attempt to make, or nothing more to do. */
type Claim = { kind: "send"; row: SendRow; bytes: Buffer | undefined } | { kind: "done"; verdict: Verdict };

/**
 * Sends agents' replies, forwards, new messages and alerts from `mail.send` commands, exactly once.
 *
 * Order of one send, and why:
 * 1. The message is composed once — in memory when it fits ({@link INLINE_RAW_MAX_BYTES}), else
 *    streamed into the object store (attachments streamed from the archive on disk).
 * 2. The `sends` row, keyed by the command id, records it composed (bytes or object, size, hash,
 *    envelope) and `sending`: for a first delivery of a small message one INSERT … ON CONFLICT DO
 *    NOTHING RETURNING; a redelivered command finds its row and sends the bytes recorded there,
 *    so what is archived is exactly what the server accepted.
 * 3. The SMTP transaction runs on the mailbox's pooled, logged-in connection.
 * 4. The server's 250 is recorded as `sent` in one UPDATE before anything else happens.
 * 5. mail.sent is published (JetStream dedupes on `<command>#sent`) and the command acknowledged.
 * A crash after 4 finds the row `sent` on redelivery and only repeats 5. A duplicate is possible only
 * if the process dies after the server committed the message (end of DATA) and before step 4
 * commits — the round trip of the final 250 plus one single-row UPDATE. SMTP has no way to ask a
 * server whether it took a message, so no client can close that window (RFC 1047); the derived
 * Message-ID lets receivers and our archive recognise the copy.
 */
export class SmtpSender {
  #consumer: DurableConsumer<SendRequested> | undefined;
  #raw: ObjectStore | undefined;
  #status: KV | undefined;
  readonly #lastStatus = new Map<string, string>();
  readonly #credentials: CredentialClient;
  readonly #pools: SmtpPools;
  /** `outbound: graph` mailboxes send here instead of the SMTP pools. */
  readonly #graph: GraphSender;
  readonly #js;
  readonly #limiter: SendRateLimiter;
  readonly #receipts: SendReceipts;
  readonly #now: () => number;

  constructor(private readonly o: SenderOptions) {
    this.#credentials = new CredentialClient(o.nc, o.names);
    this.#js = jetStreamOf(o.nc);
    this.#now = o.now ?? Date.now;
    this.#receipts = new SendReceipts({ nc: o.nc, names: o.names, replicas: o.config.nats.replicas, logger: o.logger });
    // The credential is asked for when a mailbox's pool is made (its first connection), not per send.
    this.#pools = new SmtpPools({
      credential: (tenant, mailbox, rejected) => this.#credentials.get(tenant, mailbox, "smtp", rejected),
      connectionsPerMailbox: o.connectionsPerMailbox ?? 4,
      now: this.#now,
    });
    this.#graph = new GraphSender({ credential: (tenant, mailbox, rejected) => this.#credentials.get(tenant, mailbox, "graph", rejected), now: this.#now });
    this.#limiter = new SendRateLimiter((key) => {
      const [tenant, mailbox] = key.split("/");
      const smtp = findMailbox(o.config, tenant!, mailbox!)?.mailbox.smtp;
      return { messages: smtp?.ratePerMinute ?? 30, recipients: smtp?.recipientsPerMinute ?? 100 };
    });
  }

  async start(): Promise<void> {
    const { nc, names, tenant, config } = this.o;
    this.#raw = await openObjectStore(nc, names.buckets.rawMail, { replicas: config.nats.replicas, ttlMs: RAW_MAIL_TTL_MS });
    this.#status = await openKv(nc, names.buckets.mailboxStatus, { replicas: config.nats.replicas });
    await this.#receipts.open();
    this.#consumer = new DurableConsumer({
      nc,
      stream: names.streams.sendCommands,
      durable: names.consumers.smtpSender(tenant),
      filterSubject: names.subjects.wildcard.mailSend(tenant),
      schema: SendRequested,
      handler: (c, msg) => whileWorking(msg, ACK_WAIT_MS, () => this.#onCommand(c, msg.subject)),
      // Short, so a crashed sender's command comes back within half a minute; a long send (25 MB
      // on a slow link) keeps its command by telling the server it is still working (whileWorking).
      ackWaitMs: ACK_WAIT_MS,
      maxAckPending: this.o.concurrency ?? 32,
      // Every step is idempotent (the row decides), so a lost ack costs one redelivery that finds
      // the row "sent" — not worth a round trip per command.
      plainAcks: true,
      onProblem: (p) => this.o.logger.warn({ subject: p.subject, reason: p.reason, ...(p.error ? errorFields(p.error) : {}) }, "send deferred"),
    });
    await this.#consumer.start();
  }

  /** Stops taking commands and lets the sends in hand finish (their rows and events complete). */
  async stop(): Promise<void> {
    await this.#consumer?.stop();
    // Then the connections: the sends in hand are done, so each is logged out cleanly.
    this.#pools.close();
    this.#graph.close();
  }


  async #onCommand(c: SendRequested, subject: string): Promise<Verdict> {
    const log = this.o.logger.child({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, kind: c.kind });
    // Defence in depth beside the bus permissions: a publisher allowed on one mailbox's subject
    // must not make us act for another mailbox by naming it in the body.
    const addressed = mailboxOfSubject(this.o.names.subjects.mailSend, subject);
    if (!addressed) return { action: "term", reason: `${subject} is not a send subject` };
    if (addressed.tenant !== c.tenant || addressed.mailbox !== c.mailbox) {
      return this.#refuse(c, addressed, `the command names mailbox ${c.tenant}/${c.mailbox} but was sent to ${addressed.tenant}/${addressed.mailbox}: a command may only act for the mailbox of its subject`);
    }
    const ref = findMailbox(this.o.config, c.tenant, c.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${c.tenant}/${c.mailbox} is not configured` };
    const { mailbox } = ref;
    const rfcMessageId = messageIdFor(c.commandId, mailbox.address);
    const key = `${c.tenant}/${c.mailbox}`;
    const takenAt = this.#now();
    // Recipients count as well as messages: a forward to 50 is 50 deliveries. The rate is taken
    // before the command is recorded or composed (a queued command costs nothing), so the count
    // comes from the command and the mailbox's defaults; a reply with no "to" goes to one address.
    const waitMs = this.#limiter.take(key, takenAt, recipientCount(c, mailbox));
    if (waitMs > 0) {
      // Queue, do not fail: the command goes back to JetStream and returns when a slot is free.
      // Nothing is recorded or composed for it yet.
      log.debug({ waitMs }, "rate limit reached; send queued");
      this.o.events?.onRateLimited?.({ tenant: c.tenant, mailbox: c.mailbox, waitMs });
      return { action: "retry", delayMs: waitMs, reason: "per-mailbox rate limit" };
    }
    let claim: Claim;
    try {
      claim = await this.#claim(c, addressed, mailbox, rfcMessageId, log);
    } catch (error) {
      this.#limiter.release(key, takenAt);
      throw error;
    }
    if (claim.kind === "done") {
      // Nothing goes to the server for this command (sent before, failed, refused): its slot is free.
      this.#limiter.release(key, takenAt);
      return claim.verdict;
    }
    const { row, bytes } = claim;

    let result: PoolSendResult;
    let started = 0;
    // The archive's copy of a message composed in memory goes into the object store while the
    // SMTP conversation runs; mail.sent (which names it) waits for it below.
    let copy = bytes ? this.#putArchiveCopy(row, bytes) : Promise.resolve();
    copy.catch(() => undefined);
    try {
      started = performance.now();
      result = await this.#send(c, mailbox, row, bytes);
    } catch (error) {
      // A credential that never came (token-service down) is no SMTP attempt: it must not
      // lengthen the backoff or show as one in the row.
      const attempted = !(error instanceof CredentialUnavailableError);
      const verdict =
        error instanceof CredentialUnavailableError ? credentialVerdict(error) : error instanceof GraphSendError ? error.verdict : classifySmtpError(error as Parameters<typeof classifySmtpError>[0]);
      if (verdict.kind === "retry" && (error as { code?: string }).code !== undefined && (error as { responseCode?: number }).responseCode === undefined) {
        // The connection never got as far as a server decision: this attempt does not count against the rate.
        this.#limiter.release(key, takenAt);
      }
      const code = (error as { responseCode?: number }).responseCode ?? null;
      log.warn({ verdict: verdict.kind, reason: verdict.reason, responseCode: code }, "smtp send failed");
      if (verdict.kind === "permanent") return this.#fail(c, true, verdict.reason, verdict.reason, code);
      this.o.events?.onDeferred?.({ tenant: c.tenant, mailbox: c.mailbox, verdict: verdict.kind, responseCode: code });
      // SMTP attempts, not deliveries: waits for the rate limit must not lengthen the backoff.
      const attempts = attempted ? row.attempts : row.attempts - 1;
      const plan = planRetry(verdict, attempts, this.#now() - Date.parse(c.requestedAt), this.o.retry ?? defaultRetryPolicy);
      if (plan.action === "retry") {
        // The row says "held" before the status or the event below can tell anyone so.
        await this.o.pool.query("UPDATE sends SET state = 'pending', attempts = $3, last_error = $2, updated_at = now() WHERE command_id = $1", [c.commandId, verdict.reason, attempts]);
      }
      await this.#setStatus(c.tenant, c.mailbox, verdict.kind === "needs-admin" ? "needs-admin" : "backing-off", verdict, code);
      if (verdict.kind === "needs-admin") {
        // The agent's side hears now that this reply is held (not lost) until someone fixes the
        // mailbox; `permanent: false` says it will still go out by itself afterwards.
        await this.#publishFailed(c, false, `${verdict.reason} — held until an administrator acts: ${verdict.fix}`, verdict.reason, code, `${c.commandId}#needs-admin`);
      }
      if (plan.action === "give-up") return this.#fail(c, true, plan.reason, verdict.reason, code);
      // Graph's Retry-After is a floor: coming back sooner only earns another 429.
      const delayMs = Math.max(plan.delayMs, error instanceof GraphSendError ? (error.retryAfterMs ?? 0) : 0);
      return { action: "retry", delayMs, reason: verdict.reason };
    }
    // Some recipients refused, others accepted: the message is sent (it cannot be taken back);
    // the refusals are kept with the row, so every mail.sent for this command (also one
    // republished after a crash) tells the agent's side who did not get it.
    const refused = result.rejectedErrors.map((e) => ({ recipient: e.recipient ?? "?", response: e.response ?? e.message }));
    if (refused.length) log.warn({ refused: refused.length }, "some recipients were refused");
    // The duplicate window closes with the first of two writes to land: the receipt in JetStream
    // and this one-row UPDATE; nothing may run between the 250 and them. The server has the
    // message now, so a database outage must not fail this step (a retried command would send it
    // again): the UPDATE waits for PostgreSQL, with the command still in hand (whileWorking keeps
    // telling JetStream), and the receipt covers a sender killed while it waits. Found by the chaos
    // run: a reply delivered twice after PostgreSQL stopped between a 250 and this row, and again
    // when the sender waiting for it was killed.
    const receipt = this.#receipts.write(c.tenant, c.commandId, result.response, refused);
    if (this.o.beforeRecorded) {
      await receipt;
      await this.o.beforeRecorded(c.commandId);
    }
    const sentAt = await this.#markSent(c.commandId, result.response, refused, null, log);
    const done: SendRow = { ...row, state: "sent", server_response: result.response, sent_at: sentAt, refused };
    this.o.events?.onSent?.({ tenant: c.tenant, mailbox: c.mailbox, kind: c.kind, bytes: Number(done.raw_size), attempts: done.attempts, ms: performance.now() - started });
    await this.o.afterAccepted?.(c.commandId);
    // A failed copy is written once more; if that fails too the command is redelivered, finds
    // its row "sent" and writes the copy before publishing — never sending again.
    copy = copy.catch(() => this.#putArchiveCopy(done, bytes!));
    await Promise.all([this.#setStatus(c.tenant, c.mailbox, "idle", null, null), copy]);
    await this.#publishSent(c, rfcMessageId, done, bytes);
    log.info({ response: result.response }, "message sent");
    await this.#copyToSent(c, mailbox, rfcMessageId, done);
    return ack;
  }

  /**
   * Takes the command in hand for one SMTP attempt: its row recorded (or found) with the composed
   * message, state `sending`, the attempt counted. The first delivery of a message that fits in
   * memory does all of it in one statement — composed first, then one `INSERT … ON CONFLICT DO
   * NOTHING RETURNING` records it composed and in flight. Everything else (a redelivery, a message
   * over the inline limit, a refusal, a mailbox without smtp) takes the careful path: the row
   * first, then what it says.
   */
  async #claim(c: SendRequested, addressed: SubjectMailbox, mailbox: Mailbox, rfcMessageId: string, log: Logger): Promise<Claim> {
    if (mailbox.smtp) {
      let composed: Composed | undefined;
      try {
        composed = await this.#composeInMemory(c, mailbox, rfcMessageId);
      } catch (error) {
        // Refused: the careful path records the row and reports it.
        if (!(error instanceof RefusedCommandError)) throw error;
      }
      if (composed) {
        const r = await this.o.pool.query<SendRow>(
          `INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id, attempts, raw, raw_object, raw_size, raw_sha256, envelope, in_reply_to, reply_references)
           VALUES ($1, $2, $3, $4, 'sending', $5, 1, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (command_id) DO NOTHING RETURNING ${ROW_COLUMNS}`,
          [c.commandId, c.tenant, c.mailbox, c.kind, rfcMessageId, composed.bytes, composed.objectName, composed.bytes.length, composed.sha256, JSON.stringify(composed.envelope), composed.inReplyTo, composed.references],
        );
        const row = r.rows[0];
        if (row) return { kind: "send", row, bytes: composed.bytes };
      }
    }
    let row = await this.#record(c, rfcMessageId);
    if (row.tenant !== c.tenant || row.mailbox !== c.mailbox) {
      // The id belongs to another mailbox's command: its row (and its sent message) stay untouched.
      return { kind: "done", verdict: await this.#refuse(c, addressed, `command id ${c.commandId} is already used by another mailbox's command: use a new id`) };
    }
    if (row.state === "failed") {
      log.info("command already failed; not sending again");
      return { kind: "done", verdict: ack };
    }
    if (row.state === "sent") {
      // A crash (or a lost ack) after the server's 250: finish the bookkeeping, never send again.
      log.info("command already sent; publishing its event again");
      return this.#finishSent(c, mailbox, rfcMessageId, row);
    }
    if (row.attempts > 0) {
      // Taken up again after an attempt: if the server accepted it and the row never heard (the
      // sender died waiting for PostgreSQL), the receipt says so — record it, never send again.
      const receipt = await this.#receipts.read(c.tenant, c.commandId);
      if (receipt) {
        log.warn({ acceptedAt: receipt.acceptedAt }, "the server accepted this command before a crash; recording it as sent, not sending again");
        const sentAt = await this.#markSent(c.commandId, receipt.serverResponse, receipt.refused, new Date(receipt.acceptedAt), log);
        return this.#finishSent(c, mailbox, rfcMessageId, { ...row, state: "sent", server_response: receipt.serverResponse, sent_at: sentAt, refused: receipt.refused });
      }
    }
    if (!mailbox.smtp) return { kind: "done", verdict: await this.#fail(c, true, `mailbox ${c.tenant}/${c.mailbox} has no smtp settings: add smtp (host, tls, port) to it in the config`, null, null) };
    if (!row.raw_object) {
      // Composed once: every later attempt sends these same bytes.
      try {
        row = await this.#composeAndStore(c, mailbox, rfcMessageId);
      } catch (error) {
        if (error instanceof RefusedCommandError) return { kind: "done", verdict: await this.#fail(c, true, error.message, null, null) };
        throw error;
      }
    }
    const marked = await this.o.pool.query<{ attempts: number }>("UPDATE sends SET state = 'sending', attempts = attempts + 1, updated_at = now() WHERE command_id = $1 RETURNING attempts", [c.commandId]);
    return { kind: "send", row: { ...row, state: "sending", attempts: marked.rows[0]!.attempts }, bytes: row.raw ?? undefined };
  }

  /**
   * Records the server's acceptance in the row, waiting for PostgreSQL if it is away (the server
   * has the message: failing here would send it again). `acceptedAt` is the receipt's time when
   * the row is caught up after a crash; null means now.
   */
  async #markSent(commandId: string, response: string, refused: readonly { recipient: string; response: string }[], acceptedAt: Date | null, log: Logger): Promise<Date> {
    const r = await untilDatabaseAnswers(
      () =>
        this.o.pool.query<{ sent_at: Date }>(
          "UPDATE sends SET state = 'sent', server_response = $2, sent_at = COALESCE($4, now()), last_error = NULL, refused = $3, updated_at = now() WHERE command_id = $1 RETURNING sent_at",
          [commandId, response, JSON.stringify(refused), acceptedAt],
        ),
      (error, attempt) => log.warn({ attempt, problem: (error as Error)?.message ?? String(error) }, "database unavailable after the server took the message; recording it as sent once it returns"),
    );
    return r.rows[0]!.sent_at;
  }

  /** The bookkeeping after a 250 a crash interrupted: archive copy, mail.sent, Sent copy — no new SMTP attempt. */
  async #finishSent(c: SendRequested, mailbox: Mailbox, rfcMessageId: string, row: SendRow): Promise<Claim> {
    if (row.raw) await this.#putArchiveCopy(row, row.raw);
    await this.#publishSent(c, rfcMessageId, row, row.raw);
    await this.#copyToSent(c, mailbox, rfcMessageId, row);
    return { kind: "done", verdict: ack };
  }

  /** Inserts the pending row if new; returns the current row. */
  async #record(c: SendRequested, rfcMessageId: string): Promise<SendRow> {
    // A new command's row comes back from the INSERT itself; only an existing one is read.
    const inserted = await this.o.pool.query<SendRow>(
      `INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id) VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT (command_id) DO NOTHING RETURNING ${ROW_COLUMNS}, raw`,
      [c.commandId, c.tenant, c.mailbox, c.kind, rfcMessageId],
    );
    if (inserted.rows[0]) return inserted.rows[0];
    const r = await this.o.pool.query<SendRow>(`SELECT ${ROW_COLUMNS}, raw FROM sends WHERE command_id = $1`, [c.commandId]);
    return r.rows[0]!;
  }

  async #original(c: SendRequested, messageKey: string): Promise<Original> {
    const r = await this.o.pool.query<{
      id: string;
      rfc_message_id: string;
      references: string[];
      subject: string;
      from_address: string;
      date_header: Date | null;
      received_at: Date;
      text_body: string | null;
      html_body: string | null;
      archive_path: string;
      purged_at: Date | null;
      tenant: string;
      mailbox: string;
    }>(
      `SELECT id, tenant, mailbox, rfc_message_id, "references", subject, from_address, date_header, received_at, text_body, html_body, archive_path, purged_at FROM messages WHERE message_key = $1`,
      [messageKey],
    );
    const row = r.rows[0];
    // Not archived yet (or a wrong key): a transient problem while the archiver catches up.
    if (!row) throw new Error(`original message ${messageKey} is not archived (yet)`);
    // The key's prefix was checked already; the row's own columns are the authority.
    if (row.tenant !== c.tenant || row.mailbox !== c.mailbox) throw foreignOriginal(c, messageKey);
    const addresses = await this.o.pool.query<{ role: string; address: string; name: string | null }>(
      "SELECT role, address, name FROM addresses WHERE message_id = $1 ORDER BY ctid",
      [row.id],
    );
    const of = (role: string) => addresses.rows.filter((a) => a.role === role).map((a) => a.address);
    const parts = await this.o.pool.query<{ original_name: string | null; stored_name: string; content_type: string; content_id: string | null; inline: boolean }>(
      "SELECT original_name, stored_name, content_type, content_id, inline FROM attachments WHERE message_id = $1 ORDER BY part_index",
      [row.id],
    );
    return {
      purgedAt: row.purged_at,
      rfcMessageId: row.rfc_message_id,
      references: row.references,
      subject: row.subject,
      from: row.from_address,
      fromName: addresses.rows.find((a) => a.role === "from")?.name ?? null,
      replyTo: of("reply-to"),
      to: of("to"),
      cc: of("cc"),
      date: row.date_header ?? row.received_at,
      text: row.text_body,
      html: row.html_body,
      archivePath: row.archive_path,
      attachments: parts.rows.map((p) => ({
        name: p.original_name ?? p.stored_name,
        path: join(row.archive_path, "parts", p.stored_name),
        contentType: p.content_type,
        contentId: p.content_id,
        inline: p.inline,
      })),
    };
  }

  /**
   * Everything the command says checked, the original read, the message built — before a byte is
   * composed. Throws {@link RefusedCommandError} for a command that must not be sent.
   */
  async #prepare(c: SendRequested, mailbox: Mailbox, rfcMessageId: string): Promise<ReturnType<typeof buildMessage>> {
    if ((c.kind === "reply" || c.kind === "reply-all") && !mailbox.agentsMayAnswer) throw new RefusedCommandError(`agents may not answer from ${c.tenant}/${c.mailbox} (agentsMayAnswer: false)`);
    if (c.kind === "forward" && !mailbox.agentsMayForward) throw new RefusedCommandError(`agents may not forward from ${c.tenant}/${c.mailbox} (agentsMayForward: false)`);
    if ((c.kind === "reply" || c.kind === "reply-all" || c.kind === "forward") && !c.original) {
      throw new RefusedCommandError(`a ${c.kind} needs "original", the message key of the email it answers or forwards`);
    }
    // Everything the command says is checked before the archive is even read.
    if (c.subject !== undefined) assertSafeHeader("subject", c.subject);
    for (const [field, list] of [["to", c.to], ["cc", c.cc], ["bcc", c.bcc]] as const) for (const a of list) assertAddress(field, a);
    for (const a of [...mailbox.defaultCc, ...mailbox.defaultBcc]) assertAddress("defaultCc/defaultBcc", a);

    // Another mailbox's email (and so its attachments, which are read through it) is never
    // quoted, forwarded or attached: refused before the archive is read.
    if (c.original !== undefined && !c.original.startsWith(`${c.tenant}/${c.mailbox}/`)) throw foreignOriginal(c, c.original);
    const original = c.original ? await this.#original(c, c.original) : undefined;
    if (original?.purgedAt && c.kind === "forward") {
      throw new RefusedCommandError(`the original's files were removed by the archive's retention on ${original.purgedAt.toISOString()}: it can be answered but no longer forwarded`);
    }
    const built = buildMessage(c, mailbox, rfcMessageId, original);
    if (built.envelope.to.length === 0) throw new RefusedCommandError("the message has no recipients: give at least one address in to, cc or bcc");
    // The same cap the agent API applies before its 202, here for any command on the bus.
    const cap = mailbox.smtp!.maxRecipients;
    if (built.envelope.to.length > cap) throw new RefusedCommandError(`the message has ${built.envelope.to.length} recipients, more than the mailbox allows in one message (${cap}, smtp.maxRecipients): send to fewer`);
    return built;
  }

  /**
   * Composes a message that fits in memory (up to {@link INLINE_RAW_MAX_BYTES}) without touching
   * the object store; undefined when it is larger (the caller streams it into the object store
   * instead). Over the mailbox's `maxMessageBytes` it is refused like the streamed path.
   */
  async #composeInMemory(c: SendRequested, mailbox: Mailbox, rfcMessageId: string): Promise<Composed | undefined> {
    const { options, envelope, inReplyTo, references } = await this.#prepare(c, mailbox, rfcMessageId);
    const limit = mailbox.smtp!.maxMessageBytes;
    const stop = Math.min(limit, INLINE_RAW_MAX_BYTES);
    const source = compileMessage(options, mailbox).createReadStream();
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > stop) {
          source.destroy();
          if (size > limit) throw tooLarge(limit);
          return undefined;
        }
        chunks.push(chunk);
      }
    } catch (error) {
      if (error instanceof RefusedCommandError) throw error;
      const e = error as NodeJS.ErrnoException;
      if (e.code === "ENOENT") throw missingAttachment(e);
      throw error;
    }
    const bytes = Buffer.concat(chunks, size);
    return { bytes, sha256: createHash("sha256").update(bytes).digest("hex"), objectName: sentObjectName(c), envelope, inReplyTo, references };
  }

  /** Builds the message, streams it into the object store and records where it is. */
  async #composeAndStore(c: SendRequested, mailbox: Mailbox, rfcMessageId: string): Promise<SendRow> {
    const { options, envelope, inReplyTo, references } = await this.#prepare(c, mailbox, rfcMessageId);
    const objectName = sentObjectName(c);
    const hash = createHash("sha256");
    let size = 0;
    const limit = mailbox.smtp!.maxMessageBytes;
    const counting = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        hash.update(chunk);
        // Stop reading the archive as soon as the limit is passed rather than storing 2 GB first.
        if (size > limit) done(tooLarge(limit));
        else done(null, chunk);
      },
    });
    const source = compileMessage(options, mailbox).createReadStream();
    // pipe() does not pass a source error on; without this a missing attachment file would leave
    // the object store waiting for the end of a stream that never ends.
    source.once("error", (error: NodeJS.ErrnoException) => {
      counting.destroy(error.code === "ENOENT" ? missingAttachment(error) : error);
    });
    const stream = source.pipe(counting);
    try {
      await this.#raw!.put({ name: objectName }, Readable.toWeb(stream) as ReadableStream<Uint8Array>);
    } catch (error) {
      await this.#raw!.delete(objectName).catch(() => undefined);
      const refused = error instanceof RefusedCommandError ? error : (error as { cause?: unknown })?.cause;
      if (refused instanceof RefusedCommandError) throw refused;
      if (size > limit) throw tooLarge(limit);
      throw error;
    }
    const r = await this.o.pool.query<SendRow>(
      `UPDATE sends SET raw_object = $2, raw_size = $3, raw_sha256 = $4, envelope = $5, in_reply_to = $6, reply_references = $7, raw = NULL, updated_at = now()
       WHERE command_id = $1 RETURNING ${ROW_COLUMNS}, raw`,
      [c.commandId, objectName, size, hash.digest("hex"), JSON.stringify(envelope), inReplyTo, references],
    );
    return r.rows[0]!;
  }

  /** The archive's copy of a message composed in memory: the object mail.sent names. */
  async #putArchiveCopy(row: SendRow, bytes: Buffer): Promise<void> {
    await this.#raw!.putBlob({ name: row.raw_object! }, bytes);
  }

  /** One SMTP transaction over the mailbox's pooled connections; one fresh credential after a refused login. */
  async #send(c: SendRequested, mailbox: Mailbox, row: SendRow, bytes: Buffer | undefined): Promise<PoolSendResult> {
    const body = async (): Promise<Buffer | Readable> => {
      if (bytes) return bytes;
      const object = await this.#raw!.get(row.raw_object!);
      if (!object) throw new Error(`the composed message ${row.raw_object} is gone from the object store`);
      return Readable.fromWeb(object.data as never);
    };
    // Graph takes the same composed bytes; its login retry (a 401) happens inside GraphSender.
    if (mailbox.outbound === "graph") return this.#graph.send(graphTarget(c.tenant, c.mailbox, mailbox), await body());
    try {
      return await this.#pools.send(c.tenant, c.mailbox, mailbox.smtp!, row.envelope!, await body());
    } catch (error) {
      const e = error as { code?: string; responseCode?: number };
      // An authentication refusal may be a stale token: ask token-service once for a fresh one.
      if (e.code !== "EAUTH" && e.responseCode !== 535) throw error;
      this.o.logger.info({ tenant: c.tenant, mailbox: c.mailbox }, "smtp login refused; asking for a fresh credential once");
      return await this.#pools.sendAfterRefusal(c.tenant, c.mailbox, mailbox.smtp!, row.envelope!, await body());
    }
  }
  /** `bytes`: the sent message when it is in memory; carried inline so the archiver reads no object. */
  async #publishSent(c: SendRequested, rfcMessageId: string, row: SendRow, bytes?: Buffer | null): Promise<void> {
    const raw: ObjectRef = { bucket: this.o.names.buckets.rawMail, name: row.raw_object!, size: Number(row.raw_size), sha256: row.raw_sha256! };
    const sent: MailSent = {
      version: "v1",
      commandId: c.commandId,
      tenant: c.tenant,
      mailbox: c.mailbox,
      rfcMessageId,
      inReplyTo: row.in_reply_to,
      references: row.reply_references,
      raw,
      ...(bytes && bytes.length <= INLINE_RAW_MAX_BYTES ? { rawInline: bytes.toString("base64") } : {}),
      envelope: row.envelope!,
      serverResponse: row.server_response ?? "",
      refused: row.refused ?? [],
      ...(c.sessionId ? { sessionId: c.sessionId } : {}),
      sentAt: (row.sent_at ?? new Date()).toISOString(),
    };
    await publishJson(this.#js, this.o.names.subjects.mailSent(c.tenant, c.mailbox), sent, { msgId: `${c.commandId}#sent` });
  }

  /**
   * The optional copy in the mailbox's Sent folder. After mail.sent, never before: the copy is a
   * convenience for people reading the mailbox, and its failure must not hold up the archive or
   * repeat the send. At most once (the folder is searched for the Message-ID first).
   */
  async #copyToSent(c: SendRequested, mailbox: Mailbox, rfcMessageId: string, row: SendRow): Promise<void> {
    // Graph filed its own copy in Sent Items already: never a second one over IMAP.
    if (mailbox.outbound === "graph") return this.#removeGraphCopy(c, mailbox, rfcMessageId);
    const folder = this.o.sentFolder?.(c.tenant, c.mailbox);
    if (!folder || mailbox.inbound.protocol !== "imap") return;
    try {
      const credential = await this.#credentials.get(c.tenant, c.mailbox, "imap");
      const result = await appendToSentFolder(await this.#sentBytes(c, row), rfcMessageId, { server: mailbox.inbound, credential, folder });
      this.o.logger.info({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, folder, result }, "copy in the Sent folder");
    } catch (error) {
      this.o.logger.warn({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, folder, ...errorFields(error) }, "could not copy to the Sent folder");
      await this.o.pool.query("UPDATE sends SET last_error = $2 WHERE command_id = $1", [c.commandId, `sent; no copy in ${folder}: ${(error as Error).message}`]);
    }
  }

  /**
   * `graph.saveToSentItems: false`: takes out the copy Graph's MIME sendMail always files. Best
   * effort, as the IMAP copy is: a failure is noted on the row and never repeats the send.
   */
  async #removeGraphCopy(c: SendRequested, mailbox: Mailbox, rfcMessageId: string): Promise<void> {
    if (mailbox.graph.saveToSentItems) return;
    try {
      const removed = await this.#graph.removeSavedCopy(graphTarget(c.tenant, c.mailbox, mailbox), rfcMessageId);
      this.o.logger.info({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, removed }, "removed Graph's copy in Sent Items");
    } catch (error) {
      this.o.logger.warn({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, ...errorFields(error) }, "could not remove Graph's copy in Sent Items");
      await this.o.pool.query("UPDATE sends SET last_error = $2 WHERE command_id = $1", [c.commandId, `sent; the copy in Sent Items was not removed: ${(error as Error).message}`]);
    }
  }

  /**
   * The sent message's bytes: from the object store, or — once the archiver has filed it and
   * removed the object — from the archive on disk.
   */
  async #sentBytes(c: SendRequested, row: SendRow): Promise<Buffer> {
    if (row.raw) return row.raw;
    const object = await this.#raw!.get(row.raw_object!);
    if (object) {
      const chunks: Buffer[] = [];
      for await (const chunk of Readable.fromWeb(object.data as never)) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    }
    const r = await this.o.pool.query<{ archive_path: string }>("SELECT archive_path FROM messages WHERE message_key = $1", [`${c.tenant}/${c.mailbox}/sent/${c.commandId}`]);
    const archived = r.rows[0];
    if (!archived) throw new Error("the sent message is neither in the object store nor archived yet");
    return readFile(join(archived.archive_path, "message.eml"));
  }

  /** smtp-sender's entry in the mailbox-status bucket, beside the poller's; written on change only. */
  async #setStatus(tenant: string, mailbox: string, state: MailboxStatus["state"], verdict: SmtpVerdict | null, code: number | null): Promise<void> {
    const key = this.o.names.mailboxSmtpKey(tenant, mailbox);
    const fingerprint = `${state}|${verdict?.reason ?? ""}`;
    if (this.#lastStatus.get(key) === fingerprint) return;
    const now = new Date(this.#now()).toISOString();
    const status: MailboxStatus = {
      version: "v1",
      tenant,
      mailbox,
      state,
      owner: null,
      lastCheckAt: now,
      lastMessageAt: state === "idle" ? now : null,
      backlog: 0,
      lastError: verdict
        ? { message: verdict.reason, code: code === null ? null : String(code), fix: verdict.kind === "needs-admin" ? verdict.fix : null, at: now }
        : null,
      updatedAt: now,
    };
    try {
      await this.#status!.put(key, JSON.stringify(status));
      this.#lastStatus.set(key, fingerprint);
    } catch (error) {
      // Status is for people watching; a failed write must not fail or repeat a send.
      this.o.logger.warn({ tenant, mailbox, ...errorFields(error) }, "could not write smtp status");
    }
  }

  async #fail(c: SendRequested, permanent: boolean, reason: string, serverResponse: string | null, code: number | null): Promise<Verdict> {
    await this.o.pool.query("UPDATE sends SET state = 'failed', last_error = $2, updated_at = now() WHERE command_id = $1", [c.commandId, reason]);
    await this.#publishFailed(c, permanent, reason, serverResponse, code, `${c.commandId}#failed`);
    this.o.events?.onFailed?.({ tenant: c.tenant, mailbox: c.mailbox, kind: c.kind, responseCode: code });
    this.o.logger.warn({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, reason }, "send failed");
    return ack;
  }

  /**
   * Refuses a command that reaches beyond the mailbox of its subject, touching nothing of the
   * mailbox it names (no row, no status): the refusal is told on the subject's mailbox — the one
   * the publisher was allowed to address — and never sent.
   */
  async #refuse(c: SendRequested, addressed: SubjectMailbox, reason: string): Promise<Verdict> {
    await this.#publishFailed({ ...c, ...addressed }, true, reason, null, null, `${c.commandId}#refused`);
    this.o.events?.onFailed?.({ tenant: addressed.tenant, mailbox: addressed.mailbox, kind: c.kind, responseCode: null });
    this.o.logger.warn({ tenant: addressed.tenant, mailbox: addressed.mailbox, commandId: c.commandId, named: `${c.tenant}/${c.mailbox}`, reason }, "send command refused");
    return ack;
  }

  async #publishFailed(c: SendRequested, permanent: boolean, reason: string, serverResponse: string | null, code: number | null, msgId: string): Promise<void> {
    const failed: SendFailed = {
      version: "v1",
      commandId: c.commandId,
      tenant: c.tenant,
      mailbox: c.mailbox,
      permanent,
      reason,
      serverResponse,
      responseCode: code,
      failedAt: new Date(this.#now()).toISOString(),
    };
    await publishJson(this.#js, this.o.names.subjects.mailSendFailed(c.tenant, c.mailbox), failed, { msgId });
  }
}

/** The refusal of a reply or forward whose original belongs to another tenant or mailbox. */
function foreignOriginal(c: SendRequested, messageKey: string): RefusedCommandError {
  return new RefusedCommandError(`the original ${messageKey} is not an email of mailbox ${c.tenant}/${c.mailbox}: a command may only answer or forward its own mailbox's email`);
}

/**
 * The MIME message of a command. Graph's MIME sendMail takes its recipients from the headers, so
 * for `outbound: graph` the Bcc header stays in (Exchange removes it from the delivered copies;
 * the archive keeps it, as Sent Items does). SMTP carries Bcc in the envelope only. Exported for tests.
 */
export function compileMessage(options: Mail.Options, mailbox: Pick<Mailbox, "outbound">): ReturnType<MailComposer["compile"]> {
  if (mailbox.outbound !== "graph") return new MailComposer(options).compile();
  // CRLF throughout as well: nodemailer keeps a text body's bare LFs, which an SMTP client turns
  // into CRLF on the wire, but Graph takes the base64 bytes as they are and Exchange stores them
  // normalised — so without this the Sent Items copy would differ from the archived one.
  // `newline` is read by MailComposer but missing from its type.
  const node = new MailComposer({ ...options, newline: "windows" } as Mail.Options).compile();
  node.keepBcc = true;
  return node;
}

/** Where a sent message's bytes are in the raw-mail object store (the archive's copy). */
function sentObjectName(c: SendRequested): string {
  return `${c.tenant}/${c.mailbox}/sent/${c.commandId}`;
}

function tooLarge(limit: number): RefusedCommandError {
  return new RefusedCommandError(`the message is over the mailbox's limit of ${limit} bytes (smtp.maxMessageBytes): remove attachments or raise the limit`);
}

function missingAttachment(error: NodeJS.ErrnoException): RefusedCommandError {
  return new RefusedCommandError(`an attachment of the original is missing from the archive (${error.path ?? "unknown file"}): it cannot be forwarded`);
}

/** token-service could not give a credential: an administrator's problem, or a transient one. */
function credentialVerdict(error: CredentialUnavailableError): SmtpVerdict {
  if (error.kind === "needs-admin" || error.kind === "unknown-mailbox") {
    return { kind: "needs-admin", reason: error.message, fix: error.fix ?? "check the mailbox's credentials in the config" };
  }
  return { kind: "retry", reason: error.message };
}

/**
 * The nodemailer message for a command: recipients, subject, threading headers, body with the
 * quoted original, attachments as file paths (nodemailer streams them; nothing is read whole).
 * Exported for tests; pure apart from the paths it names.
 */
export function buildMessage(
  c: SendRequested,
  mailbox: Mailbox,
  rfcMessageId: string,
  original: Original | undefined,
): { options: Mail.Options; envelope: { from: string; to: string[] }; inReplyTo: string | null; references: string[] } {
  const isReply = c.kind === "reply" || c.kind === "reply-all";
  let to = c.to;
  let cc = c.cc;
  // Recipients the command names are the ones the agent saw and confirmed; only a reply that
  // names none gets them from the one shared rule (never both: that is how a reply-all used to
  // gain the original's To a second time, in another field).
  if (original && isReply && to.length === 0 && cc.length === 0) ({ to, cc } = replyRecipients(c.kind as "reply" | "reply-all", original, [mailbox.address, ...mailbox.aliases]));
  const recipients = mergeRecipients(to, [...cc, ...mailbox.defaultCc], [...c.bcc, ...mailbox.defaultBcc]);
  for (const a of [...recipients.to, ...recipients.cc]) assertAddress("recipient", a);

  const received = original ? cleanReceivedSubject(original.subject) : "";
  const subject = c.subject ?? (original ? (c.kind === "forward" ? forwardSubject(received) : replySubject(received)) : "(no subject)");
  assertSafeHeader("subject", subject);

  let text = c.text;
  let html = c.html;
  const attachments: Mail.Attachment[] = [];
  if (original && isReply) {
    text = `${c.text}\n\n${quoteText(original)}`;
    if (html !== undefined || original.html) html = `${html ?? textToHtml(c.text)}\n${quoteHtml(original)}`;
  } else if (original && c.kind === "forward") {
    if (c.forwardAs === "attachment") {
      attachments.push({
        // eslint-disable-next-line no-control-regex -- control characters are what must not reach a file name
        filename: `${original.subject.replace(/[\\/:*?"<>|\u0000-\u001f]/g, "_").slice(0, 100) || "message"}.eml`,
        path: join(original.archivePath, "message.eml"),
        contentType: "message/rfc822",
        // nodemailer's default for message/rfc822 is inline; clients then show it as the body.
        contentDisposition: "attachment",
      });
    } else {
      const block = forwardedBlock(original);
      text = `${c.text}\n\n${block.text}`;
      if (html !== undefined || original.html) html = `${html ?? textToHtml(c.text)}\n${block.html}`;
      for (const a of original.attachments) {
        attachments.push({
          filename: a.name,
          path: a.path,
          contentType: a.contentType,
          ...(a.inline && a.contentId ? { cid: a.contentId.replace(/^<|>$/g, "") } : {}),
        });
      }
    }
  }
  const inReplyTo = original && isReply ? original.rfcMessageId : null;
  const references = original && (isReply || c.kind === "forward") ? replyReferences(original) : [];
  const options: Mail.Options = {
    from: mailbox.displayName ? { name: mailbox.displayName, address: mailbox.address } : mailbox.address,
    to: recipients.to,
    cc: recipients.cc,
    bcc: recipients.bcc,
    subject,
    text,
    ...(html !== undefined ? { html } : {}),
    attachments,
    messageId: rfcMessageId,
    ...(inReplyTo ? { inReplyTo } : {}),
    ...(references.length ? { references } : {}),
    // Every message carries the mailbox's loop stamp, so the archiver recognises it if it ever
    // comes back into the mailbox (a forwarding customer address, a list we wrote to). Alerts are
    // automatic mail: RFC 3834 tells auto-responders not to answer them.
    headers: { [LOOP_HEADER]: loopStamp(c.tenant, c.mailbox), ...(c.kind === "alert" ? { "Auto-Submitted": "auto-generated" } : {}) },
  };
  const envelope = { from: mailbox.address, to: [...recipients.to, ...recipients.cc, ...recipients.bcc] };
  return { options, envelope, inReplyTo, references };
}

/** How many deliveries a command makes, for the rate limit: its addresses and the mailbox's default Cc/Bcc. */
function recipientCount(c: SendRequested, mailbox: Mailbox): number {
  const explicit = c.to.length + c.cc.length + c.bcc.length;
  return Math.max(1, explicit) + mailbox.defaultCc.length + mailbox.defaultBcc.length;
}
