import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { findMailbox, type Mailbox, type PostroomConfig } from "@postroom/config";
import { RAW_MAIL_TTL_MS, SendRequested, type Credential, type MailboxStatus, type MailSent, type Names, type ObjectRef, type SendFailed } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import {
  ack,
  CredentialClient,
  CredentialUnavailableError,
  DurableConsumer,
  jetStreamOf,
  openKv,
  openObjectStore,
  publishJson,
  type JsMsg,
  type KV,
  type NatsConnection,
  type ObjectStore,
  type Verdict,
} from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import nodemailer from "nodemailer";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import type Mail from "nodemailer/lib/mailer/index.js";
import { classifySmtpError, defaultRetryPolicy, planRetry, type RetryPolicy, type SmtpVerdict } from "./classify.js";
import {
  assertAddress,
  assertSafeHeader,
  forwardedBlock,
  cleanReceivedSubject,
  forwardSubject,
  isValidAddress,
  mergeRecipients,
  messageIdFor,
  quoteHtml,
  quoteText,
  RefusedCommandError,
  replyAllRecipients,
  replyRecipients,
  replyReferences,
  replySubject,
  textToHtml,
  type OriginalMessage,
} from "./compose.js";
import { SendRateLimiter } from "./rate-limit.js";
import { appendToSentFolder } from "./sent-folder.js";
import { transportOptions } from "./transport.js";

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
  /** Commands handled at once across all mailboxes (default 4); each mailbox is still rate-limited. */
  concurrency?: number;
  /** Retry timing (default {@link defaultRetryPolicy}). */
  retry?: RetryPolicy;
  /** Clock, for the rate limiter and the give-up age. */
  now?: () => number;
  /**
   * Called right after the "sent" row is committed and before mail.sent is published and the
   * command acknowledged — the seam the crash tests stop the process at. Not for production use.
   */
  afterAccepted?: (commandId: string) => Promise<void>;
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
}

