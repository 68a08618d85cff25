import { createHash } from "node:crypto";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { archiveSettingsFor, classificationAction, findMailbox, type ArchiveSettings, type PostroomConfig } from "@postroom/config";
import { MailReceived, MailSent, RAW_MAIL_TTL_MS, type Classification, type LoopAlert, type MailArchived, type Names, type ObjectRef, type SendRequested } from "@postroom/contracts";
import { recordAudit, untilDatabaseAnswers, type Pool } from "@postroom/db";
import {
  ack,
  backoffMs,
  BatchConsumer,
  DurableConsumer,
  PublishWindow,
  type BatchItem,
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
import { addressesIn, classifyAutomatic, flagsOf, type MailboxIdentity } from "./classify.js";
import { parseMailDate } from "./dates.js";
import { isDatabaseUnavailable } from "./database.js";
import { cleanStaging, isDiskFull, messageFolder, outboundFolder, StagedFolder, syncFolders } from "./disk.js";
import { findStored, insertBatch, type BatchRow } from "./batch-store.js";
import { DiskGuard, stagingEstimate, type DiskSnapshot, type GuardedMailbox, type Need } from "./disk-guard.js";
import { readRawHeaders, type ParseLimits, type ParseOutcome } from "./parse.js";
import { MAX_UNFINISHED_PARSES, ParseAttempts } from "./parse-attempts.js";
import { ParsePool } from "./parse-pool.js";
import { purgeExpired, type PurgeReport } from "./retention.js";
import { HistoryStore, type MessageRow, type StoredMessage } from "./store.js";

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
   * Message folders of one batch written side by side (default 8). The batch's database insert is
   * one transaction in delivery order, so a reply never overtakes the message it answers.
   */
  concurrency?: number;
  /** Most received messages archived in one group commit (default 256). */
  maxBatch?: number;
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
  /** Received messages newly archived, by classification (after the loop breaker). */
  classified: Record<Classification, number>;
  /** Messages the loop breaker held back from agents, and the alerts it raised. */
  loopBreakerHeld: number;
  loopAlerts: number;
  /** Per archive root: usage, quota, free space, alert level, paused. */
  disks(): DiskSnapshot[];
}

/** How long JetStream waits for an ack (or a "still working") before redelivering. */
const ACK_WAIT_MS = 15_000;
/** Sent messages archived at once by one archiver. */
const SENT_CONCURRENCY = 4;
/** Received messages in one group commit, at most; a backlog fills them, a single arrival goes alone. */
const MAX_BATCH = 256;
/**
 * Event bytes in one batch, at most (inline raw messages are up to ~700 KB of base64 each): with
 * the next batch pulled meanwhile, the archiver holds about twice this in events.
 */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;

type Staged =
  | { kind: "ok"; row: Omit<MessageRow, "messageKey" | "tenant" | "mailbox" | "direction" | "protocol" | "folder" | "uidValidity" | "uid" | "uidl" | "receivedAt" | "archivePath" | "oversize" | "offer">; bytes: number }
  | { kind: "missing" }
  | { kind: "full"; reason: string; need: Need };

/** What a confirmation says about a stored message (from the row, for a redelivery). */
type Details = Pick<MessageRow, "subject" | "from" | "to" | "cc" | "parseError" | "rfcMessageId" | "size" | "sha256">;

/** Runs `work` over `items`, at most `limit` at a time. */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(lanes);
}

/**
 * Writes every received (and every sent) message to disk and PostgreSQL, then confirms with
 * "archived". Idempotent by message key: a redelivery finds the row and confirms again. Parses in
 * a worker pool; checks each archive's room first and pauses ingestion when it is full; holds the
 * message in hand while PostgreSQL is away.
 */
