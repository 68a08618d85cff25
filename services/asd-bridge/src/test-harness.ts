import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PostroomConfig, type PostroomConfigInput } from "@postroom/config";
import { names as namesOf, streamDefinitions, type MailArchived, type Names } from "@postroom/contracts";
import { createPool, migrate, type Pool } from "@postroom/db";
import { connectNats, ensureStreams, jetStreamOf, publishJson, type NatsConnection } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import {
  cleanupNamespace,
  createTestDatabase,
  dbRolesInTests,
  natsUrl,
  setUpTestDatabaseRoles,
  tempDir,
  testNamespace,
  waitFor,
  type TempDir,
  type TestDatabase,
  type TestDatabaseRoles,
} from "@postroom/testkit";
import { Writable } from "node:stream";
import { AsdBridge, type BridgeOptions } from "./bridge.js";

/**
 * One test file's world for asd-bridge: its own PostgreSQL database (migrated), NATS namespace
 * with the streams, an archive folder, and a bridge in this process with the agent API on a
 * free port. Mail is put in the way the archiver leaves it — rows in messages/addresses/
 * attachments, files on disk — and announced with a real `mail.archived` event.
 */
export class BridgeHarness {
  db!: TestDatabase;
  /** The database's owner: fixtures (the archiver's rows) and assertions. */
  pool!: Pool;
  /** What the bridge itself gets: the owner's pool, or with POSTROOM_TEST_DB_ROLES=1 one logged in as asd-bridge's role. */
  servicePool!: Pool;
  /** Set with POSTROOM_TEST_DB_ROLES=1. */
  roles: TestDatabaseRoles | undefined;
  nc!: NatsConnection;
  names!: Names;
  namespace!: string;
  dir!: TempDir;
  config!: PostroomConfig;
  bridge!: AsdBridge;
  readonly logs: string[] = [];
  #n = 0;
  readonly #events = new Map<string, MailArchived>();

