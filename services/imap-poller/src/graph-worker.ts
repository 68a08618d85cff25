import { createHash } from "node:crypto";
import { graphEndpoint } from "@postroom/config";
import { INLINE_RAW_MAX_BYTES, messageKey, type Credential, type MailArchived, type MailboxStatus, type MailReceived, type SourceKey } from "@postroom/contracts";
import { ack, liveKeys, PublishWindow, type DurableConsumer, type Verdict } from "@postroom/nats-kit";
import type { Logger } from "@postroom/telemetry";
import { commitConsumer } from "./commit-consumer.js";
import { GraphClient, GraphError, type DeltaItem } from "./graph-client.js";
import { withDeadline } from "./lease.js";
import type { MailboxWorkerOptions, Worker } from "./mailbox-worker.js";
import { RAW_CHUNK_BYTES, storeRaw } from "./raw-store.js";
import { ingestPausedReason, Recovery } from "./recovery.js";
import { Pause, StatusReport } from "./worker-state.js";

/** What the poller remembers about one Graph message id (KV bucket `cursors`). */
type SeenState = "published" | "skipped";

/** A token is renewed this long before token-service says it expires. */
const TOKEN_MARGIN_MS = 60_000;

/**
 * Reads one Exchange Online folder through Microsoft Graph, for mailboxes whose IMAP is turned off.
 * Each check walks the folder's delta query from the last `@odata.deltaLink` (the cursor, like
 * IMAP's last UID), fetches each new message's MIME with `$value` into the object store, and
 * publishes one event per message under a key made of Graph's immutable id. Ids already published
 * are remembered in KV, so a delta that lists a message again (it was marked read, or the server
 * lost the delta state and answered 410, and the walk starts over) never offers it twice. The
 * after-import action (mark read, move, delete) runs through Graph only when the archiver's
 * "archived" event comes back, the same commit point as IMAP and POP3.
 */
export class GraphWorker implements Worker {
  #stopped = false;
  readonly #pause = new Pause();
  #loop: Promise<void> | undefined;
  #commit: DurableConsumer<MailArchived> | undefined;
  #seen: Map<string, SeenState> | undefined;
  readonly #report: StatusReport;
  #credential: Credential | undefined;
  #rejected = false;
  readonly #log: Logger;
  readonly #recovery: Recovery;
  readonly #window: PublishWindow;
  readonly #graph: GraphClient;
  readonly #user: string;

