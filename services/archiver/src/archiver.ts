import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { archiveSettingsFor, findMailbox, type ArchiveSettings, type PostroomConfig } from "@postroom/config";
import { MailReceived, MailSent, RAW_MAIL_TTL_MS, type MailArchived, type Names, type ObjectRef } from "@postroom/contracts";
import type { Pool } from "@postroom/db";
import {
  ack,
  DurableConsumer,
  jetStreamOf,
  openKv,
  openObjectStore,
  publishJson,
  type JsMsg,
  type NatsConnection,
  type ObjectStore,
  type Verdict,
} from "@postroom/nats-kit";
import { errorFields, type Logger } from "@postroom/telemetry";
import { detectAutomatic } from "./automatic.js";
import { isDatabaseUnavailable } from "./database.js";
import { cleanStaging, isDiskFull, messageFolder, outboundFolder, StagedFolder } from "./disk.js";
import { DiskGuard, stagingEstimate, type DiskSnapshot, type GuardedMailbox, type Need } from "./disk-guard.js";
import type { ParseLimits, ParseOutcome } from "./parse.js";
import { MAX_UNFINISHED_PARSES, ParseAttempts } from "./parse-attempts.js";
import { ParsePool } from "./parse-pool.js";
import { purgeExpired, type PurgeReport } from "./retention.js";
import { HistoryStore, type MessageRow } from "./store.js";

export interface ArchiverOptions {
  nc: NatsConnection;
  names: Names;
  config: PostroomConfig;
  pool: Pool;
  logger: Logger;
  /** Consume only these tenants (per-tenant deployments); all when absent. */
  tenant?: string;
  parseLimits?: Partial<ParseLimits>;
  /**
   * Received messages archived side by side (default 4). Their database inserts still happen in
   * delivery order, so a reply never overtakes the message it answers when threads are resolved.
   */
  concurrency?: number;
  /** Disk guard tunables; see DiskGuardOptions. */
  disk?: { minFreeBytes?: number; checkIntervalMs?: number; rescanIntervalMs?: number; reminderMs?: number; hysteresisPercent?: number };
  /** How often retention runs (default 6 h); it also runs at start. */
  retentionIntervalMs?: number;
  /** Written into ingestion control entries (default `archiver-<pid>`). */
  replicaId?: string;
}

/**
 * Counters and the disk guards' last measurements: the seam the metrics work reads from
 * (postroom_archiver_*), kept free of any telemetry dependency.
 */
export interface ArchiverStats {
  /** Received messages newly archived. */
  archived: number;
  /** Agents' replies newly archived. */
  sentArchived: number;
  /** Deliveries of a message already archived (confirmed again, nothing written). */
  redeliveries: number;
  parseErrors: number;
  parseTimeouts: number;
  /** Bytes added to the archives (message folders, all files). */
  bytesWritten: number;
  /** Messages left unacknowledged because the archive was full. */
  refusedFull: number;
  purgedMessages: number;
  purgedBytes: number;
  /** Per archive root: usage, quota, free space, alert level, paused. */
  disks(): DiskSnapshot[];
}

/** How long JetStream waits for an ack (or a "still working") before redelivering. */
const ACK_WAIT_MS = 15_000;

type Staged =
  | { kind: "ok"; row: Omit<MessageRow, "messageKey" | "tenant" | "mailbox" | "direction" | "protocol" | "folder" | "uidValidity" | "uid" | "uidl" | "receivedAt" | "archivePath" | "oversize" | "offer">; bytes: number }
  | { kind: "missing" }
  | { kind: "full"; reason: string; need: Need };

/**
 * Writes every received (and every sent) message to disk and PostgreSQL, then confirms with
 * "archived". Idempotent by message key: a redelivery finds the row and confirms again. Parses in
 * a worker pool; checks each archive's room first and pauses ingestion when it is full; holds the
 * message in hand while PostgreSQL is away.
 */