/**
 * Sends agents' replies, forwards, new messages and alerts from `mail.send` commands, exactly once.
 *
 * Order of one send, and why:
 * 1. The `sends` row is inserted (pending) keyed by the command id: a redelivered command finds it.
 * 2. The message is composed once, streamed into the object store (attachments streamed from the
 *    archive on disk), and its object name, size and hash recorded. Every later attempt sends those
 *    same bytes, so what is archived is exactly what the server accepted.
 * 3. The row becomes `sending`, then the SMTP transaction runs.
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
  readonly #js;
  readonly #limiter: SendRateLimiter;
  readonly #now: () => number;

  constructor(private readonly o: SenderOptions) {
    this.#credentials = new CredentialClient(o.nc, o.names);
    this.#js = jetStreamOf(o.nc);
    this.#now = o.now ?? Date.now;
    this.#limiter = new SendRateLimiter((key) => {
      const [tenant, mailbox] = key.split("/");
      return findMailbox(o.config, tenant!, mailbox!)?.mailbox.smtp?.ratePerMinute ?? 30;
    });
  }

  async start(): Promise<void> {
    const { nc, names, tenant, config } = this.o;
    this.#raw = await openObjectStore(nc, names.buckets.rawMail, { replicas: config.nats.replicas, ttlMs: RAW_MAIL_TTL_MS });
    this.#status = await openKv(nc, names.buckets.mailboxStatus, { replicas: config.nats.replicas });
    this.#consumer = new DurableConsumer({
      nc,
      stream: names.streams.sendCommands,
      durable: names.consumers.smtpSender(tenant),
      filterSubject: names.subjects.wildcard.mailSend(tenant),
      schema: SendRequested,
      handler: (c, msg) => this.#withProgress(msg, () => this.#onCommand(c)),
      // Short, so a crashed sender's command comes back within half a minute; a long send (25 MB
      // on a slow link) keeps its command by telling the server it is still working (#withProgress).
      ackWaitMs: ACK_WAIT_MS,
      maxAckPending: this.o.concurrency ?? 4,
      onProblem: (p) => this.o.logger.warn({ subject: p.subject, reason: p.reason, ...(p.error ? errorFields(p.error) : {}) }, "send deferred"),
    });
    await this.#consumer.start();
  }

  /** Stops taking commands and lets the sends in hand finish (their rows and events complete). */
  async stop(): Promise<void> {
    await this.#consumer?.stop();
  }

  /** Runs `work`, telling JetStream every third of the ack wait that the command is still in hand. */
  async #withProgress(msg: JsMsg, work: () => Promise<Verdict>): Promise<Verdict> {
    const timer = setInterval(() => msg.working(), ACK_WAIT_MS / 3);
    try {
      return await work();
    } finally {
      clearInterval(timer);
    }
  }

  async #onCommand(c: SendRequested): Promise<Verdict> {
    const log = this.o.logger.child({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, kind: c.kind });
    const ref = findMailbox(this.o.config, c.tenant, c.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${c.tenant}/${c.mailbox} is not configured` };
    const { mailbox } = ref;
    const rfcMessageId = messageIdFor(c.commandId, mailbox.address);
    let row = await this.#record(c, rfcMessageId);
    if (row.state === "failed") {
      log.info("command already failed; not sending again");
      return ack;
    }
    if (row.state === "sent") {
      // A crash (or a lost ack) after the server's 250: finish the bookkeeping, never send again.
      log.info("command already sent; publishing its event again");
      await this.#publishSent(c, rfcMessageId, row);
      await this.#copyToSent(c, mailbox, rfcMessageId, row);
      return ack;
    }
    if (!mailbox.smtp) return this.#fail(c, true, `mailbox ${c.tenant}/${c.mailbox} has no smtp settings: add smtp (host, tls, port) to it in the config`, null, null);

    if (!row.raw_object) {
      try {
        row = await this.#composeAndStore(c, mailbox, rfcMessageId);
      } catch (error) {
        if (error instanceof RefusedCommandError) return this.#fail(c, true, error.message, null, null);
        throw error;
      }
    }

    const key = `${c.tenant}/${c.mailbox}`;
    const takenAt = this.#now();
    const waitMs = this.#limiter.take(key, takenAt);
    if (waitMs > 0) {
      // Queue, do not fail: the command goes back to JetStream and returns when a slot is free.
      log.debug({ waitMs }, "rate limit reached; send queued");
      this.o.events?.onRateLimited?.({ tenant: c.tenant, mailbox: c.mailbox, waitMs });
      return { action: "retry", delayMs: waitMs, reason: "per-mailbox rate limit" };
    }

    let response: string;
    let started = 0;
    try {
      // The credential first: a token-service hiccup is not an SMTP attempt.
      const credential = await this.#credentials.get(c.tenant, c.mailbox, "smtp");
      await this.o.pool.query("UPDATE sends SET state = 'sending', attempts = attempts + 1, updated_at = now() WHERE command_id = $1", [c.commandId]);
      started = performance.now();
      response = await this.#send(c, mailbox, row, credential);
    } catch (error) {
      const verdict = error instanceof CredentialUnavailableError ? credentialVerdict(error) : classifySmtpError(error as Parameters<typeof classifySmtpError>[0]);
      if (verdict.kind === "retry" && (error as { code?: string }).code !== undefined && (error as { responseCode?: number }).responseCode === undefined) {
        // The connection never got as far as a server decision: this attempt does not count against the rate.
        this.#limiter.release(key, takenAt);
      }
      const code = (error as { responseCode?: number }).responseCode ?? null;
      log.warn({ verdict: verdict.kind, reason: verdict.reason, responseCode: code }, "smtp send failed");
      if (verdict.kind === "permanent") return this.#fail(c, true, verdict.reason, verdict.reason, code);
      this.o.events?.onDeferred?.({ tenant: c.tenant, mailbox: c.mailbox, verdict: verdict.kind, responseCode: code });
      await this.#setStatus(c.tenant, c.mailbox, verdict.kind === "needs-admin" ? "needs-admin" : "backing-off", verdict, code);
      if (verdict.kind === "needs-admin") {
        // The agent's side hears now that this reply is held (not lost) until someone fixes the
        // mailbox; `permanent: false` says it will still go out by itself afterwards.
        await this.#publishFailed(c, false, `${verdict.reason} — held until an administrator acts: ${verdict.fix}`, verdict.reason, code, `${c.commandId}#needs-admin`);
      }
      // SMTP attempts, not deliveries: waits for the rate limit must not lengthen the backoff.
      const plan = planRetry(verdict, row.attempts + 1, this.#now() - Date.parse(c.requestedAt), this.o.retry ?? defaultRetryPolicy);
      if (plan.action === "give-up") return this.#fail(c, true, plan.reason, verdict.reason, code);
      await this.o.pool.query("UPDATE sends SET state = 'pending', last_error = $2, updated_at = now() WHERE command_id = $1", [c.commandId, verdict.reason]);
      return { action: "retry", delayMs: plan.delayMs, reason: verdict.reason };
    }
    // The duplicate window closes with this one-row UPDATE: nothing may run between the 250 and it.
    const sent = await this.o.pool.query<SendRow>(
      "UPDATE sends SET state = 'sent', server_response = $2, sent_at = now(), last_error = NULL, updated_at = now() WHERE command_id = $1 RETURNING *",
      [c.commandId, response],
    );
    const done = sent.rows[0]!;
    this.o.events?.onSent?.({ tenant: c.tenant, mailbox: c.mailbox, kind: c.kind, bytes: Number(done.raw_size), attempts: done.attempts, ms: performance.now() - started });
    await this.o.afterAccepted?.(c.commandId);
    await this.#setStatus(c.tenant, c.mailbox, "idle", null, null);
    await this.#publishSent(c, rfcMessageId, done);
    log.info({ response }, "message sent");
    await this.#copyToSent(c, mailbox, rfcMessageId, done);
    return ack;
  }

  /** Inserts the pending row if new; returns the current row. */
  async #record(c: SendRequested, rfcMessageId: string): Promise<SendRow> {
    await this.o.pool.query(
      `INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id) VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT (command_id) DO NOTHING`,
      [c.commandId, c.tenant, c.mailbox, c.kind, rfcMessageId],
    );
    const r = await this.o.pool.query<SendRow>("SELECT * FROM sends WHERE command_id = $1", [c.commandId]);
    return r.rows[0]!;
  }

  async #original(messageKey: string): Promise<Original> {
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
    }>(
      `SELECT id, rfc_message_id, "references", subject, from_address, date_header, received_at, text_body, html_body, archive_path, purged_at FROM messages WHERE message_key = $1`,
      [messageKey],
    );
    const row = r.rows[0];
    // Not archived yet (or a wrong key): a transient problem while the archiver catches up.
    if (!row) throw new Error(`original message ${messageKey} is not archived (yet)`);
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

  /** Builds the message, streams it into the object store and records where it is. */
  async #composeAndStore(c: SendRequested, mailbox: Mailbox, rfcMessageId: string): Promise<SendRow> {
    if ((c.kind === "reply" || c.kind === "reply-all") && !mailbox.agentsMayAnswer) throw new RefusedCommandError(`agents may not answer from ${c.tenant}/${c.mailbox} (agentsMayAnswer: false)`);
    if (c.kind === "forward" && !mailbox.agentsMayForward) throw new RefusedCommandError(`agents may not forward from ${c.tenant}/${c.mailbox} (agentsMayForward: false)`);
    if ((c.kind === "reply" || c.kind === "reply-all" || c.kind === "forward") && !c.original) {
      throw new RefusedCommandError(`a ${c.kind} needs "original", the message key of the email it answers or forwards`);
    }
    // Everything the command says is checked before the archive is even read.
    if (c.subject !== undefined) assertSafeHeader("subject", c.subject);
    for (const [field, list] of [["to", c.to], ["cc", c.cc], ["bcc", c.bcc]] as const) for (const a of list) assertAddress(field, a);
    for (const a of [...mailbox.defaultCc, ...mailbox.defaultBcc]) assertAddress("defaultCc/defaultBcc", a);

    const original = c.original ? await this.#original(c.original) : undefined;
    if (original?.purgedAt && c.kind === "forward") {
      throw new RefusedCommandError(`the original's files were removed by the archive's retention on ${original.purgedAt.toISOString()}: it can be answered but no longer forwarded`);
    }
    const { options, envelope, inReplyTo, references } = buildMessage(c, mailbox, rfcMessageId, original);
    if (envelope.to.length === 0) throw new RefusedCommandError("the message has no recipients: give at least one address in to, cc or bcc");

    const objectName = `${c.tenant}/${c.mailbox}/sent/${c.commandId}`;
    const hash = createHash("sha256");
    let size = 0;
    const limit = mailbox.smtp!.maxMessageBytes;
    const counting = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        hash.update(chunk);
        // Stop reading the archive as soon as the limit is passed rather than storing 2 GB first.
        if (size > limit) done(new RefusedCommandError(`the message is over the mailbox's limit of ${limit} bytes (smtp.maxMessageBytes): remove attachments or raise the limit`));
        else done(null, chunk);
      },
    });
    const source = new MailComposer(options).compile().createReadStream();
    // pipe() does not pass a source error on; without this a missing attachment file would leave
    // the object store waiting for the end of a stream that never ends.
    source.once("error", (error: NodeJS.ErrnoException) => {
      counting.destroy(
        error.code === "ENOENT"
          ? new RefusedCommandError(`an attachment of the original is missing from the archive (${error.path ?? "unknown file"}): it cannot be forwarded`)
          : error,
      );
    });
    const stream = source.pipe(counting);
    try {
      await this.#raw!.put({ name: objectName }, Readable.toWeb(stream) as ReadableStream<Uint8Array>);
    } catch (error) {
      await this.#raw!.delete(objectName).catch(() => undefined);
      const refused = error instanceof RefusedCommandError ? error : (error as { cause?: unknown })?.cause;
      if (refused instanceof RefusedCommandError) throw refused;
      if (size > limit) throw new RefusedCommandError(`the message is over the mailbox's limit of ${limit} bytes (smtp.maxMessageBytes): remove attachments or raise the limit`);
      throw error;
    }
    const r = await this.o.pool.query<SendRow>(
      `UPDATE sends SET raw_object = $2, raw_size = $3, raw_sha256 = $4, envelope = $5, in_reply_to = $6, reply_references = $7, updated_at = now()
       WHERE command_id = $1 RETURNING *`,
      [c.commandId, objectName, size, hash.digest("hex"), JSON.stringify(envelope), inReplyTo, references],
    );
    return r.rows[0]!;
  }

  async #send(c: SendRequested, mailbox: Mailbox, row: SendRow, credential: Credential): Promise<string> {
    const attempt = async (credential: Credential) => {
      const object = await this.#raw!.get(row.raw_object!);
      if (!object) throw new Error(`the composed message ${row.raw_object} is gone from the object store`);
      const transport = nodemailer.createTransport(transportOptions(mailbox.smtp!, credential));
      try {
        const info = await transport.sendMail({ envelope: row.envelope!, raw: Readable.fromWeb(object.data as never) });
        // Some recipients refused, others accepted: the message is sent (it cannot be taken back);
        // the refusals are kept with the row and logged for the agent's side to see.
        const rejectedErrors = (info as { rejectedErrors?: { recipient?: string; response?: string; message: string }[] }).rejectedErrors ?? [];
        const refused = rejectedErrors.map((e) => `${e.recipient ?? "?"}: ${e.response ?? e.message}`);
        if (refused.length) {
          this.o.logger.warn({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, refused: refused.length }, "some recipients were refused");
          await this.o.pool.query("UPDATE sends SET last_error = $2 WHERE command_id = $1", [c.commandId, `recipients refused: ${refused.join("; ")}`]);
        }
        return info.response;
      } finally {
        transport.close();
      }
    };
    try {
      return await attempt(credential);
    } catch (error) {
      const e = error as { code?: string; responseCode?: number };
      // An authentication refusal may be a stale token: ask token-service once for a fresh one.
      if (e.code !== "EAUTH" && e.responseCode !== 535) throw error;
      this.o.logger.info({ tenant: c.tenant, mailbox: c.mailbox }, "smtp login refused; asking for a fresh credential once");
      const fresh = await this.#credentials.get(c.tenant, c.mailbox, "smtp", true);
      return await attempt(fresh);
    }
  }

  async #publishSent(c: SendRequested, rfcMessageId: string, row: SendRow): Promise<void> {
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
      envelope: row.envelope!,
      serverResponse: row.server_response ?? "",
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
   * The sent message's bytes: from the object store, or — once the archiver has filed it and
   * removed the object — from the archive on disk.
   */
  async #sentBytes(c: SendRequested, row: SendRow): Promise<Buffer> {
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
  if (original && c.kind === "reply" && to.length === 0) to = replyRecipients(original);
  if (original && c.kind === "reply-all") {
    // The original's other recipients came from a stranger's headers: unusable ones (group
    // syntax, garbage) are left out rather than refusing the agent's whole reply.
    const all = replyAllRecipients(original, mailbox.address);
    to = [...c.to, ...all.to.filter(isValidAddress)];
    cc = [...c.cc, ...all.cc.filter(isValidAddress)];
  }
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
    // Alerts are automatic mail: RFC 3834 tells auto-responders not to answer them.
    headers: c.kind === "alert" ? { "Auto-Submitted": "auto-generated" } : {},
  };
  const envelope = { from: mailbox.address, to: [...recipients.to, ...recipients.cc, ...recipients.bcc] };
  return { options, envelope, inReplyTo, references };
}
