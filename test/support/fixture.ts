import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { PostroomConfigInput } from "@postroom/config";
import { names, type MailboxStatus, type Names } from "@postroom/contracts";
import { jetStreamOf, openKv, publishJson, type NatsConnection } from "@postroom/nats-kit";
import {
  natsUrl,
  startDovecot,
  startSmtpSink,
  tempDir,
  testNamespace,
  waitFor,
  type DovecotServer,
  type SmtpSink,
  type TempDir,
  type TestDatabase,
} from "@postroom/testkit";
import pg from "pg";
import type { DatabaseRoles } from "./db-roles.js";
import type { SecureBus } from "./secure-bus.js";
import { secureWorld, worldDatabase, type SecureOptions, type WorldSecurity } from "./secure.js";
import { PostroomSystem } from "./system.js";

export const SUPPORT = "support@acme.test";
export const SUPPORT_PASSWORD = "correct horse battery staple";

/**
 * One test file's world: a real Dovecot with the support mailbox, an SMTP server for replies, its
 * own PostgreSQL database and NATS namespace, and the Postroom services as processes.
 */
export class E2eWorld {
  dovecot!: DovecotServer;
  smtp!: SmtpSink;
  db!: TestDatabase;
  dir!: TempDir;
  namespace!: string;
  names!: Names;
  nc!: NatsConnection;
  pool!: pg.Pool;
  system!: PostroomSystem;
  /** The configuration the services read (after the tweak and the world's security). */
  config!: PostroomConfigInput;
  /** Set when the world runs on a private nats-server with a least-privilege user per service. */
  bus: SecureBus | undefined;
  /** Set when each service logs in to PostgreSQL as its own role (the set-up ran before the services). */
  dbRoles: DatabaseRoles | undefined;
  security: WorldSecurity | undefined;

  /**
   * `secure`: run on a private nats-server with one least-privilege user per service (default:
   * POSTROOM_E2E_SECURE_NATS=1); the test itself connects as the observer. `dbRoles`: each
   * service logs in to PostgreSQL as its own role, granted only its own tables (default:
   * POSTROOM_E2E_DB_ROLES=1); the world runs the set-up (migrations and grants, as the owner)
   * before the services start, and the test itself still queries as the owner. Secure mode
   * (POSTROOM_E2E_SECURE=1, see secure.ts) turns both on, with TLS; an explicit option wins.
   */
  static async create(
    prefix: string,
    tweak: (config: PostroomConfigInput) => void = () => undefined,
    options: SecureOptions = {},
  ): Promise<E2eWorld> {
    const w = new E2eWorld();
    w.dir = tempDir(prefix);
    w.dovecot = await startDovecot({ users: [{ user: SUPPORT, password: SUPPORT_PASSWORD }] });
    w.smtp = await startSmtpSink({ users: [{ username: SUPPORT, password: SUPPORT_PASSWORD }] });
    w.db = await worldDatabase(prefix);
    w.namespace = testNamespace(prefix);
    w.names = names(w.namespace);
    w.pool = new pg.Pool({ connectionString: w.db.url, max: 2 });
    const config: PostroomConfigInput = {
      version: 1,
      nats: { url: natsUrl(), namespace: w.namespace },
      database: { url: w.db.url },
      archive: { path: join(w.dir.path, "archive") },
      // Any free port: several worlds (and other test files) run on one machine.
      agentApi: { host: "127.0.0.1", port: 0 },
      tenants: [
        {
          id: "acme",
          acd: { type: "builtin" },
          mailboxes: [
            {
              id: "support",
              address: SUPPORT,
              inbound: {
                protocol: "imap",
                host: "127.0.0.1",
                port: w.dovecot.info.imapPort,
                tls: "none",
                // Long enough that only IDLE explains a quick pick-up.
                checkIntervalSeconds: 30,
              },
              auth: { type: "password", password: "env:SUPPORT_PASSWORD" },
              smtp: { host: "127.0.0.1", port: w.smtp.info.port, tls: "none" },
              defaultBcc: ["records@acme.test"],
            },
          ],
        },
      ],
    };
    tweak(config);
    w.config = config;
    w.security = await secureWorld(config, w.dir.path, prefix, options);
    w.bus = w.security.bus;
    w.dbRoles = w.security.dbRoles;
    w.nc = w.security.nc;
    w.system = new PostroomSystem({ config, dir: w.dir.path, env: { SUPPORT_PASSWORD, ...w.security.env } });
    return w;
  }

  /**
   * Waits until the poller has opened the mailbox (and so fixed its first-start cursor). Five
   * services start from cold here, beside other test files on two cores, so the wait is generous;
   * a timeout names the last state the poller wrote and the services' output at that moment.
   */
  async mailboxReady(timeoutMs = 60_000): Promise<void> {
    const kv = await openKv(this.nc, this.names.buckets.mailboxStatus);
    let state = "no status written";
    await waitFor(
      async () => {
        const e = await kv.get(this.names.mailboxKey("acme", "support"));
        if (e?.value.length) state = (e.json() as MailboxStatus).state;
        return state === "idle";
      },
      { timeoutMs, what: () => `mailbox idle (last state: ${state})\n${this.system.dump()}` },
    );
  }

  async rows<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query<T>(sql, params)).rows;
  }

  async emlOf(messageKey: string): Promise<Buffer> {
    const [row] = await this.rows<{ archive_path: string }>("SELECT archive_path FROM messages WHERE message_key = $1", [messageKey]);
    return readFile(join(row!.archive_path, "message.eml"));
  }

  async requestSend(command: Record<string, unknown>): Promise<void> {
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailSend("acme", "support"), { version: "v1", requestedAt: new Date().toISOString(), ...command }, {
      msgId: String(command.commandId),
    });
  }

  async close(): Promise<void> {
    await this.system?.stop();
    await this.pool?.end();
    await this.nc?.drain();
    await this.security?.closeNats(this.namespace);
    await this.db?.drop();
    await this.security?.dropRoles();
    await this.smtp?.stop();
    await this.dovecot?.stop();
    await this.dir?.remove();
  }
}