export class Archiver {
  #received: DurableConsumer<MailReceived> | undefined;
  #sent: DurableConsumer<MailSent> | undefined;
  #raw: ObjectStore | undefined;
  #retentionTimer: NodeJS.Timeout | undefined;
  #retentionRun: Promise<PurgeReport[]> | undefined;
  readonly #store: HistoryStore;
  readonly #js;
  readonly #parser: ParsePool;
  readonly #guards = new Map<string, DiskGuard>();
  readonly #stopping = new AbortController();
  /** Resolves when the previously delivered message's insert is done (see #onReceived). */
  #lastInsert: Promise<void> = Promise.resolve();
  readonly stats: ArchiverStats;

  constructor(private readonly o: ArchiverOptions) {
    this.#store = new HistoryStore(o.pool);
    this.#js = jetStreamOf(o.nc);
    this.#parser = new ParsePool(o.parseLimits);
    this.stats = {
      archived: 0,
      sentArchived: 0,
      redeliveries: 0,
      parseErrors: 0,
      parseTimeouts: 0,
      bytesWritten: 0,
      refusedFull: 0,
      purgedMessages: 0,
      purgedBytes: 0,
      disks: () => [...this.#guards.values()].map((g) => g.snapshot()),
    };
  }

  async start(): Promise<void> {
    const { nc, names, config, tenant, pool, logger } = this.o;
    const mailboxes = config.tenants.filter((t) => tenant === undefined || t.id === tenant).flatMap((t) => t.mailboxes.map((m) => ({ tenant: t.id, mailbox: m })));
    const byRoot = new Map<string, { settings: ArchiveSettings; mailboxes: GuardedMailbox[] }>();
    for (const { tenant: t, mailbox: m } of mailboxes) {
      const settings = archiveSettingsFor(config, m);
      // Mailboxes sharing a folder share its usage, so they share one guard (and its quota: the first mailbox's settings).
      const entry = byRoot.get(settings.path) ?? { settings, mailboxes: [] };
      entry.mailboxes.push({ tenant: t, mailbox: m.id, canSend: m.smtp !== undefined });
      byRoot.set(settings.path, entry);
      await pool.query("INSERT INTO mailboxes (tenant, mailbox, address) VALUES ($1, $2, $3) ON CONFLICT (tenant, mailbox) DO UPDATE SET address = EXCLUDED.address", [
        t,
        m.id,
        m.address,
      ]);
    }
    this.#raw = await openObjectStore(nc, names.buckets.rawMail, { replicas: config.nats.replicas, ttlMs: RAW_MAIL_TTL_MS });
    const control = await openKv(nc, names.buckets.control, { replicas: config.nats.replicas });
    for (const [root, { settings, mailboxes: guarded }] of byRoot) {
      await cleanStaging(root);
      const guard = new DiskGuard({
        root,
        settings,
        mailboxes: guarded,
        names,
        js: this.#js,
        control,
        pool,
        logger,
        by: this.o.replicaId ?? `archiver-${process.pid}`,
        ...this.o.disk,
      });
      await guard.start();
      this.#guards.set(root, guard);
    }
    const onProblem = (p: { subject: string; reason: string; action: string; error?: unknown }) =>
      logger.warn({ subject: p.subject, reason: p.reason, action: p.action, ...(p.error ? errorFields(p.error) : {}) }, "message not archived yet");
    this.#received = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.archiverReceived(tenant),
      filterSubject: names.subjects.wildcard.mailReceived(tenant),
      schema: MailReceived,
      handler: (e, msg) => this.#patiently(msg, () => this.#onReceived(e)),
      maxAckPending: this.o.concurrency ?? 4,
      ackWaitMs: ACK_WAIT_MS,
      onProblem,
    });
    this.#sent = new DurableConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.archiverSent(tenant),
      filterSubject: names.subjects.wildcard.mailSent(tenant),
      schema: MailSent,
      handler: (e, msg) => this.#patiently(msg, () => this.#onSent(e)),
      ackWaitMs: ACK_WAIT_MS,
      onProblem,
    });
    await this.#received.start();
    await this.#sent.start();
    this.#retentionRun = this.purgeNow();
    this.#retentionTimer = setInterval(() => {
      this.#retentionRun ??= this.purgeNow();
    }, this.o.retentionIntervalMs ?? 6 * 3600_000);
    this.#retentionTimer.unref();
  }

  async stop(): Promise<void> {
    // Wake handlers waiting for PostgreSQL so the consumers can finish; then stop taking messages
    // (the ones in hand complete or go back unacknowledged); then the guards, retention and the
    // parser, which the handlers used.
    this.#stopping.abort();
    await this.#received?.stop();
    await this.#sent?.stop();
    clearInterval(this.#retentionTimer);
    await this.#retentionRun?.catch(() => undefined);
    for (const g of this.#guards.values()) await g.stop();
    await this.#parser.stop();
  }

  /**
   * Retention: for each mailbox with `retentionDays`, removes the files of older messages and
   * marks their rows purged. Also runs at start and every `retentionIntervalMs`.
   */
  async purgeNow(): Promise<PurgeReport[]> {
    const reports: PurgeReport[] = [];
    try {
      for (const t of this.o.config.tenants) {
        if (this.o.tenant !== undefined && t.id !== this.o.tenant) continue;
        for (const m of t.mailboxes) {
          const settings = archiveSettingsFor(this.o.config, m);
          if (settings.retentionDays === undefined) continue;
          const report = await purgeExpired({ pool: this.o.pool, root: settings.path, tenant: t.id, mailbox: m.id, retentionDays: settings.retentionDays });
          reports.push(report);
          this.stats.purgedMessages += report.messages;
          this.stats.purgedBytes += report.bytes;
          if (report.messages > 0) {
            this.o.logger.info({ ...report, retentionDays: settings.retentionDays }, "retention purged message files; rows kept");
            await this.#guards.get(settings.path)?.released(report.bytes);
          }
        }
      }
    } catch (error) {
      this.o.logger.warn(errorFields(error), "retention run failed; retrying at the next run");
    } finally {
      this.#retentionRun = undefined;
    }
    return reports;
  }

  /**
   * Runs one message's work; while PostgreSQL is unreachable, waits with the message in hand
   * (telling JetStream it is still being worked on) and tries again, so a database outage pauses
   * the archive in order and it catches up as soon as the database is back. Everything the work
   * does is idempotent, so running it again after a half-done attempt is safe.
   */
  async #patiently(msg: JsMsg, work: () => Promise<Verdict>): Promise<Verdict> {
    // A short ack wait, kept alive while we work: after a crash the messages that were in hand
    // come back within ACK_WAIT_MS instead of minutes, yet a slow 25 MB message is never
    // redelivered to another replica while this one is still on it.
    const heartbeat = setInterval(() => msg.working(), ACK_WAIT_MS / 3);
    try {
      return await this.#attempts(msg, work);
    } finally {
      clearInterval(heartbeat);
    }
  }

  async #attempts(msg: JsMsg, work: () => Promise<Verdict>): Promise<Verdict> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await work();
      } catch (error) {
        if (!isDatabaseUnavailable(error) || this.#stopping.signal.aborted) throw error;
        if (attempt === 1 || attempt % 10 === 0) this.o.logger.warn({ attempt, ...errorFields(error) }, "database unavailable; holding the message until it returns");
        msg.working();
        const delay = Math.min(5_000, 250 * 2 ** Math.min(attempt, 5));
        await sleep(delay / 2 + Math.random() * (delay / 2), undefined, { signal: this.#stopping.signal }).catch(() => undefined);
        if (this.#stopping.signal.aborted) throw error;
        msg.working();
      }
    }
  }

  async #onReceived(e: MailReceived): Promise<Verdict> {
    // Taken before the first await, so tickets follow delivery (stream) order: staging and parsing
    // run side by side, the inserts that resolve conversations run in order.
    const previous = this.#lastInsert;
    let release!: () => void;
    this.#lastInsert = new Promise<void>((r) => (release = r));
    try {
      return await this.#archiveReceived(e, previous, release);
    } finally {
      release();
    }
  }

  async #archiveReceived(e: MailReceived, previous: Promise<void>, inserted: () => void): Promise<Verdict> {
    const log = this.o.logger.child({ tenant: e.source.tenant, mailbox: e.source.mailbox, messageKey: e.messageKey });
    const ref = findMailbox(this.o.config, e.source.tenant, e.source.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.source.tenant}/${e.source.mailbox} is not configured` };
    let stored = await this.#store.find(e.messageKey);
    let row: Pick<MessageRow, "subject" | "from" | "to" | "cc" | "flags" | "parseError" | "rfcMessageId" | "size" | "sha256"> | undefined;
    if (!stored) {
      const root = archiveSettingsFor(this.o.config, ref.mailbox).path;
      const target = messageFolder(root, e.source, new Date(e.receivedAt));
      const staged = await this.#writeMessage(root, target, e.raw, e.messageKey);
      if (staged.kind === "missing") {
        // The raw object is gone but no row exists: the poller must fetch it again.
        return { action: "term", reason: "raw message missing from the object store; the poller re-fetches after a cursor reset" };
      }
      if (staged.kind === "full") return this.#refuse(root, staged.reason, staged.need);
      const s = e.source;
      const full: MessageRow = {
        ...staged.row,
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
      const guard = this.#guards.get(root);
      try {
        await previous;
        stored = await this.#store.insert(full);
        // The next message may resolve its conversation now; publishing this one's confirmation need not hold it up.
        inserted();
      } catch (error) {
        guard?.unreserve(staged.bytes, target);
        throw error;
      }
      row = full;
      if (stored.inserted) {
        this.stats.archived++;
        this.stats.bytesWritten += staged.bytes;
        await guard?.committed(staged.bytes, target);
      } else {
        guard?.unreserve(staged.bytes, target);
      }
      log.info({ inserted: stored.inserted, parseError: full.parseError, size: full.size }, "message archived");
    } else {
      this.stats.redeliveries++;
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
    // Not awaited: the raw copy is only a transport buffer (7-day TTL), and a delete that never
    // happens (crash) costs some object-store space for a while, nothing else.
    void this.#raw!.delete(e.raw.name).catch(() => undefined);
    return ack;
  }

  async #onSent(e: MailSent): Promise<Verdict> {
    const ref = findMailbox(this.o.config, e.tenant, e.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.tenant}/${e.mailbox} is not configured` };
    const key = `${e.tenant}/${e.mailbox}/sent/${e.commandId}`;
    if (await this.#store.find(key)) return ack;
    const root = archiveSettingsFor(this.o.config, ref.mailbox).path;
    const target = outboundFolder(root, e.tenant, e.mailbox, e.commandId, new Date(e.sentAt));
    const staged = await this.#writeMessage(root, target, e.raw, key);
    if (staged.kind === "missing") return { action: "term", reason: "sent message missing from the object store" };
    if (staged.kind === "full") return this.#refuse(root, staged.reason, staged.need);
    const guard = this.#guards.get(root);
    const row: MessageRow = {
      ...staged.row,
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
    };
    let stored;
    try {
      stored = await this.#store.insert(row);
    } catch (error) {
      guard?.unreserve(staged.bytes, target);
      throw error;
    }
    if (stored.inserted) {
      this.stats.sentArchived++;
      this.stats.bytesWritten += staged.bytes;
      await guard?.committed(staged.bytes, target);
    } else {
      guard?.unreserve(staged.bytes, target);
    }
    await this.#raw!.delete(e.raw.name).catch(() => undefined);
    this.o.logger.info({ tenant: e.tenant, mailbox: e.mailbox, commandId: e.commandId }, "sent message archived");
    return ack;
  }

  /** The archive cannot take this message: pause ingestion, alert, and leave the message unacknowledged. */
  async #refuse(root: string, reason: string, need: Need): Promise<Verdict> {
    this.stats.refusedFull++;
    const guard = this.#guards.get(root);
    await guard?.block(reason, need);
    // Redelivered after the guard's check interval; by then it knows whether there is room.
    return { action: "retry", delayMs: this.o.disk?.checkIntervalMs ?? 15_000, reason };
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
   * Streams the raw message into a staging folder, parses it in the worker pool (which writes the
   * parts), writes meta.json, checks the result fits the archive's quota, and moves the folder
   * into place. A full disk discards the staging folder and says so; nothing half-written remains.
   */
  async #writeMessage(root: string, target: string, raw: ObjectRef, key: string): Promise<Staged> {
    const guard = this.#guards.get(root);
    if (guard) {
      const room = await guard.admit(raw.size);
      if (!room.ok) return { kind: "full", reason: room.reason, need: { quotaBytes: raw.size, diskBytes: stagingEstimate(raw.size) } };
    }
    const object = await this.#raw!.get(raw.name);
    if (!object) return { kind: "missing" };
    const staged = await StagedFolder.create(root);
    try {
      const written = await staged.writeStream("message.eml", object.data);
      if (written.sha256 !== raw.sha256) throw new Error(`raw message hash mismatch: expected ${raw.sha256}, read ${written.sha256}`);
      const attempts = new ParseAttempts(root);
      const earlier = await attempts.begin(key);
      const parsed: ParseOutcome =
        earlier >= MAX_UNFINISHED_PARSES
          ? { ok: false, error: `not parsed: ${earlier} earlier parse attempts never finished (the parser crashed or ran out of memory)`, timedOut: false }
          : await this.#parser.parse(join(staged.path, "message.eml"), staged.partsPath, written.size);
      await attempts.end(key);
      if (!parsed.ok && parsed.stopped) throw new Error("archiver stopping; the message is archived after the restart");
      const mail = parsed.ok ? parsed.summary : undefined;
      if (!parsed.ok) {
        this.stats.parseErrors++;
        if (parsed.timedOut) this.stats.parseTimeouts++;
      }
      if (mail) staged.addBytes(mail.partBytes);
      const headerMap = new Map<string, string>(mail ? mail.headerLines.map(([key, line]) => [key, line.slice(line.indexOf(":") + 1).trim()]) : []);
      const from = mail?.from ?? null;
      const row = {
        // A message without Message-ID gets a stable one derived from its bytes: the same
        // message always gets the same id, and threading can still point at it.
        rfcMessageId: mail?.messageId ?? `<${written.sha256.slice(0, 32)}@derived.postroom.invalid>`,
        inReplyTo: mail?.inReplyTo ?? null,
        references: mail?.references ?? [],
        subject: mail?.subject ?? "",
        from,
        to: mail?.to ?? [],
        cc: mail?.cc ?? [],
        bcc: mail?.bcc ?? [],
        dateHeader: mail?.date ? new Date(mail.date) : null,
        size: written.size,
        sha256: written.sha256,
        headers: mail?.headerLines ?? [],
        textBody: mail?.text ?? null,
        htmlBody: mail?.html ?? null,
        flags: detectAutomatic(headerMap, from?.address ?? "", mail?.contentType ?? ""),
        parseError: parsed.ok ? null : parsed.error,
        attachments: mail?.attachments ?? [],
      };
      await staged.writeFile(
        "meta.json",
        JSON.stringify(
          {
            rfcMessageId: row.rfcMessageId,
            messageIdDerived: !mail?.messageId,
            subject: row.subject,
            from: row.from,
            to: row.to,
            cc: row.cc,
            date: row.dateHeader,
            size: row.size,
            sha256: row.sha256,
            flags: row.flags,
            parseError: row.parseError,
            attachments: row.attachments,
          },
          null,
          2,
        ),
      );
      const fits = guard?.reserve(staged.bytes, target) ?? { ok: true };
      if (!fits.ok) {
        await staged.discard();
        return { kind: "full", reason: fits.reason, need: { quotaBytes: staged.bytes, diskBytes: stagingEstimate(raw.size) } };
      }
      try {
        await staged.commit(target);
      } catch (error) {
        guard?.unreserve(staged.bytes, target);
        throw error;
      }
      return { kind: "ok", row, bytes: staged.bytes };
    } catch (error) {
      await staged.discard();
      if (isDiskFull(error)) {
        const reason = `archive filesystem full while writing (${(error as NodeJS.ErrnoException).code})`;
        return { kind: "full", reason, need: { quotaBytes: raw.size, diskBytes: stagingEstimate(raw.size) } };
      }
      throw error;
    }
  }
}
