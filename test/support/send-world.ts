import { join } from "node:path";
import type { PostroomConfigInput } from "@postroom/config";
import { names, type MailboxStatus, type Names } from "@postroom/contracts";
import { connectNats, jetStreamOf, openKv, publishJson, type NatsConnection } from "@postroom/nats-kit";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  cleanupNamespace,
  createTestDatabase,
  dovecotAuthListener,
  freePort,
  natsUrl,
  startDovecot,
  startPostfix,
  tempDir,
  testNamespace,
  waitFor,
  type DovecotServer,
  type PostfixServer,
  type TempDir,
  type TestDatabase,
} from "@postroom/testkit";
import nodemailer from "nodemailer";
import pg from "pg";
import { PostroomSystem } from "./system.js";

export const SUPPORT = "support@acme.test";
export const CUSTOMER = "ann@customer.test";
export const COLLEAGUE = "bob@customer.test";
export const TEAM = "team@acme.test";
export const RECORDS = "records@acme.test";
export const LEGAL = "legal@acme.test";
/** Every mailbox in the test Dovecot has this password. */
export const PASSWORD = "correct horse battery staple";

/**
 * A world for sending tests: Dovecot with the contact centre's and the customers' mailboxes, a real
 * Postfix that takes submissions (STARTTLS by default, the certificate verified through
 * NODE_EXTRA_CA_CERTS) and delivers into those Dovecot mailboxes, plus the database, NATS namespace
 * and the five services as processes. What a customer receives is read from their real mailbox.
 */
export class SendWorld {
  dovecot!: DovecotServer;
  postfix!: PostfixServer;
  db!: TestDatabase;
  dir!: TempDir;
  namespace!: string;
  names!: Names;
  nc!: NatsConnection;
  pool!: pg.Pool;
  system!: PostroomSystem;
  config!: PostroomConfigInput;

  static async create(prefix: string, options: { tls?: "starttls" | "implicit"; tweak?: (config: PostroomConfigInput) => void } = {}): Promise<SendWorld> {
    const w = new SendWorld();
    w.dir = tempDir(prefix);
    const saslPort = await freePort();
    w.dovecot = await startDovecot({
      users: [SUPPORT, CUSTOMER, COLLEAGUE, TEAM, RECORDS, LEGAL].map((user) => ({ user, password: PASSWORD })),
      lmtp: true,
      extraConfig: dovecotAuthListener(saslPort),
    });
    w.postfix = await startPostfix({ lmtpPort: w.dovecot.info.lmtpPort!, saslPort });
    w.db = await createTestDatabase(prefix);
    w.namespace = testNamespace(prefix);
    w.names = names(w.namespace);
    w.nc = await connectNats({ url: natsUrl(), name: `e2e-${prefix}` });
    w.pool = new pg.Pool({ connectionString: w.db.url, max: 2 });
    const tls = options.tls ?? "starttls";
    w.config = {
      version: 1,
      nats: { url: natsUrl(), namespace: w.namespace },
      database: { url: w.db.url },
      archive: { path: join(w.dir.path, "archive") },
      tenants: [
        {
          id: "acme",
          acd: { type: "builtin" },
          mailboxes: [
            {
              id: "support",
              address: SUPPORT,
              displayName: "ACME Support",
              inbound: { protocol: "imap", host: "127.0.0.1", port: w.dovecot.info.imapPort, tls: "none", checkIntervalSeconds: 30 },
              auth: { type: "password", password: "env:SUPPORT_PASSWORD" },
              smtp: {
                host: "127.0.0.1",
                port: tls === "implicit" ? w.postfix.info.smtpsPort : w.postfix.info.submissionPort,
                tls,
                maxMessageBytes: 40 * 1024 * 1024,
              },
              defaultCc: [TEAM],
              defaultBcc: [RECORDS],
            },
          ],
        },
      ],
    };
    options.tweak?.(w.config);
    w.system = new PostroomSystem({
      config: w.config,
      dir: w.dir.path,
      // The services verify Postfix's certificate like any other: by trusting its CA.
      env: { SUPPORT_PASSWORD: PASSWORD, NODE_EXTRA_CA_CERTS: w.postfix.info.caCertPath },
    });
    return w;
  }

