import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseConfig, type PostroomConfig, type PostroomConfigInput } from "@postroom/config";
import { MailArchived, messageKey, names as namesOf, streamDefinitions, type MailReceived, type Names, type SourceKey } from "@postroom/contracts";
import { createPool, migrate, type Pool } from "@postroom/db";
import { connectNats, ensureStreams, jetStreamOf, openObjectStore, publishJson, type NatsConnection, type ObjectStore } from "@postroom/nats-kit";
import { createLogger } from "@postroom/telemetry";
import {
  cleanupNamespace,
  createTestDatabase,
  dbRolesInTests,
  natsUrl,
  setUpTestDatabaseRoles,
  tempDir,
  testNamespace,
  type TempDir,
  type TestDatabase,
  type TestDatabaseRoles,
} from "@postroom/testkit";
import { Archiver, type ArchiverOptions } from "./archiver.js";

/**
 * One test file's archiver against the real servers: its own PostgreSQL database, NATS namespace
 * and archive folder. Messages are delivered the way imap-poller delivers them (raw bytes in the
 * object store, then a `mail.received` event), and every `mail.archived` is recorded.
 * Test-only (excluded from the build).
 */
export class Harness {
  db!: TestDatabase;
  dir!: TempDir;
  namespace!: string;
  names!: Names;
  nc!: NatsConnection;
  /** The database's owner: fixtures and assertions. */
  pool!: Pool;
  /** What the archiver itself gets: the owner's pool, or with POSTROOM_TEST_DB_ROLES=1 one logged in as the archiver's role. */
  servicePool!: Pool;
  /** Set with POSTROOM_TEST_DB_ROLES=1. */
  roles: TestDatabaseRoles | undefined;
  raw!: ObjectStore;
  config!: PostroomConfig;
  archiver: Archiver | undefined;
  /** Every confirmation published, duplicates included (a core subscription sees each publish). */
  readonly confirmations: MailArchived[] = [];
  #options: Partial<ArchiverOptions> = {};

  get archiveRoot(): string {
    return join(this.dir.path, "archive");
  }

  static async create(prefix: string, tweak: (c: PostroomConfigInput) => void = () => undefined, options: Partial<ArchiverOptions> = {}): Promise<Harness> {
    const h = new Harness();
    h.#options = options;
    h.dir = tempDir(prefix);
    h.db = await createTestDatabase(prefix);
    h.namespace = testNamespace(prefix);
    h.names = namesOf(h.namespace);
    h.nc = await connectNats({ url: natsUrl(), name: `test-${prefix}` });
    h.pool = createPool(h.db.url);
    await migrate(h.pool);
    h.roles = dbRolesInTests() ? await setUpTestDatabaseRoles(h.db.url) : undefined;
    h.servicePool = h.roles?.poolAs("archiver") ?? h.pool;
    const input: PostroomConfigInput = {
      version: 1,
      nats: { url: natsUrl(), namespace: h.namespace },
      database: { url: h.db.url },
      archive: { path: h.archiveRoot },
      tenants: [
        {
          id: "acme",
          mailboxes: [
            {
              id: "support",
              address: "support@acme.test",
              inbound: { protocol: "imap", host: "127.0.0.1", port: 143, tls: "none" },
              auth: { type: "password", password: "env:UNUSED" },
              smtp: { host: "127.0.0.1", port: 25, tls: "none" },
            },
          ],
        },
      ],
    };
    tweak(input);
    h.config = parseConfig(JSON.stringify(input));
    await ensureStreams(h.nc, streamDefinitions(h.names));
    h.raw = await openObjectStore(h.nc, h.names.buckets.rawMail);
    const sub = h.nc.subscribe(h.names.subjects.wildcard.mailArchived());
    void (async () => {
      for await (const m of sub) h.confirmations.push(MailArchived.parse(m.json()));
    })();
    return h;
  }

  async startArchiver(options: Partial<ArchiverOptions> = {}): Promise<Archiver> {
    this.archiver = new Archiver({
      nc: this.nc,
      names: this.names,
      config: this.config,
      pool: this.servicePool,
      logger: createLogger({ service: "archiver-test", level: process.env.LOG_LEVEL ?? "warn" }),
      ...this.#options,
      ...options,
    });
    await this.archiver.start();
    return this.archiver;
  }

  async stopArchiver(): Promise<void> {
    await this.archiver?.stop();
    this.archiver = undefined;
  }

  /**
   * Delivers a message as imap-poller does. `publishId` defaults to the message key; give another
   * one to deliver the same message again past JetStream's duplicate window (a poller that
   * re-fetched it after a crash, much later).
   */
  async deliver(raw: Buffer, o: { uid: number; receivedAt?: Date; offer?: boolean; publishId?: string; mailbox?: string }): Promise<string> {
    const source: SourceKey = { protocol: "imap", tenant: "acme", mailbox: o.mailbox ?? "support", folder: "INBOX", uidValidity: 7, uid: o.uid };
    const key = messageKey(source);
    await this.raw.putBlob({ name: key }, raw);
    const event: MailReceived = {
      version: "v1",
      messageKey: key,
      source,
      raw: { bucket: this.names.buckets.rawMail, name: key, size: raw.length, sha256: createHash("sha256").update(raw).digest("hex") },
      receivedAt: (o.receivedAt ?? new Date()).toISOString(),
      fetchedAt: new Date().toISOString(),
      offer: o.offer ?? true,
      oversize: false,
    };
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailReceived("acme", source.mailbox), event, { msgId: o.publishId ?? key });
    return key;
  }

  async rows<T extends Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query<T>(sql, params)).rows;
  }

  async count(sql = "SELECT count(*) AS n FROM messages", params: unknown[] = []): Promise<number> {
    return Number((await this.rows<{ n: string }>(sql, params))[0]!.n);
  }

  async close(): Promise<void> {
    await this.stopArchiver().catch(() => undefined);
    await this.nc?.drain().catch(() => undefined);
    await this.pool?.end().catch(() => undefined);
    await cleanupNamespace(natsUrl(), this.namespace).catch(() => undefined);
    await this.db?.drop();
    await this.roles?.drop();
    await this.dir?.remove();
  }
}
