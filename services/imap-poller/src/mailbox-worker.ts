import { createHash } from "node:crypto";
import { PassThrough, Readable } from "node:stream";
import type { Mailbox, Tenant } from "@postroom/config";
import { IngestControl, ingestKey, MailArchived, messageKey, type MailboxState, type MailboxStatus, type MailReceived, type Names, type SourceKey } from "@postroom/contracts";
import {
  ack,
  CredentialUnavailableError,
  DurableConsumer,
  publishJson,
  type CredentialClient,
  type JetStreamClient,
  type KV,
  type NatsConnection,
  type ObjectStore,
  type Verdict,
} from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { ImapFlow } from "imapflow";
import { Backoff } from "./backoff.js";
import { classifyImapError } from "./classify.js";

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
}

/** Persisted per folder: where the next check starts. */
interface Cursor {
  uidValidity: number;
  lastUid: number;
  /** UIDs up to this one are history (first start with import-history): archived, not offered. */
  historyUntil: number;
}

/**
 * Reads one IMAP mailbox: IDLE for new mail plus a poll every check interval, fetch by UID from a
 * persisted cursor, raw bytes streamed into the object store, one JetStream event per message.
 * The after-import action (mark seen, move, delete) runs only when the archiver's "archived"
 * event for that UID comes back — the commit point — so a crash anywhere leads to a redelivery
 * that every consumer recognises, never to a lost message.
 */
export class MailboxWorker {
  #client: ImapFlow | undefined;
  #stopped = false;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #commit: DurableConsumer<MailArchived> | undefined;
  readonly #backoff = new Backoff(1000, 60_000);
  #status: MailboxStatus;
  readonly #log: Logger;

