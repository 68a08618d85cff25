import { createHash } from "node:crypto";
import { join } from "node:path";
import { archiveSettingsFor, findMailbox, type PostroomConfig } from "@postroom/config";
import { MailReceived, MailSent, type MailArchived, type Names, type ObjectRef } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import { ack, DurableConsumer, jetStreamOf, openObjectStore, publishJson, type NatsConnection, type ObjectStore, type Verdict } from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import type { AddressObject, ParsedMail } from "mailparser";
import { detectAutomatic } from "./automatic.js";
import { cleanStaging, messageFolder, outboundFolder, StagedFolder } from "./disk.js";
import { sanitizeFileName } from "./filenames.js";
import { parseMessage, type ParseLimits } from "./parse.js";
import { HistoryStore, type AttachmentRow, type MessageRow } from "./store.js";

export interface ArchiverOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  pool: Pool;
  logger: Logger;
  /** Consume only these tenants (per-tenant deployments); all when absent. */
  tenant?: string;
  parseLimits?: Partial<ParseLimits>;
}

/**
 * Writes every received (and every sent) message to disk and PostgreSQL, then confirms with
 * "archived". Idempotent by message key: a redelivery finds the row and confirms again.
 */
export class Archiver {
  #received: DurableConsumer<MailReceived> | undefined;
  #sent: DurableConsumer<MailSent> | undefined;
  #raw: ObjectStore | undefined;
  readonly #store: HistoryStore;
  readonly #js;
  readonly #limits: ParseLimits;

  constructor(private readonly o: ArchiverOptions) {
    this.#store = new HistoryStore(o.pool);
    this.#js = jetStreamOf(o.nc);
    this.#limits = { maxBytes: 64 * 1024 * 1024, timeoutMs: 30_000, ...o.parseLimits };
  }

