import { Readable } from "node:stream";
import { findMailbox, type Mailbox, type PostroomConfig } from "@postroom/config";
import { SendRequested, type MailSent, type Names, type SendFailed } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import {
  ack,
  CredentialClient,
  DurableConsumer,
  jetStreamOf,
  openObjectStore,
  publishJson,
  type NatsConnection,
  type ObjectStore,
  type Verdict,
} from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import { createHash } from "node:crypto";
import nodemailer from "nodemailer";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import { classifySmtpError } from "./classify.js";
import { assertSafeHeader, forwardSubject, mergeRecipients, messageIdFor, replyReferences, replySubject, UnsafeHeaderError } from "./compose.js";

export interface SenderOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  pool: Pool;
  logger: Logger;
  tenant?: string;
}

interface Original {
  rfcMessageId: string;
  references: string[];
  subject: string;
  from: string;
  text: string | null;
}

/**
 * Sends agents' replies. The send is recorded before and after talking to the server
 * (pending → sending → sent | failed), so a redelivered command whose row says "sent" is not
 * sent again. The one window left is between the server's 250 and the "sent" row: a crash
 * exactly there re-sends, with the same Message-ID, so the receiver's client can fold it.
 */
export class SmtpSender {
  #consumer: DurableConsumer<SendRequested> | undefined;
  #raw: ObjectStore | undefined;
  readonly #credentials: CredentialClient;
  readonly #js;

  constructor(private readonly o: SenderOptions) {
    this.#credentials = new CredentialClient(o.nc, o.names);
    this.#js = jetStreamOf(o.nc);
  }

