import type { MailArchived} from "@postroom/contracts";
import { INLINE_RAW_MAX_BYTES, messageKey, type MailboxStatus, type MailReceived, type SourceKey } from "@postroom/contracts";
import type { DurableConsumer} from "@postroom/nats-kit";
import { ack, liveKeys, PublishWindow, type Verdict } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import type { MailboxWorkerOptions, Worker } from "./mailbox-worker.js";
import { commitConsumer } from "./commit-consumer.js";
import { ingestPausedReason, Recovery } from "./recovery.js";
import { Pop3Client } from "./pop3-client.js";
import { RAW_CHUNK_BYTES, storeRaw } from "./raw-store.js";
import { createHash } from "node:crypto";
import { withDeadline } from "./lease.js";
import { Pause, StatusReport } from "./worker-state.js";

/** What the poller remembers about one UIDL (KV bucket `cursors`). */
type SeenState = "published" | "archived" | "skipped";

/**
 * Reads one POP3 mailbox. POP3 has no IDLE and no flags, so each check is a whole session:
 * connect, log in (USER/PASS or AUTH XOAUTH2), UIDL, delete what the archiver has confirmed
 * (delete-after-archiving mode), download what is new by UIDL, QUIT. The UIDL is the message's
 * identity (JetStream message id, SQL unique key); UIDLs already published are remembered in KV, so
 * "leave on server" never offers a message twice, and DELE is only ever sent for a UIDL whose
 * `mail.archived` came back — the same commit point as IMAP. DELE takes effect only at a
 * successful QUIT, so a crash before it loses nothing.
 */
export class Pop3Worker implements Worker {
  #stopped = false;
  #client: Pop3Client | undefined;
  readonly #pause = new Pause();
  #loop: Promise<void> | undefined;
  #commit: DurableConsumer<MailArchived> | undefined;
  #seen: Map<string, SeenState> | undefined;
  readonly #report: StatusReport;
  readonly #log: Logger;
  readonly #recovery: Recovery;
  /** Pipelined `mail.received` publishes (a bounded number unacknowledged at once). */
  readonly #window: PublishWindow;