  constructor(private readonly o: MailboxWorkerOptions) {
    this.#log = o.logger.child({ tenant: o.tenant.id, mailbox: o.mailbox.id });
    this.#status = {
      version: "v1",
      tenant: o.tenant.id,
      mailbox: o.mailbox.id,
      state: "connecting",
      owner: o.owner,
      lastCheckAt: null,
      lastMessageAt: null,
      backlog: 0,
      lastError: null,
      updatedAt: new Date().toISOString(),
    };
  }

  get status(): MailboxStatus {
    return this.#status;
  }

  async start(): Promise<void> {
    const { names, tenant, mailbox } = this.o;
    this.#commit = new DurableConsumer({
      nc: this.o.nc,
      stream: names.streams.mail,
      durable: names.consumers.pollerCommit(tenant.id, mailbox.id),
      filterSubject: names.subjects.mailArchived(tenant.id, mailbox.id),
      schema: MailArchived,
      handler: (event) => this.#applyAfterImport(event),
      ackWaitMs: 120_000,
      onProblem: (p) => this.#log.warn({ subject: p.subject, reason: p.reason, action: p.action }, "after-import action deferred"),
    });
    await this.#commit.start();
    this.#loop = this.#run();
  }

  /** Checks now instead of at the next interval (new mail announced by IDLE). */
  kick(): void {
    this.#wake?.();
  }

  async stop(): Promise<void> {
    // Stop the commit consumer first so no after-import action starts on a closing connection,
    // then end the read loop, then log out.
    this.#stopped = true;
    await this.#commit?.stop();
    this.kick();
    await this.#client?.logout().catch(() => this.#client?.close());
    await this.#loop;
    await this.#setState("stopped");
  }

  async #run(): Promise<void> {
    let rejectedOnce = false;
    while (!this.#stopped) {
      let client: ImapFlow | undefined;
      try {
        await this.#setState("connecting");
        const credential = await this.o.credentials.get(this.o.tenant.id, this.o.mailbox.id, "imap", rejectedOnce);
        client = this.#newClient(credential);
        const closed = new Promise<void>((resolve) => client!.once("close", () => resolve()));
        client.on("error", (error: Error) => this.#log.warn({ problem: error.message }, "imap connection error"));
        await client.connect();
        await client.mailboxOpen(this.o.mailbox.inbound.folder);
        this.#client = client;
        rejectedOnce = false;
        client.on("exists", () => this.kick());
        while (!this.#stopped && client.usable) {
          await this.#check(client);
          this.#backoff.reset();
          const interval = this.o.mailbox.inbound.checkIntervalSeconds * 1000;
          if (this.#status.state === "paused") {
            // Look again soon: the pause ends as soon as the archiver has room.
            await this.#sleep(Math.min(interval, 5000), closed);
            continue;
          }
          await this.#setState("idle");
          await this.#sleep(interval, closed);
        }
      } catch (error) {
        if (this.#stopped) break;
        await this.#handleFailure(error, rejectedOnce).then((r) => (rejectedOnce = r));
      } finally {
        if (this.#client === client) this.#client = undefined;
        if (client?.usable) await client.logout().catch(() => client?.close());
      }
    }
  }

  /** Returns the new value of "a fresh credential was already asked for". */
  async #handleFailure(error: unknown, rejectedOnce: boolean): Promise<boolean> {
    if (error instanceof CredentialUnavailableError && error.kind !== "transient" && error.kind !== "no-answer") {
      await this.#needsAdmin(error.message, error.code, error.fix);
      return false;
    }
    const failure = classifyImapError(error);
    if (failure.kind === "auth") {
      if (!rejectedOnce) {
        this.#log.warn({ problem: failure.text }, "server refused the credential; asking token-service for a fresh one");
        return true;
      }
      await this.#needsAdmin(failure.text, "auth-failed", "check the mailbox's password or OAuth grant, then fix the config");
      return false;
    }
    const delay = failure.retryAfterMs ?? this.#backoff.next();
    await this.#setState("backing-off", { message: failure.text, code: failure.kind, fix: null });
    this.#log.warn({ problem: failure.text, retryInMs: delay }, "mailbox check failed; backing off");
    await this.#sleep(delay);
    return rejectedOnce;
  }

  async #needsAdmin(message: string, code: string | null, fix: string | null): Promise<void> {
    await this.#setState("needs-admin", { message, code, fix });
    this.#log.error({ problem: message, code, fix }, "mailbox needs an administrator");
    // Slow, fixed retry: a fixed password or grant is picked up without a restart, and the
    // provider is never hammered (at most one login attempt per interval).
    await this.#sleep(this.o.needsAdminRetryMs ?? 60_000);
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
      clientInfo: { name: "Postroom" },
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
      cursor =
        this.o.mailbox.inbound.firstStart === "from-now"
          ? { uidValidity, lastUid: uidNext - 1, historyUntil: 0 }
          : { uidValidity, lastUid: 0, historyUntil: uidNext - 1 };
      this.#log.info({ firstStart: this.o.mailbox.inbound.firstStart, uidNext }, "first start of this mailbox");
    } else {
      // UIDVALIDITY changed: every UID is new. Re-read everything but treat it as history, so
      // nothing already offered is offered again. (Re-mapping by Message-ID + content hash, to
      // also offer mail that truly arrived during the change, is the ingestion work still to come.)
      cursor = { uidValidity, lastUid: 0, historyUntil: uidNext - 1 };
      this.#log.warn({ previous: stored.uidValidity, uidValidity }, "UIDVALIDITY changed; re-reading the folder as history");
    }
    await this.o.cursors.put(this.#cursorKey(), JSON.stringify(cursor));
    return cursor;
  }

  /** The archiver's pause, if it has asked for one (archive full): mail then stays on the server. */
  async #pausedReason(): Promise<string | undefined> {
    const entry = await this.o.controlKv.get(ingestKey(this.o.tenant.id, this.o.mailbox.id));
    if (!entry?.value.length) return undefined;
    const control = IngestControl.safeParse(entry.json());
    return control.success && control.data.paused ? (control.data.reason ?? "paused by the archiver") : undefined;
  }

  async #check(client: ImapFlow): Promise<void> {
    const paused = await this.#pausedReason();
    if (paused) {
      await this.#setState("paused", { message: paused, code: "archive-paused", fix: "free space or raise the archive quota; ingestion resumes by itself" });
      return;
    }
    await this.#setState("polling");
    const box = client.mailbox;
    if (!box) throw new Error("no folder selected");
    const uidValidity = Number(box.uidValidity);
    const cursor = await this.#loadCursor(uidValidity, box.uidNext);
    const found = await client.search({ uid: `${cursor.lastUid + 1}:*` }, { uid: true });
    const uids = (found || []).filter((u) => u > cursor.lastUid).sort((a, b) => a - b);
    this.#status.backlog = uids.length;
    for (const uid of uids) {
      if (this.#stopped) return;
      await this.#ingest(client, cursor, uid);
      cursor.lastUid = uid;
      await this.o.cursors.put(this.#cursorKey(), JSON.stringify(cursor));
      this.#status.backlog--;
    }
    this.#status.lastCheckAt = new Date().toISOString();
  }

  async #ingest(client: ImapFlow, cursor: Cursor, uid: number): Promise<void> {
    const { tenant, mailbox, names } = this.o;
    const source: SourceKey = { protocol: "imap", tenant: tenant.id, mailbox: mailbox.id, folder: mailbox.inbound.folder, uidValidity: cursor.uidValidity, uid };
    const key = messageKey(source);
    const meta = await client.fetchOne(String(uid), { uid: true, internalDate: true, size: true }, { uid: true });
    if (!meta) return; // expunged between SEARCH and FETCH
    const download = await client.download(String(uid), undefined, { uid: true });
    if (!download?.content) return;
    // Hash while streaming into the object store: the message is never held whole in memory.
    const hash = createHash("sha256");
    let size = 0;
    const tee = new PassThrough();
    tee.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
    });
    download.content.pipe(tee);
    await this.o.rawStore.put({ name: key }, Readable.toWeb(tee) as ReadableStream<Uint8Array>);
    const internalDate = meta.internalDate instanceof Date ? meta.internalDate : new Date(meta.internalDate ?? Date.now());
    const event: MailReceived = {
      version: "v1",
      messageKey: key,
      source,
      raw: { bucket: names.buckets.rawMail, name: key, size, sha256: hash.digest("hex") },
      receivedAt: internalDate.toISOString(),
      fetchedAt: new Date().toISOString(),
      offer: uid > cursor.historyUntil,
      oversize: size > mailbox.inbound.maxMessageBytes,
    };
    await publishJson(this.o.js, names.subjects.mailReceived(tenant.id, mailbox.id), event, { msgId: key });
    this.#status.lastMessageAt = event.fetchedAt;
    this.#log.info({ uid, size, offer: event.offer }, "message published");
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
        await client.messageFlagsAdd(uid, ["\\Seen"], { uid: true });
        break;
      case "move":
        await client.messageMove(uid, afterImport.folder!, { uid: true });
        break;
      case "delete":
        await client.messageDelete(uid, { uid: true });
        break;
    }
    return ack;
  }

  async #setState(state: MailboxState, error?: { message: string; code: string | null; fix: string | null }): Promise<void> {
    const now = new Date().toISOString();
    this.#status = {
      ...this.#status,
      state,
      updatedAt: now,
      ...(error ? { lastError: { ...error, at: now } } : {}),
    };
    try {
      await this.o.statusKv.put(this.o.names.mailboxKey(this.o.tenant.id, this.o.mailbox.id), JSON.stringify(this.#status));
    } catch (e) {
      this.#log.debug({ problem: (e as Error).message }, "status not written");
    }
  }

  #sleep(ms: number, closed?: Promise<void>): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
      void closed?.then(done);
    });
  }
}