  async start(): Promise<void> {
    const { nc, names, tenant, config } = this.o;
    this.#raw = await openObjectStore(nc, names.buckets.rawMail, { replicas: config.nats.replicas, ttlMs: 7 * 24 * 3600 * 1000 });
    this.#consumer = new DurableConsumer({
      nc,
      stream: names.streams.sendCommands,
      durable: names.consumers.smtpSender(tenant),
      filterSubject: names.subjects.wildcard.mailSend(tenant),
      schema: SendRequested,
      handler: (c) => this.#onCommand(c),
      ackWaitMs: 5 * 60_000,
      onProblem: (p) => this.o.logger.warn({ subject: p.subject, reason: p.reason, ...(p.error ? errorFields(p.error) : {}) }, "send deferred"),
    });
    await this.#consumer.start();
  }

  async stop(): Promise<void> {
    await this.#consumer?.stop();
  }

  async #onCommand(c: SendRequested): Promise<Verdict> {
    const log = this.o.logger.child({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId });
    const ref = findMailbox(this.o.config, c.tenant, c.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${c.tenant}/${c.mailbox} is not configured` };
    const { mailbox } = ref;
    const rfcMessageId = messageIdFor(c.commandId, mailbox.address);
    const state = await this.#record(c, rfcMessageId);
    if (state === "sent" || state === "failed") {
      log.info({ state }, "command already handled; not sending again");
      return ack;
    }
    if (!mailbox.smtp) return this.#fail(c, false, "the mailbox has no smtp settings", null, null, true);

    let raw: Buffer;
    let envelope: { from: string; to: string[] };
    let original: Original | undefined;
    try {
      original = c.original ? await this.#original(c.original) : undefined;
      ({ raw, envelope } = await this.#compose(c, mailbox, rfcMessageId, original));
    } catch (error) {
      if (error instanceof UnsafeHeaderError) return this.#fail(c, true, error.message, null, null);
      throw error;
    }

    await this.o.pool.query("UPDATE sends SET state = 'sending', attempts = attempts + 1, updated_at = now() WHERE command_id = $1", [c.commandId]);
    let response: string;
    try {
      response = await this.#send(c, mailbox, raw, envelope);
    } catch (error) {
      const verdict = classifySmtpError(error as Parameters<typeof classifySmtpError>[0]);
      log.warn({ verdict: verdict.kind, reason: verdict.reason }, "smtp send failed");
      if (verdict.kind === "retry") {
        await this.o.pool.query("UPDATE sends SET state = 'pending', last_error = $2, updated_at = now() WHERE command_id = $1", [c.commandId, verdict.reason]);
        throw new Error(verdict.reason, { cause: error });
      }
      const code = (error as { responseCode?: number }).responseCode ?? null;
      return this.#fail(c, true, verdict.kind === "needs-admin" ? `${verdict.reason} — fix: ${verdict.fix}` : verdict.reason, verdict.reason, code);
    }
    await this.o.pool.query("UPDATE sends SET state = 'sent', server_response = $2, updated_at = now() WHERE command_id = $1", [c.commandId, response]);
    const objectName = `${c.tenant}/${c.mailbox}/sent/${c.commandId}`;
    await this.#raw!.put({ name: objectName }, Readable.toWeb(Readable.from([raw])) as ReadableStream<Uint8Array>);
    const sent: MailSent = {
      version: "v1",
      commandId: c.commandId,
      tenant: c.tenant,
      mailbox: c.mailbox,
      rfcMessageId,
      inReplyTo: original?.rfcMessageId ?? null,
      references: original ? replyReferences(original) : [],
      raw: { bucket: this.o.names.buckets.rawMail, name: objectName, size: raw.length, sha256: createHash("sha256").update(raw).digest("hex") },
      envelope,
      serverResponse: response,
      ...(c.sessionId ? { sessionId: c.sessionId } : {}),
      sentAt: new Date().toISOString(),
    };
    await publishJson(this.#js, this.o.names.subjects.mailSent(c.tenant, c.mailbox), sent, { msgId: `${c.commandId}#sent` });
    log.info({ response }, "message sent");
    return ack;
  }

  /** Inserts the pending row if new; returns the current state. */
  async #record(c: SendRequested, rfcMessageId: string): Promise<string> {
    await this.o.pool.query(
      `INSERT INTO sends (command_id, tenant, mailbox, kind, state, rfc_message_id) VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT (command_id) DO NOTHING`,
      [c.commandId, c.tenant, c.mailbox, c.kind, rfcMessageId],
    );
    const r = await this.o.pool.query<{ state: string }>("SELECT state FROM sends WHERE command_id = $1", [c.commandId]);
    return r.rows[0]!.state;
  }

  async #original(messageKey: string): Promise<Original> {
    const r = await this.o.pool.query<{ rfc_message_id: string; references: string[]; subject: string; from_address: string; text_body: string | null }>(
      `SELECT rfc_message_id, "references", subject, from_address, text_body FROM messages WHERE message_key = $1`,
      [messageKey],
    );
    const row = r.rows[0];
    if (!row) throw new Error(`original message ${messageKey} is not archived (yet)`);
    return { rfcMessageId: row.rfc_message_id, references: row.references, subject: row.subject, from: row.from_address, text: row.text_body };
  }

  async #compose(c: SendRequested, mailbox: Mailbox, messageId: string, original: Original | undefined) {
    const subject =
      c.subject ?? (original ? (c.kind === "forward" ? forwardSubject(original.subject) : replySubject(original.subject)) : "(no subject)");
    assertSafeHeader("subject", subject);
    for (const a of [...c.to, ...c.cc, ...c.bcc]) assertSafeHeader("address", a);
    const recipients = mergeRecipients(c.to, [...c.cc, ...mailbox.defaultCc], [...c.bcc, ...mailbox.defaultBcc]);
    const quoted = original?.text ? `\n\n${original.from} wrote:\n${original.text.split("\n").map((l) => `> ${l}`).join("\n")}` : "";
    const composer = new MailComposer({
      from: mailbox.displayName ? { name: mailbox.displayName, address: mailbox.address } : mailbox.address,
      to: recipients.to,
      cc: recipients.cc,
      bcc: recipients.bcc,
      subject,
      text: c.text + quoted,
      ...(c.html ? { html: c.html } : {}),
      messageId,
      ...(original ? { inReplyTo: original.rfcMessageId, references: replyReferences(original) } : {}),
      headers: c.kind === "alert" ? { "Auto-Submitted": "auto-generated" } : {},
    });
    const raw = await composer.compile().build();
    const envelope = { from: mailbox.address, to: [...recipients.to, ...recipients.cc, ...recipients.bcc] };
    return { raw, envelope };
  }

  async #send(c: SendRequested, mailbox: Mailbox, raw: Buffer, envelope: { from: string; to: string[] }): Promise<string> {
    const smtp = mailbox.smtp!;
    const credential = await this.#credentials.get(c.tenant, c.mailbox, "smtp");
    const transport = nodemailer.createTransport({
      host: smtp.host,
      port: smtp.port ?? (smtp.tls === "implicit" ? 465 : smtp.tls === "starttls" ? 587 : 25),
      secure: smtp.tls === "implicit",
      requireTLS: smtp.tls === "starttls",
      ignoreTLS: smtp.tls === "none",
      tls: { rejectUnauthorized: smtp.verifyCertificate },
      auth:
        credential.mechanism === "PLAIN"
          ? { user: credential.username, pass: credential.password }
          : { type: "OAuth2", user: credential.username, accessToken: credential.accessToken },
      connectionTimeout: 30_000,
      greetingTimeout: 30_000,
      socketTimeout: 60_000,
    });
    try {
      const info = await transport.sendMail({ envelope, raw });
      return info.response;
    } finally {
      transport.close();
    }
  }

  async #fail(c: SendRequested, permanent: boolean, reason: string, serverResponse: string | null, code: number | null, record = true): Promise<Verdict> {
    if (record) {
      await this.o.pool.query("UPDATE sends SET state = 'failed', last_error = $2, updated_at = now() WHERE command_id = $1", [c.commandId, reason]);
    }
    const failed: SendFailed = {
      version: "v1",
      commandId: c.commandId,
      tenant: c.tenant,
      mailbox: c.mailbox,
      permanent,
      reason,
      serverResponse,
      responseCode: code,
      failedAt: new Date().toISOString(),
    };
    await publishJson(this.#js, this.o.names.subjects.mailSendFailed(c.tenant, c.mailbox), failed, { msgId: `${c.commandId}#failed` });
    this.o.logger.warn({ tenant: c.tenant, mailbox: c.mailbox, commandId: c.commandId, reason }, "send failed");
    return ack;
  }
}