  constructor(private readonly o: MailboxWorkerOptions) {
    this.#log = o.logger.child({ tenant: o.tenant.id, mailbox: o.mailbox.id, protocol: "graph" });
    this.#window = new PublishWindow({ js: o.js, max: 64, timeoutMs: o.timeoutMs ?? 30_000 });
    this.#recovery = new Recovery({
      log: this.#log,
      setState: (state, error) => this.#report.set(state, error),
      sleep: (ms) => this.#pause.sleep(ms),
      ...(o.needsAdminRetryMs !== undefined ? { needsAdminRetryMs: o.needsAdminRetryMs } : {}),
    });
    this.#user = o.mailbox.graph.user ?? o.mailbox.address;
    this.#graph = new GraphClient({ endpoint: graphEndpoint(o.mailbox), token: () => this.#token(), timeoutMs: o.timeoutMs ?? 30_000 });
    this.#report = new StatusReport(o, "graph", this.#log);
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
    this.#stopped = true;
    await this.#commit?.stop();
    this.#pause.kick();
    await this.#loop;
    await this.#report.set("stopped");
  }

  async abort(): Promise<void> {
    this.#stopped = true;
    this.#report.silenced = true;
    this.#pause.kick();
    void this.#commit?.stop();
    await withDeadline(this.#loop ?? Promise.resolve(), 5_000, "worker abort").catch(() => undefined);
  }

  /** The folder's cursors: `<mailbox>.graph.<folder>` prefixes the seen ids, `-delta` the link. */
  #prefix(): string {
    const folder = Buffer.from(this.o.mailbox.inbound.folder.toLowerCase()).toString("base64url");
    return `${this.o.names.mailboxKey(this.o.tenant.id, this.o.mailbox.id)}.graph.${folder}`;
  }

  #seenKey(id: string): string {
    // Hashed: Graph ids run to 150 characters and more; the id itself is in the value.
    return `${this.#prefix()}.${createHash("sha256").update(id).digest("base64url")}`;
  }

  /** A Graph token from token-service, kept until shortly before it expires. */
  async #token(): Promise<string> {
    const c = this.#credential;
    if (c?.mechanism === "XOAUTH2" && Date.parse(c.expiresAt) - TOKEN_MARGIN_MS > Date.now() && !this.#rejected) return c.accessToken;
    const fresh = await this.o.credentials.get(this.o.tenant.id, this.o.mailbox.id, "graph", this.#rejected);
    this.#rejected = false;
    if (fresh.mechanism !== "XOAUTH2") throw new GraphError(0, "password-auth", "Microsoft Graph needs an OAuth token, and this mailbox's auth is a password", undefined, "use auth type microsoft365 or microsoft-delegated");
    this.#credential = fresh;
    return fresh.accessToken;
  }

  async #loadSeen(): Promise<Map<string, SeenState>> {
    if (this.#seen) return this.#seen;
    const seen = new Map<string, SeenState>();
    for (const k of await liveKeys(this.o.cursors, `${this.#prefix()}.>`)) {
      const e = await this.o.cursors.get(k);
      if (!e?.value.length) continue;
      const v = e.json() as { id: string; state: SeenState };
      seen.set(v.id, v.state);
    }
    this.#seen = seen;
    return seen;
  }

  async #mark(id: string, state: SeenState): Promise<void> {
    await this.o.cursors.put(this.#seenKey(id), JSON.stringify({ version: "v1", id, state }));
    this.#seen?.set(id, state);
  }

  async #forget(id: string): Promise<void> {
    await this.o.cursors.delete(this.#seenKey(id));
    this.#seen?.delete(id);
  }

  /** The commit point: the archiver stored this message; now it may be marked read, moved or deleted. */
  async #archived(event: MailArchived): Promise<Verdict> {
    const source = event.source;
    const { afterImport, folder } = this.o.mailbox.inbound;
    if (source.protocol !== "graph" || source.folder !== folder || afterImport.action === "none") return ack;
    switch (afterImport.action) {
      case "mark-seen":
        await this.#graph.markRead(this.#user, source.id);
        break;
      case "move":
        await this.#graph.move(this.#user, source.id, afterImport.folder!);
        break;
      case "delete":
        await this.#graph.delete(this.#user, source.id);
        break;
    }
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
        this.#rejected = rejectedOnce;
        await this.#check();
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

  /** One walk of the delta from the cursor to a new deltaLink; starts over once if the server lost the state. */
  async #check(): Promise<void> {
    try {
      await this.#walk();
    } catch (error) {
      if (!(error instanceof GraphError) || !error.syncStateLost) throw error;
      this.#log.warn({ code: error.code }, "Graph lost the delta state; reading the folder again from the start (known messages are skipped)");
      await this.o.cursors.delete(`${this.#prefix()}-delta`);
      await this.#walk();
    }
  }

  async #walk(): Promise<void> {
    const { mailbox } = this.o;
    const inbound = mailbox.inbound;
    const seen = await this.#loadSeen();
    const cursor = await this.o.cursors.get(`${this.#prefix()}-delta`);
    const deltaLink = cursor?.value.length ? (cursor.json() as { deltaLink: string }).deltaLink : undefined;
    const startKey = `${this.#prefix()}-start`;
    const firstStart = await this.o.cursors.get(startKey);
    const firstTime = !firstStart?.value.length;
    let url: string | undefined = deltaLink ?? this.#graph.deltaStart(this.#user, inbound.folder);
    const marks: Promise<void>[] = [];
    let next: string | undefined;
    try {
      while (url !== undefined && !this.#stopped) {
        const page = await this.#graph.delta(url, mailbox.graph.pageSize);
        const fresh = page.value.filter((m) => m["@removed"] === undefined && !seen.has(m.id));
        this.#report.status.backlog = fresh.length;
        if (fresh.length > 0 && this.#report.status.state !== "polling") await this.#report.set("polling");
        for (const m of page.value) {
          if (this.#stopped || this.#window.failure !== undefined) break;
          if (m["@removed"] !== undefined) {
            // Moved out or deleted (often by our own after-import action): it can never be listed
            // here again under this folder's delta, unless moved back — then the archive's unique
            // key still holds it once.
            if (seen.get(m.id) !== undefined) await this.#forget(m.id);
            continue;
          }
          if (seen.has(m.id)) continue;
          if (firstTime && inbound.firstStart === "from-now") {
            await this.#mark(m.id, "skipped");
            continue;
          }
          await this.#publish(m, !(firstTime && inbound.firstStart === "import-history"), marks);
        }
        next = page.nextLink;
        if (page.deltaLink !== undefined) {
          // The whole delta is read: once every event is stored, the link becomes the cursor.
          await this.#window.flush();
          await Promise.all(marks);
          if (this.#window.failure !== undefined) throw this.#window.failure;
          await this.o.cursors.put(`${this.#prefix()}-delta`, JSON.stringify({ version: "v1", deltaLink: page.deltaLink }));
          if (firstTime) await this.o.cursors.put(startKey, JSON.stringify({ version: "v1", at: new Date().toISOString(), policy: inbound.firstStart }));
        }
        url = next;
      }
    } finally {
      await this.#window.flush().finally(() => Promise.allSettled(marks));
    }
    await Promise.all(marks);
  }

  async #publish(m: DeltaItem, offer: boolean, marks: Promise<void>[]): Promise<void> {
    const { tenant, mailbox, names } = this.o;
    const source: SourceKey = { protocol: "graph", tenant: tenant.id, mailbox: mailbox.id, folder: mailbox.inbound.folder, id: m.id };
    const key = messageKey(source);
    const { body, length } = await this.#graph.mime(this.#user, m.id);
    let raw: { size: number; sha256: string };
    let inline: Buffer | undefined;
    if (length !== undefined && length <= INLINE_RAW_MAX_BYTES) {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      inline = Buffer.concat(chunks);
      raw = { size: inline.length, sha256: createHash("sha256").update(inline).digest("hex") };
      if (inline.length > INLINE_RAW_MAX_BYTES) {
        await this.o.rawStore.putBlob({ name: key, options: { max_chunk_size: RAW_CHUNK_BYTES } }, inline);
        inline = undefined;
      }
    } else {
      raw = await storeRaw(this.o.rawStore, key, body, this.o.timeoutMs ?? 30_000);
    }
    const now = new Date().toISOString();
    const received = m.receivedDateTime && !Number.isNaN(Date.parse(m.receivedDateTime)) ? new Date(m.receivedDateTime).toISOString() : now;
    const event: MailReceived = {
      version: "v1",
      messageKey: key,
      source,
      raw: { bucket: names.buckets.rawMail, name: key, size: raw.size, sha256: raw.sha256 },
      receivedAt: received,
      fetchedAt: now,
      offer,
      oversize: raw.size > mailbox.inbound.maxMessageBytes,
      ...(inline ? { rawInline: inline.toString("base64") } : {}),
    };
    await this.#window.send(names.subjects.mailReceived(tenant.id, mailbox.id), event, { msgId: key }, () => {
      // Remembered once the event is stored: a crash in between publishes it again under the same key.
      const mark = this.#mark(m.id, "published");
      mark.catch(() => undefined);
      marks.push(mark);
      this.#report.status.backlog = Math.max(0, this.#report.status.backlog - 1);
      this.#report.status.lastMessageAt = now;
      this.#report.status.published = (this.#report.status.published ?? 0) + 1;
      this.#log.info({ size: raw.size, offer }, "message published");
    });
  }


}
