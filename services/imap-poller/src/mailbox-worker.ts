import type { Mailbox, Tenant } from "@postroom/config";
import type { MailArchived} from "@postroom/contracts";
import { INLINE_RAW_MAX_BYTES, messageKey, type MailboxStatus, type MailReceived, type Names, type SourceKey } from "@postroom/contracts";
import type {
  DurableConsumer} from "@postroom/nats-kit";
import {
  ack,
  ContiguousPrefix,
  PublishWindow,
  type CredentialClient,
  type JetStreamClient,
  type KV,
  type NatsConnection,
  type ObjectStore,
  type Verdict,
} from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { createHash } from "node:crypto";
import { ImapFlow, type FetchMessageObject } from "imapflow";
import { commitConsumer } from "./commit-consumer.js";
import { ingestPausedReason, Recovery } from "./recovery.js";
import { fingerprint, IngestedIndex, remapDecision } from "./ingested-index.js";
import { withDeadline } from "./lease.js";
import { storeRaw } from "./raw-store.js";
import { IndexBatch } from "./index-batch.js";
import { Pause, StatusReport } from "./worker-state.js";

/** Messages in the first page of a check; later pages are sized from what the previous held. */
const FIRST_PAGE = 32;
const MIN_PAGE = 4;
const MAX_PAGE = 200;
/** Inline bytes a page aims at (the poller holds one page's bodies at a time). */
const PAGE_BYTES = 8 * 1024 * 1024;

export interface MailboxWorkerOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  names: Names;
  tenant: Tenant;
  mailbox: Mailbox;
  cursors: KV;
  statusKv: KV;
  /** Ingestion control written by the archiver (pause while the archive is full). */
  controlKv: KV;
  rawStore: ObjectStore;
  credentials: CredentialClient;
  logger: Logger;
  /** Identifies this replica in the mailbox status. */
  owner: string;
  /** How long to wait before trying again after the server refused a fresh credential. */
  needsAdminRetryMs?: number;
  /** Deadline for connecting and for each command. */
  timeoutMs?: number;
  /** The `ingested` bucket: what was published, by Message-ID + hash (UIDVALIDITY re-mapping). */
  ingested: KV;
}

/** What the poller needs from any mailbox worker (IMAP or POP3). */
export interface Worker {
  readonly status: MailboxStatus;
  start(): Promise<void>;
  /** Orderly stop: finish the message in hand, log out, report "stopped". */
  stop(): Promise<void>;
  /** Immediate stop (lease lost): drop the connection without waiting for the server. */
  abort(): Promise<void>;
}

export { NEEDS_ADMIN_RETRY_MS } from "./recovery.js";

/** Persisted per folder: where the next check starts. */
interface Cursor {
  uidValidity: number;
  lastUid: number;
  /** UIDs up to this one are history (first start with import-history): archived, not offered. */
  historyUntil: number;
  /**
   * Set after a UIDVALIDITY change: every message of this UIDVALIDITY is checked against the
   * ingested index before publishing (re-mapping). Not only those present when the change was
   * seen: servers re-upload the old messages one by one after the folder is rebuilt, so they keep
   * arriving with fresh UIDs for a while.
   */
  remap?: boolean;
  /** When this mailbox was first read (ms since epoch), for re-mapping mail that predates it. */
  firstStartAt?: number;
}

/**
 * Reads one IMAP mailbox: IDLE for new mail plus a poll every check interval, fetch by UID from a
 * persisted cursor, raw bytes streamed into the object store, one JetStream event per message.
 * The after-import action (mark seen, move, delete) runs only when the archiver's "archived"
 * event for that UID comes back — the commit point — so a crash anywhere leads to a redelivery
 * that every consumer recognises, never to a lost message.
 */
export class MailboxWorker implements Worker {
  #client: ImapFlow | undefined;
  #stopped = false;
  readonly #pause = new Pause();
  #loop: Promise<void> | undefined;
  #commit: DurableConsumer<MailArchived> | undefined;
  readonly #report: StatusReport;
  readonly #log: Logger;
  readonly #recovery: Recovery;