export class Archiver {
  #received: BatchConsumer<MailReceived> | undefined;
  #sent: DurableConsumer<MailSent> | undefined;
  #raw: ObjectStore | undefined;
  #retentionTimer: NodeJS.Timeout | undefined;
  #retentionRun: Promise<PurgeReport[]> | undefined;
  readonly #store: HistoryStore;
  readonly #js;
  readonly #parser: ParsePool;
  readonly #guards = new Map<string, DiskGuard>();
  readonly #stopping = new AbortController();
  /** Pipelined `mail.archived` confirmations, sent after each batch's COMMIT. */
  readonly #window;
  readonly stats: ArchiverStats;

  constructor(private readonly o: ArchiverOptions) {
    this.#store = new HistoryStore(o.pool);
    this.#js = jetStreamOf(o.nc);
    this.#window = new PublishWindow({ js: this.#js, max: 256 });
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
      classified: { human: 0, "auto-reply": 0, bounce: 0, bulk: 0, loop: 0 },
      loopBreakerHeld: 0,
      loopAlerts: 0,
      disks: () => [...this.#guards.values()].map((g) => g.snapshot()),
    };
  }

  /**
   * Applies the archive settings of a reloaded config (SIGHUP) to the running guards: quota,
   * warning threshold, free-space reserve and alert recipients take effect at once, and a pause the
   * new settings lift ends, with nothing restarted. Folders are fixed at start: a mailbox moved to
   * another archive path needs a restart (logged).
   */
  async reloadArchiveSettings(config: PostroomConfig, by = "SIGHUP"): Promise<void> {
    const tenant = this.o.tenant;
    const mailboxes = config.tenants.filter((t) => tenant === undefined || t.id === tenant).flatMap((t) => t.mailboxes);
    const applied: Record<string, { quotaGb: number | null; warnPercentLeft: number; minFreeBytes: number }> = {};
    for (const [root, guard] of this.#guards) {
      // As at start: a folder shared by mailboxes takes the first one's settings.
      const first = mailboxes.find((m) => archiveSettingsFor(config, m).path === root);
      if (!first) continue;
      const settings = archiveSettingsFor(config, first);
      await guard.updateSettings(settings);
      applied[root] = { quotaGb: settings.quotaGb ?? null, warnPercentLeft: settings.warnPercentLeft, minFreeBytes: settings.minFreeBytes };
    }
    const moved = mailboxes.filter((m) => !this.#guards.has(archiveSettingsFor(config, m).path)).map((m) => m.id);
    if (moved.length > 0) this.o.logger.warn({ mailboxes: moved }, "archive path changed in the config; restart the archiver to use it");
    await this.#auditReload(by, { applied, ...(moved.length ? { needsRestart: moved } : {}) });
  }

  /** A reload whose config could not be read: the old settings stay, and the trail says so. */
  async reloadFailed(error: unknown, by = "SIGHUP"): Promise<void> {
    await this.#auditReload(by, { failed: (error as Error)?.message ?? String(error) });
  }

  /** One audit row per tenant this archiver serves: an administrative action, queryable per tenant. */
  async #auditReload(by: string, detail: Record<string, unknown>): Promise<void> {
    const tenants = this.o.config.tenants.filter((t) => this.o.tenant === undefined || t.id === this.o.tenant).map((t) => t.id);
    for (const t of tenants) {
      await recordAudit(this.o.pool, { tenant: t, actorKind: "operator", actor: by, kind: "config.reload", detail: { service: "archiver", pid: process.pid, ...detail } }).catch((error: unknown) =>
        this.o.logger.error({ tenant: t, problem: (error as Error).message }, "audit row for the config reload not written"),
      );
    }
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
      // Waits out a database that stops between the migrations and here (the chaos run's archiver
      // exited at start on it).
      await untilDatabaseAnswers(() =>
        pool.query("INSERT INTO mailboxes (tenant, mailbox, address) VALUES ($1, $2, $3) ON CONFLICT (tenant, mailbox) DO UPDATE SET address = EXCLUDED.address", [t, m.id, m.address]),
      );
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
    this.#received = new BatchConsumer({
      nc,
      stream: names.streams.mail,
      durable: names.consumers.archiverReceived(tenant),
      filterSubject: names.subjects.wildcard.mailReceived(tenant),
      schema: MailReceived,
      handler: (batch) => this.#onReceivedBatch(batch),
      maxBatch: this.o.maxBatch ?? MAX_BATCH,
      maxBatchBytes: MAX_BATCH_BYTES,
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
      // Several at once: a reply read from the object store may wait out its read deadline
      // (rawReadDeadlineMs), and the replies behind it need not wait with it. Each has its own key.
      maxAckPending: SENT_CONCURRENCY,
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

  /**
   * Archives a batch of received messages as one group commit:
   *
   * 1. one query finds the keys already archived (redeliveries: confirmed again, nothing written);
   * 2. the others' folders are written side by side (each file fsynced, parsed in the worker pool,
   *    renamed into place), then each parent folder is fsynced once for the whole batch;
   * 3. one transaction inserts them all (batch-store.ts), in delivery order for threading and the
   *    loop breaker — waited out with the batch in hand while PostgreSQL is away;
   * 4. after COMMIT, `mail.archived` for every message, pipelined, then the acks.
   *
   * A crash anywhere before the acks redelivers the batch, and every step above recognises what a
   * previous attempt already did (folders are replaced, rows found by key, events deduplicated by
   * id). A message that cannot be written (archive full, raw bytes missing, a broken file) gets its
   * own verdict; the rest of the batch goes on.
   */
  async #onReceivedBatch(batch: BatchItem<MailReceived>[]): Promise<Verdict[]> {
    const verdicts: (Verdict | undefined)[] = batch.map(() => undefined);
    const refs = batch.map(({ payload: e }) => findMailbox(this.o.config, e.source.tenant, e.source.mailbox));
    refs.forEach((ref, i) => {
      if (!ref) verdicts[i] = { action: "term", reason: `mailbox ${batch[i]!.payload.source.tenant}/${batch[i]!.payload.source.mailbox} is not configured` };
    });
    const keys = [...new Set(batch.filter((_, i) => refs[i]).map((b) => b.payload.messageKey))];
    const existing = await this.#withDatabase(() => findStored(this.o.pool, keys));
    // The first delivery of each new key in this batch is written; later copies (a re-publish
    // past the duplicate window) are confirmed with its outcome.
    const firstOf = new Map<string, number>();
    const work: { i: number; root: string; target: string; ref: NonNullable<(typeof refs)[number]> }[] = [];
    batch.forEach(({ payload: e }, i) => {
      const ref = refs[i];
      if (!ref || existing.has(e.messageKey) || firstOf.has(e.messageKey)) return;
      firstOf.set(e.messageKey, i);
      const root = archiveSettingsFor(this.o.config, ref.mailbox).path;
      work.push({ i, root, target: messageFolder(root, e.source, new Date(e.receivedAt)), ref });
    });
    const parents = new Set<string>();
    const staged = new Map<number, Extract<Staged, { kind: "ok" }>>();
    await eachLimited(work, this.o.concurrency ?? 8, async (w) => {
      const { payload: e, msg } = batch[w.i]!;
      const identity: MailboxIdentity = { loopToken: `${w.ref.tenant.id}/${w.ref.mailbox.id}`, addresses: [w.ref.mailbox.address, ...w.ref.mailbox.aliases] };
      try {
        const result = await this.#writeMessage(w.root, w.target, e.raw, e.messageKey, identity, e.rawInline, parents);
        if (result.kind === "ok") staged.set(w.i, result);
        else if (result.kind === "missing") {
          // The raw object is gone but no row exists: the poller must fetch it again.
          verdicts[w.i] = { action: "term", reason: "raw message missing from the object store; the poller re-fetches after a cursor reset" };
        } else verdicts[w.i] = await this.#refuse(w.root, result.reason, result.need);
      } catch (error) {
        verdicts[w.i] = { action: "retry", delayMs: backoffMs(msg.info.deliveryCount), reason: (error as Error)?.message ?? String(error) };
        this.o.logger.warn({ messageKey: e.messageKey, ...errorFields(error) }, "message not archived yet");
      }
    });
    const written = work.filter((w) => staged.has(w.i));
    const release = () => {
      for (const w of written) this.#guards.get(w.root)?.unreserve(staged.get(w.i)!.bytes, w.target);
    };
    let stored: StoredMessage[] = [];
    try {
      await syncFolders(parents);
      const rows: BatchRow[] = written.map((w) => {
        const e = batch[w.i]!.payload;
        const s = e.source;
        const limit = w.ref.tenant.classification.loopBreaker;
        const row: MessageRow = {
          ...staged.get(w.i)!.row,
          messageKey: e.messageKey,
          tenant: s.tenant,
          mailbox: s.mailbox,
          direction: "inbound",
          protocol: s.protocol,
          folder: s.protocol === "pop3" ? null : s.folder,
          uidValidity: s.protocol === "imap" ? s.uidValidity : null,
          uid: s.protocol === "imap" ? s.uid : null,
          // A Graph message's immutable id takes the UIDL's place (unique per mailbox, see migration 56).
          uidl: s.protocol === "pop3" ? s.uidl : s.protocol === "graph" ? s.id : null,
          receivedAt: new Date(e.receivedAt),
          archivePath: w.target,
          oversize: e.oversize,
          offer: e.offer,
        };
        const keepVerdict = classificationAction(w.ref.tenant.classification, row.classification) === "archive";
        return { row, loopBreaker: { maxMessages: limit.maxMessages, windowMs: limit.windowMinutes * 60_000, keepVerdict } };
      });
      if (rows.length > 0) stored = await this.#withDatabase(() => insertBatch(this.o.pool, rows));
    } catch (error) {
      release();
      throw error;
    }
    const outcome = new Map<string, { stored: StoredMessage; row?: MessageRow }>();
    for (const [k, w] of written.entries()) {
      const st = stored[k]!;
      const row = { ...staged.get(w.i)!.row, messageKey: batch[w.i]!.payload.messageKey } as MessageRow;
      const e = batch[w.i]!.payload;
      const guard = this.#guards.get(w.root);
      const bytes = staged.get(w.i)!.bytes;
      if (st.inserted) {
        this.stats.archived++;
        this.stats.classified[st.classification]++;
        if (st.loopBreaker) this.stats.loopBreakerHeld++;
        if (st.loopBreaker?.alert) this.stats.loopAlerts++;
        this.stats.bytesWritten += bytes;
        await guard?.committed(bytes, w.target);
      } else {
        guard?.unreserve(bytes, w.target);
      }
      const log = this.o.logger.child({ tenant: e.source.tenant, mailbox: e.source.mailbox, messageKey: e.messageKey });
      batch[w.i]!.within(() =>
        log.info({ inserted: st.inserted, parseError: row.parseError, size: row.size, classification: st.classification, batch: batch.length }, "message archived"),
      );
      if (st.loopBreaker) {
        log.warn({ messages: st.loopBreaker.messages, alert: st.loopBreaker.alert }, "loop breaker: message archived, not offered");
        if (st.loopBreaker.alert) await this.#loopAlert(w.ref, { ...row, from: staged.get(w.i)!.row.from, subject: staged.get(w.i)!.row.subject }, st.loopBreaker.messages);
      }
      outcome.set(e.messageKey, { stored: st, row });
    }
    for (const [key, st] of existing) outcome.set(key, { stored: st });
    // Redeliveries: their details come from the rows, read in one query.
    const described = await this.#withDatabase(() => this.#describeMany([...existing.values()].map((st) => st.id)));
    for (const [i, { payload: e, msg, within }] of batch.entries()) {
      if (verdicts[i]) continue;
      const o = outcome.get(e.messageKey);
      if (!o) {
        // A later copy of a key whose first delivery in this batch could not be written.
        const first = firstOf.get(e.messageKey);
        verdicts[i] = first !== undefined && verdicts[first] ? verdicts[first] : { action: "retry", delayMs: backoffMs(msg.info.deliveryCount), reason: "not archived yet" };
        continue;
      }
      if (!o.row || firstOf.get(e.messageKey) !== i) {
        this.stats.redeliveries++;
        within(() => this.o.logger.info({ tenant: e.source.tenant, mailbox: e.source.mailbox, messageKey: e.messageKey }, "message already archived; confirming again"));
      }
      const d = o.row ?? described.get(o.stored.id)!;
      const archived: MailArchived = {
        version: "v1",
        messageKey: e.messageKey,
        tenant: e.source.tenant,
        mailbox: e.source.mailbox,
        messageId: o.stored.id,
        conversationId: o.stored.conversationId,
        archivePath: o.stored.archivePath,
        size: d.size,
        sha256: d.sha256,
        rfcMessageId: d.rfcMessageId,
        subject: d.subject,
        from: d.from?.address ?? "",
        to: d.to.map((a) => a.address),
        cc: d.cc.map((a) => a.address),
        flags: flagsOf(o.stored.classification),
        classification: o.stored.classification,
        classificationReason: o.stored.classificationReason,
        parseError: d.parseError,
        // The row's decision: false for history imports and for what the loop breaker held back.
        offer: o.stored.offer,
        receivedAt: e.receivedAt,
        archivedAt: new Date().toISOString(),
        source: e.source,
      };
      await within(() => this.#window.send(this.o.names.subjects.mailArchived(e.source.tenant, e.source.mailbox), archived, { msgId: `${e.messageKey}#archived` }));
      verdicts[i] = ack;
    }
    // Every confirmation stored before any ack: a failure here sends the whole batch back, and its
    // redelivery finds the rows and confirms again.
    await this.#window.flush();
    for (const { payload: e } of batch) {
      // Not awaited: the raw copy is only a transport buffer (with a TTL), and a delete that never
      // happens (crash) costs some object-store space for a while, nothing else.
      if (e.rawInline === undefined && outcome.has(e.messageKey)) void this.#raw!.delete(e.raw.name).catch(() => undefined);
    }
    return verdicts.map((v) => v ?? ack);
  }

  /** Runs a database step, waiting (with the batch in hand) while PostgreSQL is unreachable. */
  async #withDatabase<T>(work: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await work();
      } catch (error) {
        if (!isDatabaseUnavailable(error) || this.#stopping.signal.aborted) throw error;
        if (attempt === 1 || attempt % 10 === 0) this.o.logger.warn({ attempt, ...errorFields(error) }, "database unavailable; holding the messages of this batch until it returns");
        const delay = Math.min(5_000, 250 * 2 ** Math.min(attempt, 5));
        await sleep(delay / 2 + Math.random() * (delay / 2), undefined, { signal: this.#stopping.signal }).catch(() => undefined);
        if (this.#stopping.signal.aborted) throw error;
      }
    }
  }

  async #onSent(e: MailSent): Promise<Verdict> {
    const ref = findMailbox(this.o.config, e.tenant, e.mailbox);
    if (!ref) return { action: "term", reason: `mailbox ${e.tenant}/${e.mailbox} is not configured` };
    const key = `${e.tenant}/${e.mailbox}/sent/${e.commandId}`;
    if (await this.#store.find(key)) return ack;
    const root = archiveSettingsFor(this.o.config, ref.mailbox).path;
    const target = outboundFolder(root, e.tenant, e.mailbox, e.commandId, new Date(e.sentAt));
    const staged = await this.#writeMessage(root, target, e.raw, key, undefined, e.rawInline);
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

  /**
   * The loop breaker tripped for a new sender episode: one `alert.loop` event, and — like the disk
   * alerts — one e-mail to the archive's alert recipients when `sendAlerts` is on and the mailbox
   * can send. Both carry a business key, so a retry publishes nothing twice. (A crash between the
   * insert's commit and this publish loses the alert, not a message: the next episode alerts.)
   */
  async #loopAlert(ref: NonNullable<ReturnType<typeof findMailbox>>, m: MessageRow, messages: number): Promise<void> {
    const limit = ref.tenant.classification.loopBreaker;
    const sender = m.from?.address ?? "";
    const alert: LoopAlert = {
      version: "v1",
      tenant: ref.tenant.id,
      mailbox: ref.mailbox.id,
      sender,
      messages,
      maxMessages: limit.maxMessages,
      windowMinutes: limit.windowMinutes,
      messageKey: m.messageKey,
      subject: m.subject,
      raisedAt: new Date().toISOString(),
    };
    const alertId = `loop-${createHash("sha256").update(m.messageKey).digest("hex").slice(0, 24)}`;
    await publishJson(this.#js, this.o.names.subjects.loopAlert(ref.tenant.id, ref.mailbox.id), alert, { msgId: alertId });
    const settings = archiveSettingsFor(this.o.config, ref.mailbox);
    if (!settings.sendAlerts || settings.alertRecipients.length === 0 || !ref.mailbox.smtp) return;
    const command: SendRequested = {
      version: "v1",
      commandId: alertId,
      tenant: ref.tenant.id,
      mailbox: ref.mailbox.id,
      kind: "alert",
      to: settings.alertRecipients,
      cc: [],
      bcc: [],
      subject: `Postroom: mail loop stopped for ${ref.tenant.id}/${ref.mailbox.id}`,
      text: [
        `More than ${limit.maxMessages} messages from ${sender} reached ${ref.mailbox.address} within ${limit.windowMinutes} minutes.`,
        `They are archived but no longer offered to agents, until the sender has been quiet for ${limit.windowMinutes} minutes.`,
        `This usually is an auto-responder answering mail in a loop. Last subject: ${m.subject}`,
      ].join("\n"),
      requestedAt: new Date().toISOString(),
    };
    await publishJson(this.#js, this.o.names.subjects.mailSend(ref.tenant.id, ref.mailbox.id), command, { msgId: alertId });
  }

  /** The archive cannot take this message: pause ingestion, alert, and leave the message unacknowledged. */
  async #refuse(root: string, reason: string, need: Need): Promise<Verdict> {
    this.stats.refusedFull++;
    const guard = this.#guards.get(root);
    await guard?.block(reason, need);
    // Redelivered after the guard's check interval; by then it knows whether there is room.
    return { action: "retry", delayMs: this.o.disk?.checkIntervalMs ?? 15_000, reason };
  }

  /** #describe for many rows at once (a batch's redeliveries), by row id. */
  async #describeMany(ids: string[]) {
    const out = new Map<string, Details>();
    if (ids.length === 0) return out;
    const r = await this.o.pool.query<{
      id: string; subject: string; from_address: string; size: string; sha256: string; rfc_message_id: string; parse_error: string | null;
      to: string[] | null; cc: string[] | null;
    }>(
      `SELECT id, subject, from_address, size, sha256, rfc_message_id, parse_error,
        (SELECT array_agg(address) FROM addresses WHERE message_id = m.id AND role = 'to') AS to,
        (SELECT array_agg(address) FROM addresses WHERE message_id = m.id AND role = 'cc') AS cc
       FROM messages m WHERE id = ANY($1::bigint[])`,
      [ids],
    );
    for (const x of r.rows) {
      out.set(x.id, {
        subject: x.subject,
        from: { address: x.from_address, name: null },
        to: (x.to ?? []).map((address) => ({ address, name: null })),
        cc: (x.cc ?? []).map((address) => ({ address, name: null })),
        parseError: x.parse_error,
        rfcMessageId: x.rfc_message_id,
        size: Number(x.size),
        sha256: x.sha256,
      });
    }
    return out;
  }

  /**
   * Streams the raw message into a staging folder, parses it in the worker pool (which writes the
   * parts), writes meta.json, checks the result fits the archive's quota, and moves the folder
   * into place. A full disk discards the staging folder and says so; nothing half-written remains.
   */
  async #writeMessage(root: string, target: string, raw: ObjectRef, key: string, identity?: MailboxIdentity, inline?: string, parents?: Set<string>): Promise<Staged> {
    const guard = this.#guards.get(root);
    if (guard) {
      const room = await guard.admit(raw.size);
      if (!room.ok) return { kind: "full", reason: room.reason, need: { quotaBytes: raw.size, diskBytes: stagingEstimate(raw.size) } };
    }
    // Small messages arrive inside the event; only the large ones are read from the object store.
    const data = inline !== undefined ? Readable.from([Buffer.from(inline, "base64")]) : (await this.#raw!.get(raw.name))?.data;
    if (!data) return { kind: "missing" };
    const staged = await StagedFolder.create(root);
    try {
      const written = await withReadDeadline(staged.writeStream("message.eml", data), rawReadDeadlineMs(raw.size), raw.name);
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
      // Received mail is classified against its mailbox; our own sent mail is not. A message the
      // parser could not finish is classified (and counted by the loop breaker) from its raw
      // header section: a loop of broken mail is still a loop.
      const rawHeaders = !mail && identity ? await readRawHeaders(join(staged.path, "message.eml")) : undefined;
      const headers = mail ? mail.headerLines.map(([name, line]) => [name, line.slice(line.indexOf(":") + 1).trim()] as const) : rawHeaders;
      const verdict = identity && headers ? classifyAutomatic(headers, identity, mail?.subject) : { classification: "human" as const, reason: null };
      const rawFrom = rawHeaders && addressesIn(rawHeaders.find(([name]) => name === "from")?.[1] ?? "").find((a) => a !== "");
      const from = mail?.from ?? (rawFrom ? { address: rawFrom, name: null } : null);
      const rawDate = rawHeaders?.find(([name]) => name === "date")?.[1] ?? null;
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
        replyTo: mail?.replyTo ?? [],
        dateHeader: mail?.date ? new Date(mail.date) : rawDate !== null ? parseMailDate(rawDate) : null,
        size: written.size,
        sha256: written.sha256,
        headers: mail?.headerLines ?? [],
        textBody: mail?.text ?? null,
        htmlBody: mail?.html ?? null,
        classification: verdict.classification,
        classificationReason: verdict.reason,
        dateRaw: mail ? mail.dateRaw : rawDate,
        bounce: verdict.classification === "bounce" ? (mail?.report ?? { of: null, status: null, diagnostic: null }) : null,
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
            replyTo: row.replyTo,
            date: row.dateHeader,
            dateRaw: row.dateRaw,
            size: row.size,
            sha256: row.sha256,
            classification: row.classification,
            classificationReason: row.classificationReason,
            bounce: row.bounce,
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
        await staged.commit(target, { ...(parents ? { parents } : {}), partsEmpty: !mail || mail.attachments.length === 0 });
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

/**
 * How long reading one raw message from the object store may take: 30 s plus 10 s per MiB.
 *
 * Why a deadline: the object store streams an object's chunks through an ephemeral consumer, and
 * on a nats-server 2.9 cluster with one node down a good part of those consumers are placed on
 * the dead node and never deliver (measured on the test kit's three-node cluster: most reads for
 * as long as the node was down). Without a deadline the read waits forever and holds the
 * consumer's only slot, so the archiver stops; with it the message is retried (a new consumer,
 * likely placed on a live node) and archived.
 */
export function rawReadDeadlineMs(size: number): number {
  return 30_000 + Math.ceil(size / (1024 * 1024)) * 10_000;
}

async function withReadDeadline<T>(p: Promise<T>, ms: number, name: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`reading ${name} from the object store took longer than ${ms} ms; retrying`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