  constructor(private readonly o: MailboxWorkerOptions) {
    this.#log = o.logger.child({ tenant: o.tenant.id, mailbox: o.mailbox.id, protocol: "pop3" });
    this.#window = new PublishWindow({ js: o.js, max: 64, timeoutMs: o.timeoutMs ?? 30_000 });
    this.#recovery = new Recovery({
      log: this.#log,
      setState: (state, error) => this.#report.set(state, error),
      sleep: (ms) => this.#pause.sleep(ms),
      ...(o.needsAdminRetryMs !== undefined ? { needsAdminRetryMs: o.needsAdminRetryMs } : {}),
    });
    this.#report = new StatusReport(o, "pop3", this.#log);
  }

  get status(): MailboxStatus {
    return this.#report.status;
  }

  async start(): Promise<void> {
    this.#commit = commitConsumer(this.o, this.#log, (event) => this.#archived(event));
    await this.#commit.start();
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    // Commit consumer first (no new deletions queued), then the session loop, then report.
    this.#stopped = true;
    await this.#commit?.stop();
    this.#pause.kick();
    await this.#loop;
    await this.#report.set("stopped");
  }

  async abort(): Promise<void> {
    // Dropping the connection without QUIT also discards any DELE of this session: safe.
    this.#stopped = true;
    this.#report.silenced = true;
    this.#client?.close();
    this.#pause.kick();
    void this.#commit?.stop();
    await withDeadline(this.#loop ?? Promise.resolve(), 5_000, "worker abort").catch(() => undefined);
  }

  #prefix(): string {
    return `${this.o.names.mailboxKey(this.o.tenant.id, this.o.mailbox.id)}.pop3`;
  }

  #seenKey(uidl: string): string {
    return `${this.#prefix()}.${Buffer.from(uidl).toString("base64url")}`;
  }

  async #loadSeen(): Promise<Map<string, SeenState>> {
    if (this.#seen) return this.#seen;
    const seen = new Map<string, SeenState>();
    const prefix = `${this.#prefix()}.`;
    const keys: string[] = [];
    // liveKeys, not cursors.keys(): the latter's ordered consumer may never be created while a
    // cluster node is down (see nats-kit's liveKeys).
    keys.push(...(await liveKeys(this.o.cursors, `${prefix}>`)));
    for (const k of keys) {
      const e = await this.o.cursors.get(k);
      if (!e?.value.length) continue;
      const v = e.json() as { uidl: string; state: SeenState };
      seen.set(v.uidl, v.state);
    }
    this.#seen = seen;
    return seen;
  }

  /**
   * Records a UIDL's state. Marks run one after another (the session and the commit consumer both
   * mark), and "published" never overwrites "archived": the archiver may confirm a message before
   * the session has recorded publishing it.
   */
  #mark(uidl: string, state: SeenState): Promise<void> {
    const run = this.#marks.then(async () => {
      const seen = await this.#loadSeen();
      if (state === "published" && seen.get(uidl) === "archived") return;
      await this.o.cursors.put(this.#seenKey(uidl), JSON.stringify({ version: "v1", uidl, state }));
      seen.set(uidl, state);
    });
    this.#marks = run.catch(() => undefined);
    return run;
  }

  #marks: Promise<void> = Promise.resolve();

  async #forget(uidl: string): Promise<void> {
    await this.o.cursors.delete(this.#seenKey(uidl));
    this.#seen?.delete(uidl);
  }

  /** The commit point: the archiver stored this UIDL; in delete mode the next session deletes it. */
  async #archived(event: MailArchived): Promise<Verdict> {
    const source = event.source;
    if (source.protocol !== "pop3" || this.o.mailbox.inbound.pop3LeaveOnServer) return ack;
    await this.#mark(source.uidl, "archived");
    this.#pause.kick();
    return ack;
  }

  async #run(): Promise<void> {
    let rejectedOnce = false;
    while (!this.#stopped) {
      try {
        this.#pause.kicked = false;
        const paused = await ingestPausedReason(this.o.controlKv, this.o.tenant.id, this.o.mailbox.id);
        if (paused) {
          await this.#report.set("paused", { message: paused, code: "archive-paused", fix: "free space or raise the archive quota; ingestion resumes by itself" });
          await this.#pause.sleep(Math.min(this.o.mailbox.inbound.checkIntervalSeconds * 1000, 5000));
          continue;
        }
        if (!this.#recovery.needsAdminNow) await this.#report.set(this.#report.status.lastCheckAt ? "polling" : "connecting");
        await this.#session(rejectedOnce);
        rejectedOnce = false;
        this.#recovery.needsAdminNow = false;
        this.#recovery.backoff.reset();
        this.#report.status.lastCheckAt = new Date().toISOString();
        await this.#report.set("idle");
        if (!this.#pause.kicked) await this.#pause.sleep(this.o.mailbox.inbound.checkIntervalSeconds * 1000);
      } catch (error) {
        if (this.#stopped) break;
        rejectedOnce = await this.#recovery.afterFailure(error, rejectedOnce);
      }
    }
  }

  async #session(rejected: boolean): Promise<void> {
    const { tenant, mailbox, names } = this.o;
    const inbound = mailbox.inbound;
    const credential = await this.o.credentials.get(tenant.id, mailbox.id, "pop3", rejected);
    const client = new Pop3Client({
      host: inbound.host,
      port: inbound.port ?? (inbound.tls === "implicit" ? 995 : 110),
      tls: inbound.tls,
      rejectUnauthorized: inbound.verifyCertificate,
      timeoutMs: this.o.timeoutMs ?? 30_000,
    });
    this.#client = client;
    try {
      await client.connect();
      if (credential.mechanism === "PLAIN") await client.login(credential.username, credential.password);
      else await client.authXoauth2(credential.username, credential.accessToken);
      const listing = await client.listing();
      const seen = await this.#loadSeen();
      const firstStart = await this.o.cursors.get(`${this.#prefix()}-start`);
      const firstTime = !firstStart?.value.length;
      if (firstTime && inbound.firstStart === "from-now") {
        // Start at "now": what is there is remembered, never fetched.
        for (const m of listing) if (!seen.has(m.uidl)) await this.#mark(m.uidl, "skipped");
      }
      if (firstTime) await this.o.cursors.put(`${this.#prefix()}-start`, JSON.stringify({ version: "v1", at: new Date().toISOString(), policy: inbound.firstStart }));
      const deleted: string[] = [];
      if (!inbound.pop3LeaveOnServer) {
        for (const m of listing) {
          if (seen.get(m.uidl) === "archived") {
            await client.dele(m.n);
            deleted.push(m.uidl);
          }
        }
      }
      const fresh = listing.filter((m) => !seen.has(m.uidl));
      this.#report.status.backlog = fresh.length;
      // Shown at once (see the IMAP worker), not only when the session ends.
      if (fresh.length > 0) await this.#report.set("polling");
      // Each message's event goes out through the publish window (no round trip per event); its
      // "published" mark is written once the event is stored, and all marks are awaited before
      // QUIT. A message of at most INLINE_RAW_MAX_BYTES (by LIST) travels inside the event.
      const marks: Promise<void>[] = [];
      try {
        for (const m of fresh) {
          if (this.#stopped || this.#window.failure !== undefined) break;
          const source: SourceKey = { protocol: "pop3", tenant: tenant.id, mailbox: mailbox.id, uidl: m.uidl };
          const key = messageKey(source);
          let raw: { size: number; sha256: string };
          let inline: Buffer | undefined;
          if (m.size <= INLINE_RAW_MAX_BYTES) {
            const chunks: Buffer[] = [];
            for await (const chunk of await client.retr(m.n, m.size)) chunks.push(chunk as Buffer);
            inline = Buffer.concat(chunks);
            raw = { size: inline.length, sha256: createHash("sha256").update(inline).digest("hex") };
            if (inline.length > INLINE_RAW_MAX_BYTES) {
              // LIST said less than RETR gave: store it like any large message.
              await this.o.rawStore.putBlob({ name: key, options: { max_chunk_size: RAW_CHUNK_BYTES } }, inline);
              inline = undefined;
            }
          } else {
            raw = await storeRaw(this.o.rawStore, key, await client.retr(m.n, m.size), this.o.timeoutMs ?? 30_000);
          }
          const now = new Date().toISOString();
          const event: MailReceived = {
            version: "v1",
            messageKey: key,
            source,
            raw: { bucket: names.buckets.rawMail, name: key, size: raw.size, sha256: raw.sha256 },
            receivedAt: now,
            fetchedAt: now,
            offer: !(firstTime && inbound.firstStart === "import-history"),
            oversize: raw.size > inbound.maxMessageBytes,
            ...(inline ? { rawInline: inline.toString("base64") } : {}),
          };
          await this.#window.send(names.subjects.mailReceived(tenant.id, mailbox.id), event, { msgId: key }, () => {
            // Remembered after publishing: a crash in between re-publishes under the same UIDL key.
            const mark = this.#mark(m.uidl, "published");
            mark.catch(() => undefined);
            marks.push(mark);
            this.#report.status.backlog--;
            this.#report.status.lastMessageAt = now;
            this.#report.status.published = (this.#report.status.published ?? 0) + 1;
            this.#log.info({ uidl: m.uidl, size: raw.size, offer: event.offer }, "message published");
          });
        }
      } finally {
        await this.#window.flush().finally(() => Promise.allSettled(marks));
      }
      await Promise.all(marks);
      await client.quit();
      // The deletions are committed now. UIDLs no longer on the server are forgotten: they can
      // never be fetched again, and the archive's unique key guards against a server reusing one.
      const present = new Set(listing.map((m) => m.uidl));
      for (const uidl of deleted) await this.#forget(uidl);
      for (const uidl of [...seen.keys()]) if (!present.has(uidl) && seen.get(uidl) !== "published") await this.#forget(uidl);
      if (deleted.length) this.#log.info({ deleted: deleted.length }, "archived messages deleted from the POP3 server");
    } finally {
      client.close();
      if (this.#client === client) this.#client = undefined;
    }
  }




}