  constructor(private readonly o: MailboxWorkerOptions) {
    this.#log = o.logger.child({ tenant: o.tenant.id, mailbox: o.mailbox.id });
    this.#recovery = new Recovery({
      log: this.#log,
      setState: (state, error) => this.#report.set(state, error),
      sleep: (ms) => this.#pause.sleep(ms),
      ...(o.needsAdminRetryMs !== undefined ? { needsAdminRetryMs: o.needsAdminRetryMs } : {}),
    });
    this.#report = new StatusReport(o, "imap", this.#log);
    const folder = Buffer.from(o.mailbox.inbound.folder).toString("base64url") || "_";
    this.#window = new PublishWindow({ js: o.js, max: 64, timeoutMs: o.timeoutMs ?? 30_000 });
    this.#index = new IngestedIndex(o.ingested, `${o.names.mailboxKey(o.tenant.id, o.mailbox.id)}.${folder}`);
  }

  readonly #index: IngestedIndex;
  /** Pipelined `mail.received` publishes (a bounded number unacknowledged at once). */
  #window!: PublishWindow;

  get status(): MailboxStatus {
    return this.#report.status;
  }

  async start(): Promise<void> {
    this.#commit = commitConsumer(this.o, this.#log, (event) => this.#applyAfterImport(event));
    await this.#commit.start();
    this.#loop = this.#run();
  }

  /** Checks now instead of at the next interval (new mail announced by IDLE). */
  kick(): void {
    // Remembered when no sleep is under way: new mail announced while a check runs (after its
    // SEARCH) must start another check at once, not wait for the next interval.
    this.#pause.kick();
  }

  async stop(): Promise<void> {
    // Stop the commit consumer first so no after-import action starts on a closing connection,
    // then end the read loop, then log out.
    this.#stopped = true;
    await this.#commit?.stop();
    this.kick();
    await this.#client?.logout().catch(() => this.#client?.close());
    await this.#loop;
    await this.#report.set("stopped");
  }

  async abort(): Promise<void> {
    // The lease is gone or about to be: drop the connection now, without a LOGOUT round trip, so
    // this replica never talks to the mailbox once another may. The status entry now belongs to
    // the next owner, so it is not written.
    this.#stopped = true;
    this.#report.silenced = true;
    this.#client?.close();
    this.kick();
    void this.#commit?.stop();
    await withDeadline(this.#loop ?? Promise.resolve(), 5_000, "worker abort").catch(() => undefined);
  }

  /** Runs one IMAP command with a deadline; on expiry the connection is dropped and re-opened. */
  async #op<T>(client: ImapFlow, p: Promise<T>, what: string): Promise<T> {
    try {
      return await withDeadline(p, this.o.timeoutMs ?? 30_000, what);
    } catch (error) {
      if (/took longer than/.test(String(error))) client.close();
      throw error;
    }
  }

  async #run(): Promise<void> {
    let rejectedOnce = false;
    while (!this.#stopped) {
      let client: ImapFlow | undefined;
      try {
        if (!this.#recovery.needsAdminNow) await this.#report.set("connecting");
        const credential = await this.o.credentials.get(this.o.tenant.id, this.o.mailbox.id, "imap", rejectedOnce);
        client = this.#newClient(credential);
        // Known before it connects, so an abort (lease lost) can drop even a login in progress.
        this.#client = client;
        if (this.#stopped) break;
        const closed = new Promise<void>((resolve) => client!.once("close", () => resolve()));
        client.on("error", (error: Error) => this.#log.warn({ problem: error.message }, "imap connection error"));
        await withDeadline(client.connect(), (this.o.timeoutMs ?? 30_000) * 2, "IMAP connect and login").catch((e: unknown) => {
          client?.close();
          throw e;
        });
        await this.#op(client, client.mailboxOpen(this.o.mailbox.inbound.folder), "SELECT");
        rejectedOnce = false;
        this.#recovery.needsAdminNow = false;
        client.on("exists", () => this.kick());
        while (!this.#stopped && client.usable) {
          this.#pause.kicked = false;
          await this.#check(client);
          this.#recovery.backoff.reset();
          const interval = this.o.mailbox.inbound.checkIntervalSeconds * 1000;
          if (this.#report.status.state === "paused") {
            // Look again soon: the pause ends as soon as the archiver has room.
            await this.#pause.sleep(Math.min(interval, 5000), closed);
            continue;
          }
          await this.#report.set("idle");
          if (!this.#pause.kicked) await this.#pause.sleep(interval, closed);
        }
      } catch (error) {
        if (this.#stopped) break;
        await this.#recovery.afterFailure(error, rejectedOnce).then((r) => (rejectedOnce = r));
      } finally {
        if (this.#client === client) this.#client = undefined;
        if (client?.usable) await client.logout().catch(() => client?.close());
      }
    }
  }


  #newClient(credential: Awaited<ReturnType<CredentialClient["get"]>>): ImapFlow {
    const inbound = this.o.mailbox.inbound;
    const port = inbound.port ?? (inbound.tls === "implicit" ? 993 : 143);
    const timeout = this.o.timeoutMs ?? 30_000;
    return new ImapFlow({
      host: inbound.host,
      port,
      secure: inbound.tls === "implicit",
      doSTARTTLS: inbound.tls === "starttls" ? true : inbound.tls === "none" ? false : undefined,
      auth:
        credential.mechanism === "PLAIN"
          ? { user: credential.username, pass: credential.password }
          : { user: credential.username, accessToken: credential.accessToken },
      tls: { rejectUnauthorized: inbound.verifyCertificate },
      logger: false,
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: 5 * 60_000,
      // Enter IDLE as soon as the connection is quiet (imapflow waits 15 s by default), so new
      // mail is announced within about a second; restart IDLE every few minutes because some
      // servers and middleboxes silently drop long-idle connections.
      autoIdleDelay: 250,
      maxIdleTime: 4 * 60_000,
      // The replica id goes to the server in ID, so its log attributes every session to a replica.
      clientInfo: { name: "Postroom", "x-postroom-replica": this.o.owner },
    } as ConstructorParameters<typeof ImapFlow>[0]);
  }

  #cursorKey(): string {
    const folder = Buffer.from(this.o.mailbox.inbound.folder).toString("base64url");
    return `${this.o.names.mailboxKey(this.o.tenant.id, this.o.mailbox.id)}.${folder || "_"}`;
  }

  async #loadCursor(uidValidity: number, uidNext: number): Promise<Cursor> {
    const entry = await this.o.cursors.get(this.#cursorKey());
    const stored = entry?.value.length ? (entry.json() as Cursor) : undefined;
    if (stored && stored.uidValidity === uidValidity) return stored;
    let cursor: Cursor;
    if (!stored) {
      const firstStartAt = Date.now();
      cursor =
        this.o.mailbox.inbound.firstStart === "from-now"
          ? { uidValidity, lastUid: uidNext - 1, historyUntil: 0, firstStartAt }
          : { uidValidity, lastUid: 0, historyUntil: uidNext - 1, firstStartAt };
      this.#log.info({ firstStart: this.o.mailbox.inbound.firstStart, uidNext }, "first start of this mailbox");
    } else {
      // UIDVALIDITY changed: every UID is new. Read the whole folder again, but match each message
      // existing now against what was already published (Message-ID + content hash), so nothing
      // is offered twice and mail that arrived during the change is not skipped.
      cursor = { uidValidity, lastUid: 0, historyUntil: 0, remap: true, ...(stored.firstStartAt ? { firstStartAt: stored.firstStartAt } : {}) };
      this.#log.warn({ previous: stored.uidValidity, uidValidity }, "UIDVALIDITY changed; re-mapping the folder by Message-ID and content hash");
    }
    await this.o.cursors.put(this.#cursorKey(), JSON.stringify(cursor));
    return cursor;
  }


  async #check(client: ImapFlow): Promise<void> {
    const paused = await ingestPausedReason(this.o.controlKv, this.o.tenant.id, this.o.mailbox.id);
    if (paused) {
      await this.#report.set("paused", { message: paused, code: "archive-paused", fix: "free space or raise the archive quota; ingestion resumes by itself" });
      return;
    }
    await this.#report.set("polling");
    const box = client.mailbox;
    if (!box) throw new Error("no folder selected");
    const uidValidity = Number(box.uidValidity);
    const cursor = await this.#loadCursor(uidValidity, box.uidNext);
    const found = await this.#op(client, client.search({ uid: `${cursor.lastUid + 1}:*` }, { uid: true }), "UID SEARCH");
    const uids = (found || []).filter((u) => u > cursor.lastUid).sort((a, b) => a - b);
    this.#report.status.backlog = uids.length;
    if (uids.length === 0) {
      this.#report.status.lastCheckAt = new Date().toISOString();
      return;
    }
    // The backlog is in the status as soon as it is known, not only at the first heartbeat: a
    // fast run through a few hundred messages would otherwise never show one.
    await this.#report.set("polling");
    // One UID FETCH per page: metadata and, for every message, its first INLINE_RAW_MAX_BYTES
    // (BODY.PEEK, so reading never marks it) — the whole message for all but the large ones, which
    // are then streamed through the object store. The events go out through a window of
    // unacknowledged publishes; the cursor moves only over the contiguous prefix of UIDs whose
    // event was stored and whose index entry was written, so a crash re-reads from the first
    // gap and re-publishes under the same message ids (a duplicate, never a loss).
    const prefix = new ContiguousPrefix<number>(cursor.lastUid);
    const batch = new IndexBatch(this.#index);
    let failure: unknown;
    let savedAt = Date.now();
    const save = async () => {
      cursor.lastUid = prefix.done ?? cursor.lastUid;
      await this.o.cursors.put(this.#cursorKey(), JSON.stringify(cursor));
      savedAt = Date.now();
    };
    let pageSize = FIRST_PAGE;
    try {
      for (let i = 0; i < uids.length && !this.#stopped; ) {
        const page = uids.slice(i, i + pageSize);
        i += page.length;
        const fetched = await this.#op(
          client,
          client.fetchAll(page.join(","), { uid: true, internalDate: true, size: true, envelope: true, source: { maxLength: INLINE_RAW_MAX_BYTES } }, { uid: true }),
          "UID FETCH",
        );
        const byUid = new Map<number, FetchMessageObject>();
        let pageBytes = 0;
        for (const m of fetched) {
          if (!m.uid) continue;
          byUid.set(m.uid, m);
          pageBytes += Math.min(m.size ?? 0, INLINE_RAW_MAX_BYTES);
        }
        // Next page sized so its inline bytes stay near PAGE_BYTES: small mail in pages of 200,
        // a run of half-megabyte messages in pages of a few (the poller's memory stays bounded).
        const average = fetched.length > 0 ? pageBytes / fetched.length : 0;
        pageSize = Math.max(MIN_PAGE, Math.min(MAX_PAGE, Math.floor(PAGE_BYTES / Math.max(average, 1))));
        for (const uid of page) {
          if (this.#stopped || this.#window.failure !== undefined) break;
          const done = prefix.add(uid);
          const meta = byUid.get(uid);
          if (!meta) {
            done(); // expunged since SEARCH
          } else {
            await this.#ingest(client, cursor, uid, meta, batch, done);
          }
          this.#report.status.backlog--;
        }
        byUid.clear();
        await batch.write();
        if (Date.now() - savedAt > 1000) {
          await save();
          // A heartbeat while working through a backlog, so status readers see progress.
          await this.#report.set("polling");
        }
        if (this.#window.failure !== undefined) break;
      }
      await this.#window.flush();
    } catch (error) {
      failure = error;
      await this.#window.flush().catch(() => undefined);
    }
    // What was stored before a failure is indexed and covered by the cursor all the same.
    await batch.write().catch((error: unknown) => (failure ??= error));
    await save();
    if (failure !== undefined) throw failure;
    this.#report.status.lastCheckAt = new Date().toISOString();
  }

  async #ingest(client: ImapFlow, cursor: Cursor, uid: number, meta: FetchMessageObject, batch: IndexBatch, done: () => void): Promise<void> {
    const { tenant, mailbox, names } = this.o;
    const source: SourceKey = { protocol: "imap", tenant: tenant.id, mailbox: mailbox.id, folder: mailbox.inbound.folder, uidValidity: cursor.uidValidity, uid };
    const key = messageKey(source);
    let raw: { size: number; sha256: string };
    let inline: Buffer | undefined;
    const head = meta.source;
    if (head && meta.size !== undefined && head.length === meta.size && meta.size <= INLINE_RAW_MAX_BYTES) {
      inline = head;
      raw = { size: head.length, sha256: createHash("sha256").update(head).digest("hex") };
    } else {
      // Large: BODY.PEEK in 256 KB partial fetches, streamed into the object store in ~1 MB chunks,
      // never whole in memory. imapflow's default 64 KB made a 40 MB message take 640 round trips.
      // 1 MB partials peaked at 121-162 MB resident for a 40 MB message, over the 150 MB bound on a
      // busy machine. 256 KB stayed at 100-108 MB, busy or not, in the same time.
      const download = await this.#op(client, client.download(String(uid), undefined, { uid: true, chunkSize: 256 * 1024 }), "UID FETCH BODY.PEEK[]");
      if (!download?.content) {
        done();
        return;
      }
      raw = await storeRaw(this.o.rawStore, key, download.content, this.o.timeoutMs ?? 30_000);
    }
    const internalDate = meta.internalDate instanceof Date ? meta.internalDate : new Date(meta.internalDate ?? Date.now());
    const fp = fingerprint(meta.envelope?.messageId, raw.sha256);
    let offer = uid > cursor.historyUntil;
    if (cursor.remap) {
      // Re-mapping (rare): one message at a time, each decision against what the index says now.
      await this.#window.flush();
      await batch.write();
      const decision = remapDecision(await this.#index.entries(fp), key, cursor.uidValidity);
      if (decision !== "new") {
        await this.#index.add(fp, { key, uidValidity: cursor.uidValidity });
        if (!inline) await this.o.rawStore.delete(key).catch(() => undefined);
        this.#log.info({ uid, decision }, "message re-mapped after UIDVALIDITY change; not offered again");
        done();
        return;
      }
      // Never published before. Mail older than this mailbox's first start was left alone by
      // "from-now" (skip it again) or archived as history by "import-history" (not offered).
      if (cursor.firstStartAt && internalDate.getTime() < cursor.firstStartAt) {
        if (mailbox.inbound.firstStart === "from-now") {
          if (!inline) await this.o.rawStore.delete(key).catch(() => undefined);
          done();
          return;
        }
        offer = false;
      }
    }
    const event: MailReceived = {
      version: "v1",
      messageKey: key,
      source,
      raw: { bucket: names.buckets.rawMail, name: key, size: raw.size, sha256: raw.sha256 },
      receivedAt: internalDate.toISOString(),
      fetchedAt: new Date().toISOString(),
      offer,
      oversize: raw.size > mailbox.inbound.maxMessageBytes,
      ...(inline ? { rawInline: inline.toString("base64") } : {}),
    };
    // Indexed after it is stored: a crash in between re-publishes under the same key (a duplicate
    // every consumer recognises), never skips. The UID counts as done once its entry is written.
    // A failed publish is reported by the window's flush.
    await this.#window.send(names.subjects.mailReceived(tenant.id, mailbox.id), event, { msgId: key }, () => {
      batch.add(fp, { key, uidValidity: cursor.uidValidity }, done);
      this.#report.status.lastMessageAt = event.fetchedAt;
      this.#report.status.published = (this.#report.status.published ?? 0) + 1;
      this.#log.info({ uid, size: raw.size, offer: event.offer }, "message published");
    });
    if (cursor.remap) {
      await this.#window.flush();
      await batch.write();
    }
  }

  /** The commit point: runs once the archiver has stored the message. */
  async #applyAfterImport(event: MailArchived): Promise<Verdict> {
    const source = event.source;
    const { afterImport, folder } = this.o.mailbox.inbound;
    if (source.protocol !== "imap" || source.folder !== folder || afterImport.action === "none") return ack;
    const client = this.#client;
    if (!client?.usable || !client.mailbox) throw new Error("not connected; the action runs after reconnecting");
    if (Number(client.mailbox.uidValidity) !== source.uidValidity) {
      // The folder was rebuilt: this UID no longer names that message. Nothing safe to do.
      this.#log.warn({ uid: source.uid }, "UIDVALIDITY changed since fetch; after-import action skipped");
      return ack;
    }
    const uid = String(source.uid);
    switch (afterImport.action) {
      case "mark-seen":
        await this.#op(client, client.messageFlagsAdd(uid, ["\\Seen"], { uid: true }), "UID STORE");
        break;
      case "move":
        await this.#op(client, client.messageMove(uid, afterImport.folder!, { uid: true }), "UID MOVE");
        break;
      case "delete":
        await this.#op(client, client.messageDelete(uid, { uid: true }), "UID EXPUNGE");
        break;
    }
    return ack;
  }


}