  /** Waits until the poller has opened the support mailbox. */
  async mailboxReady(timeoutMs = 30_000): Promise<void> {
    const kv = await openKv(this.nc, this.names.buckets.mailboxStatus);
    await waitFor(
      async () => {
        const e = await kv.get(this.names.mailboxKey("acme", "support"));
        return e?.value.length ? (e.json() as MailboxStatus).state === "idle" : false;
      },
      { timeoutMs, what: `mailbox idle\n${this.system.dump()}` },
    );
  }

  /** smtp-sender's status entry for the support mailbox, if any. */
  async smtpStatus(): Promise<MailboxStatus | undefined> {
    const kv = await openKv(this.nc, this.names.buckets.mailboxStatus);
    const e = await kv.get(this.names.mailboxSmtpKey("acme", "support"));
    return e?.value.length ? (e.json() as MailboxStatus) : undefined;
  }

  async rows<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query<T>(sql, params)).rows;
  }

  /** Puts a customer's email into the support INBOX and waits until it is archived; returns its message key. */
  async archivedOriginal(raw: Buffer, timeoutMs = 30_000): Promise<string> {
    const { uid, uidValidity } = await this.dovecot.appendMessage(SUPPORT, raw);
    const key = `acme/support/imap/INBOX/${uidValidity}/${uid}`;
    await waitFor(async () => (await this.rows("SELECT 1 FROM messages WHERE message_key = $1", [key])).length > 0, {
      timeoutMs,
      what: `original archived\n${this.system.dump()}`,
    });
    return key;
  }

  /** Publishes a send command; `msgId` other than the command id simulates a redelivery outside JetStream's duplicate window. */
  async requestSend(command: Record<string, unknown>, msgId = String(command.commandId)): Promise<void> {
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailSend("acme", "support"), { version: "v1", tenant: "acme", mailbox: "support", requestedAt: new Date().toISOString(), cc: [], bcc: [], ...command }, {
      msgId,
    });
  }

  /** Publishes a send command for another mailbox of tenant acme. */
  async publishFor(mailbox: string, command: Record<string, unknown>): Promise<void> {
    await publishJson(jetStreamOf(this.nc), this.names.subjects.mailSend("acme", mailbox), { version: "v1", tenant: "acme", mailbox, requestedAt: new Date().toISOString(), cc: [], bcc: [], ...command }, {
      msgId: String(command.commandId),
    });
  }

  /** Every message in a user's INBOX, raw. */
  async inbox(user: string): Promise<Buffer[]> {
    return this.dovecot.withImap(user, async (client) => {
      const lock = await client.getMailboxLock("INBOX", { readOnly: true });
      try {
        if (client.mailbox === false || client.mailbox.exists === 0) return [];
        const out: Buffer[] = [];
        for await (const m of client.fetch("1:*", { source: true })) out.push(m.source!);
        return out;
      } finally {
        lock.release();
      }
    });
  }

  /** Waits until `user`'s INBOX holds at least `count` messages matching `match`; returns them. */
  async waitForMail(user: string, match: (raw: string) => boolean, count = 1, timeoutMs = 30_000): Promise<Buffer[]> {
    return waitFor(
      async () => {
        const found = (await this.inbox(user)).filter((m) => match(m.toString("latin1")));
        return found.length >= count ? found : undefined;
      },
      { timeoutMs, what: `${count} matching message(s) in ${user}'s INBOX\n${this.system.dump()}` },
    );
  }

  /** Sends as a customer through Postfix (to answer a reply), the way their mail client would. */
  async sendAs(user: string, message: { to: string; subject: string; text: string; inReplyTo?: string; references?: string[] }): Promise<void> {
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port: this.postfix.info.submissionPort,
      requireTLS: true,
      tls: { ca: await import("node:fs/promises").then((fs) => fs.readFile(this.postfix.info.caCertPath)) },
      auth: { user, pass: PASSWORD },
    });
    try {
      await transport.sendMail({ from: user, ...message });
    } finally {
      transport.close();
    }
  }

  /** The last event published on a subject of the mail stream, or undefined. */
  async lastEvent<T>(subject: string): Promise<T | undefined> {
    const jsm = await jetstreamManager(this.nc);
    try {
      const m = await jsm.streams.getMessage(this.names.streams.mail, { last_by_subj: subject });
      return m ? (m.json() as T) : undefined;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    await this.system?.stop();
    await this.pool?.end();
    await this.nc?.drain();
    await cleanupNamespace(natsUrl(), this.namespace).catch(() => undefined);
    await this.db?.drop();
    await this.postfix?.stop();
    await this.dovecot?.stop();
    await this.dir?.remove();
  }
}