  /**
   * `databaseUrl` rewrites the URL the bridge's own pool connects with (the fixtures' pool keeps the
   * real one): an outage test puts a proxy it can cut in front of PostgreSQL.
   */
  static async create(
    prefix: string,
    config: (archive: string) => Omit<PostroomConfigInput, "version" | "database" | "archive" | "nats">,
    env: Record<string, string> = {},
    options: Partial<BridgeOptions> = {},
    harness: { databaseUrl?: (url: string) => string } = {},
  ): Promise<BridgeHarness> {
    const h = new BridgeHarness();
    h.dir = tempDir(prefix);
    h.db = await createTestDatabase(prefix);
    h.pool = createPool(h.db.url);
    await migrate(h.pool);
    h.roles = dbRolesInTests() ? await setUpTestDatabaseRoles(h.db.url) : undefined;
    const via = harness.databaseUrl;
    h.servicePool = h.roles?.poolAs("asd-bridge", via ? { url: via } : {}) ?? (via ? createPool(via(h.db.url)) : h.pool);
    h.namespace = testNamespace(prefix);
    h.names = namesOf(h.namespace);
    h.nc = await connectNats({ url: natsUrl(), name: `test-${prefix}` });
    await ensureStreams(h.nc, streamDefinitions(h.names, { replicas: 1 }));
    const archive = join(h.dir.path, "archive");
    h.config = PostroomConfig.parse({ version: 1, nats: { url: natsUrl(), namespace: h.namespace }, database: { url: h.db.url }, archive: { path: archive }, agentApi: { port: 0 }, ...config(archive) });
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (h.logs.push(chunk.toString()), cb()) });
    const logger = createLogger({ service: "asd-bridge", level: "debug", destination: sink });
    h.#make = () => new AsdBridge({ nc: h.nc, names: h.names, config: h.config, pool: h.servicePool, logger, env, ...options });
    h.bridge = h.#make();
    return h;
  }

  #make: () => AsdBridge = () => {
    throw new Error("not created");
  };

  /** A new bridge process's worth of state (the old one must be stopped): what a restart does. */
  async restart(): Promise<void> {
    this.bridge = this.#make();
    await this.bridge.start();
  }

  /** Puts one archived email in the database (and its parts on disk) and announces it. */
  async deliver(tenant: string, mailbox: string, m: { from?: string; to?: string[]; cc?: string[]; replyTo?: string[]; subject?: string; text?: string | null; html?: string; attachments?: { name: string; content: Buffer }[] } = {}): Promise<{ messageId: string; messageKey: string }> {
    const n = ++this.#n;
    const messageKey = `${tenant}/${mailbox}/imap/INBOX/1/${n}`;
    const path = join(this.dir.path, "archive", tenant, mailbox, `1-${n}`);
    await mkdir(join(path, "parts"), { recursive: true });
    const from = m.from ?? "ann@customer.example";
    const to = m.to ?? [`${mailbox}@${tenant}.test`];
    const conv = await this.pool.query<{ id: string }>("INSERT INTO conversations (tenant, mailbox, subject) VALUES ($1, $2, $3) RETURNING id", [tenant, mailbox, m.subject ?? ""]);
    const row = await this.pool.query<{ id: string }>(
      `INSERT INTO messages (message_key, tenant, mailbox, direction, protocol, folder, uid_validity, uid, rfc_message_id, subject, from_address,
         received_at, size, sha256, archive_path, text_body, html_body, conversation_id)
       VALUES ($1, $2, $3, 'inbound', 'imap', 'INBOX', 1, $4, $5, $6, $7, now(), 100, $8, $9, $10, $11, $12) RETURNING id`,
      [messageKey, tenant, mailbox, n, `<m${n}@customer.example>`, m.subject ?? `Question ${n}`, from, "0".repeat(64), path, m.text === undefined ? "Hello" : m.text, m.html ?? null, conv.rows[0]!.id],
    );
    const id = row.rows[0]!.id;
    await this.pool.query("INSERT INTO addresses (message_id, role, address) VALUES ($1, 'from', $2)", [id, from]);
    for (const a of to) await this.pool.query("INSERT INTO addresses (message_id, role, address) VALUES ($1, 'to', $2)", [id, a]);
    for (const a of m.cc ?? []) await this.pool.query("INSERT INTO addresses (message_id, role, address) VALUES ($1, 'cc', $2)", [id, a]);
    for (const a of m.replyTo ?? []) await this.pool.query("INSERT INTO addresses (message_id, role, address) VALUES ($1, 'reply-to', $2)", [id, a]);
    for (const [i, a] of (m.attachments ?? []).entries()) {
      await writeFile(join(path, "parts", a.name), a.content);
      await this.pool.query(
        "INSERT INTO attachments (message_id, part_index, original_name, stored_name, content_type, size, sha256) VALUES ($1, $2, $3, $3, 'application/pdf', $4, $5)",
        [id, i, a.name, a.content.length, "0".repeat(64)],
      );
    }
    const now = new Date().toISOString();
    const event: MailArchived = {
      version: "v1", messageKey, tenant, mailbox, messageId: id, conversationId: conv.rows[0]!.id, archivePath: path, size: 100, sha256: "0".repeat(64),
      rfcMessageId: `<m${n}@customer.example>`, subject: m.subject ?? `Question ${n}`, from, to, cc: m.cc ?? [], flags: { autoReply: false, bounce: false, loop: false },
      classification: "human", classificationReason: null, parseError: null, offer: true, receivedAt: now, archivedAt: now, source: { protocol: "imap", tenant, mailbox, folder: "INBOX", uidValidity: 1, uid: n },
    };
    this.#events.set(messageKey, event);
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailArchived(tenant, mailbox), event, { msgId: messageKey });
    return { messageId: id, messageKey };
  }

  /** Announces the same archived email again, past JetStream's dedupe, as a re-archive after a crash would. */
  async republish(messageKey: string, attempt: number): Promise<void> {
    const event = this.#events.get(messageKey)!;
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailArchived(event.tenant, event.mailbox), event, { msgId: `${messageKey}#again-${attempt}` });
  }

  async sessionOf(messageId: string): Promise<{ id: string; state: string; agent: string | null; queue: string } | undefined> {
    return (await this.pool.query<{ id: string; state: string; agent: string | null; queue: string }>("SELECT id, state, agent, queue FROM sessions WHERE message_id = $1", [messageId])).rows[0];
  }

  /**
   * Plays the agents: closes each of these messages' sessions as soon as it is delivered (with
   * `close`, e.g. an API call), until all are, then waits for them all to be completed.
   */
  async closeAsDelivered(messageIds: string[], close: (session: { id: string; agent: string }) => Promise<void>, timeoutMs = 15_000): Promise<void> {
    const done = new Set<string>();
    while (done.size < messageIds.length) {
      const open = await waitFor(async () => {
        const r = (await Promise.all(messageIds.map((id) => this.sessionOf(id)))).filter((x) => x?.state === "delivered" && !done.has(x.id));
        return r.length ? r : undefined;
      }, { timeoutMs, what: `a delivered session (${done.size} of ${messageIds.length} closed)` });
      for (const r of open) {
        await close({ id: r!.id, agent: r!.agent! });
        done.add(r!.id);
      }
    }
    await waitFor(async () => (await Promise.all(messageIds.map((id) => this.sessionOf(id)))).every((r) => r?.state === "completed"), { timeoutMs: 10_000, what: "all completed" });
  }

  async close(): Promise<void> {
    await this.bridge?.stop().catch(() => undefined);
    await this.nc?.drain().catch(() => undefined);
    if (this.servicePool !== this.pool && !this.roles) await this.servicePool?.end().catch(() => undefined);
    await this.pool?.end().catch(() => undefined);
    await cleanupNamespace(natsUrl(), this.namespace).catch(() => undefined);
    await this.db?.drop().catch(() => undefined);
    await this.roles?.drop().catch(() => undefined);
    await this.dir?.remove().catch(() => undefined);
  }
}

/** A mailbox of a test config (`<id>@<tenant>.test`, IMAP and SMTP that are never contacted), with overrides. */
export const mailbox = (id: string, tenant: string, extra: Record<string, unknown> = {}) => ({
  id,
  address: `${id}@${tenant}.test`,
  inbound: { protocol: "imap" as const, host: "127.0.0.1", port: 143, tls: "none" as const },
  auth: { type: "password" as const, password: "env:UNUSED" },
  smtp: { host: "127.0.0.1", port: 2525, tls: "none" as const },
  ...extra,
});

/** A tiny HTTP client for the agent API. */
export async function call(base: string, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed };
}