  async start(): Promise<void> {
    const { nc, names, config, tenant } = this.o;
    const roots = new Set([config.archive.path, ...config.tenants.flatMap((t) => t.mailboxes.map((m) => archiveSettingsFor(config, m).path))]);
    for (const root of roots) await cleanStaging(root);
    this.#raw = await openObjectStore(nc, names.buckets.rawMail, { replicas: config.nats.replicas, ttlMs: 7 * 24 * 3600 * 1000 });
    const onProblem = (p: { subject: string; reason: string; action: string; error?: unknown }) =>
      this.o.logger.warn({ subject: p.subject, reason: p.reason, action: p.action, ...(p.error ? errorFields(p.error) : {}) }, "message not archived yet");
    this.#received = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.archiverReceived(tenant),
      filterSubject: names.subjects.wildcard.mailReceived(tenant),
      schema: MailReceived,
      handler: (e) => this.#onReceived(e),
      onProblem,
    });
    this.#sent = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.archiverSent(tenant),
      filterSubject: names.subjects.wildcard.mailSent(tenant),
      schema: MailSent,
      handler: (e) => this.#onSent(e),
      onProblem,
    });
    await this.#received.start();
    await this.#sent.start();
  }

  async stop(): Promise<void> {
    await this.#received?.stop();
    await this.#sent?.stop();
  }

  async #onReceived(e: MailReceived): Promise<Verdict> {
    const log = this.o.logger.child({ tenant: e.source.tenant, mailbox: e.source.mailbox, messageKey: e.messageKey });
    const ref = findMailbox(this.o.config, e.source.tenant, e.source.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.source.tenant}/${e.source.mailbox} is not configured` };
    let stored = await this.#store.find(e.messageKey);
    let row: Pick<MessageRow, "subject" | "from" | "to" | "cc" | "flags" | "parseError" | "rfcMessageId" | "size" | "sha256"> | undefined;
    if (!stored) {
      const root = archiveSettingsFor(this.o.config, ref.mailbox).path;
      const target = messageFolder(root, e.source, new Date(e.receivedAt));
      const built = await this.#writeMessage(root, target, e.raw);
      if (!built) {
        // The raw object is gone but no row exists: the poller must fetch it again.
        return { action: "term", reason: "raw message missing from the object store; the poller re-fetches after a cursor reset" };
      }
      const s = e.source;
      const full: MessageRow = {
        ...built,
        messageKey: e.messageKey,
        tenant: s.tenant,
        mailbox: s.mailbox,
        direction: "inbound",
        protocol: s.protocol,
        folder: s.protocol === "imap" ? s.folder : null,
        uidValidity: s.protocol === "imap" ? s.uidValidity : null,
        uid: s.protocol === "imap" ? s.uid : null,
        uidl: s.protocol === "pop3" ? s.uidl : null,
        receivedAt: new Date(e.receivedAt),
        archivePath: target,
        oversize: e.oversize,
        offer: e.offer,
      };
      stored = await this.#store.insert(full);
      row = full;
      log.info({ inserted: stored.inserted, parseError: full.parseError, size: full.size }, "message archived");
    } else {
      log.info("message already archived; confirming again");
    }
    const details = row ?? (await this.#describe(stored.id));
    const archived: MailArchived = {
      version: "v1",
      messageKey: e.messageKey,
      tenant: e.source.tenant,
      mailbox: e.source.mailbox,
      messageId: stored.id,
      conversationId: stored.conversationId,
      archivePath: stored.archivePath,
      size: details.size,
      sha256: details.sha256,
      rfcMessageId: details.rfcMessageId,
      subject: details.subject,
      from: details.from?.address ?? "",
      to: details.to.map((a) => a.address),
      cc: details.cc.map((a) => a.address),
      flags: details.flags,
      parseError: details.parseError,
      offer: e.offer,
      receivedAt: e.receivedAt,
      archivedAt: new Date().toISOString(),
      source: e.source,
    };
    await publishJson(this.#js, this.o.names.subjects.mailArchived(e.source.tenant, e.source.mailbox), archived, { msgId: `${e.messageKey}#archived` });
    await this.#raw!.delete(e.raw.name).catch(() => undefined);
    return ack;
  }

  async #onSent(e: MailSent): Promise<Verdict> {
    const ref = findMailbox(this.o.config, e.tenant, e.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.tenant}/${e.mailbox} is not configured` };
    const key = `${e.tenant}/${e.mailbox}/sent/${e.commandId}`;
    if (await this.#store.find(key)) return ack;
    const root = archiveSettingsFor(this.o.config, ref.mailbox).path;
    const target = outboundFolder(root, e.tenant, e.mailbox, e.commandId, new Date(e.sentAt));
    const built = await this.#writeMessage(root, target, e.raw);
    if (!built) return { action: "term", reason: "sent message missing from the object store" };
    await this.#store.insert({
      ...built,
      messageKey: key,
      tenant: e.tenant,
      mailbox: e.mailbox,
      direction: "outbound",
      protocol: "smtp",
      folder: null,
      uidValidity: null,
      uid: null,
      uidl: null,
      // Threading must not depend on how the parser reads our own headers.
      rfcMessageId: e.rfcMessageId,
      inReplyTo: e.inReplyTo,
      references: e.references,
      receivedAt: new Date(e.sentAt),
      archivePath: target,
      oversize: false,
      offer: false,
    });
    await this.#raw!.delete(e.raw.name).catch(() => undefined);
    this.o.logger.info({ tenant: e.tenant, mailbox: e.mailbox, commandId: e.commandId }, "sent message archived");
    return ack;
  }

  async #describe(id: string) {
    const r = await this.o.pool.query<{
      subject: string; from_address: string; size: string; sha256: string; rfc_message_id: string; parse_error: string | null;
      is_auto_reply: boolean; is_bounce: boolean; is_loop: boolean; to: string[] | null; cc: string[] | null;
    }>(
      `SELECT subject, from_address, size, sha256, rfc_message_id, parse_error, is_auto_reply, is_bounce, is_loop,
        (SELECT array_agg(address) FROM addresses WHERE message_id = m.id AND role = 'to') AS to,
        (SELECT array_agg(address) FROM addresses WHERE message_id = m.id AND role = 'cc') AS cc
       FROM messages m WHERE id = $1`,
      [id],
    );
    const x = r.rows[0]!;
    return {
      subject: x.subject,
      from: { address: x.from_address, name: null },
      to: (x.to ?? []).map((address) => ({ address, name: null })),
      cc: (x.cc ?? []).map((address) => ({ address, name: null })),
      flags: { autoReply: x.is_auto_reply, bounce: x.is_bounce, loop: x.is_loop },
      parseError: x.parse_error,
      rfcMessageId: x.rfc_message_id,
      size: Number(x.size),
      sha256: x.sha256,
    };
  }

  /**
   * Streams the raw message to disk, parses it, writes its parts and metadata, and moves the
   * folder into place. Returns undefined when the raw object no longer exists.
   */
  async #writeMessage(root: string, target: string, raw: ObjectRef) {
    const object = await this.#raw!.get(raw.name);
    if (!object) return undefined;
    const staged = await StagedFolder.create(root);
    try {
      const written = await staged.writeStream("message.eml", object.data);
      if (!(await object.error)) {
        /* the object store verified its own digest */
      }
      if (written.sha256 !== raw.sha256) throw new Error(`raw message hash mismatch: expected ${raw.sha256}, read ${written.sha256}`);
      const parsed = await parseMessage(join(staged.path, "message.eml"), written.size, this.#limits);
      const mail = parsed.ok ? parsed.mail : undefined;
      const attachments = await this.#writeParts(staged, mail);
      const headers: [string, string][] = mail ? mail.headerLines.map((h) => [h.key, h.line]) : [];
      const headerMap = new Map<string, string>(mail ? mail.headerLines.map((h) => [h.key, h.line.slice(h.line.indexOf(":") + 1).trim()]) : []);
      const from = firstAddress(mail?.from);
      const rfcMessageId = mail?.messageId ?? `<${written.sha256.slice(0, 32)}@derived.postroom.invalid>`;
      const refs = mail?.references === undefined ? [] : Array.isArray(mail.references) ? mail.references : [mail.references];
      const row = {
        rfcMessageId,
        inReplyTo: mail?.inReplyTo ?? null,
        references: refs,
        subject: mail?.subject ?? "",
        from,
        to: addresses(mail?.to),
        cc: addresses(mail?.cc),
        bcc: addresses(mail?.bcc),
        dateHeader: mail?.date && !Number.isNaN(mail.date.getTime()) ? mail.date : null,
        size: written.size,
        sha256: written.sha256,
        headers,
        textBody: mail?.text ?? null,
        htmlBody: typeof mail?.html === "string" ? mail.html : null,
        flags: detectAutomatic(headerMap, from?.address ?? "", headerMap.get("content-type") ?? ""),
        parseError: parsed.ok ? null : parsed.error,
        attachments,
      };
      await staged.writeFile(
        "meta.json",
        JSON.stringify(
          {
            rfcMessageId: row.rfcMessageId,
            subject: row.subject,
            from: row.from,
            to: row.to,
            cc: row.cc,
            date: row.dateHeader,
            size: row.size,
            sha256: row.sha256,
            flags: row.flags,
            parseError: row.parseError,
            attachments,
          },
          null,
          2,
        ),
      );
      await staged.commit(target);
      return row;
    } catch (error) {
      await staged.discard();
      throw error;
    }
  }

  async #writeParts(staged: StagedFolder, mail: ParsedMail | undefined): Promise<AttachmentRow[]> {
    if (!mail) return [];
    const taken = new Set<string>();
    const rows: AttachmentRow[] = [];
    let index = 0;
    for (const a of mail.attachments) {
      index++;
      const storedName = sanitizeFileName(a.filename, index, taken);
      await staged.writeFile(join("parts", storedName), a.content);
      rows.push({
        partIndex: index,
        originalName: a.filename ?? null,
        storedName,
        contentType: a.contentType,
        contentId: a.contentId ?? a.cid ?? null,
        inline: a.contentDisposition === "inline" || a.related === true,
        size: a.content.length,
        sha256: createHash("sha256").update(a.content).digest("hex"),
      });
    }
    return rows;
  }
}

function addresses(field: AddressObject | AddressObject[] | undefined): { address: string; name: string | null }[] {
  if (!field) return [];
  const list = Array.isArray(field) ? field : [field];
  return list.flatMap((f) => f.value).flatMap((v) => (v.group ? v.group : [v])).filter((v) => v.address).map((v) => ({ address: v.address!.toLowerCase(), name: v.name || null }));
}

function firstAddress(field: AddressObject | AddressObject[] | undefined) {
  return addresses(field)[0] ?? null;
}
