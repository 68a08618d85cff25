import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { PostroomConfigInput } from "@postroom/config";
import { names, type MailboxStatus, type Names } from "@postroom/contracts";
import { jetStreamOf, openKv, publishJson, type NatsConnection } from "@postroom/nats-kit";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  dovecotAuthListener,
  dovecotOAuth2,
  freePort,
  natsUrl,
  startDovecot,
  startFakeIdentityPlatform,
  startPostfix,
  tempDir,
  testNamespace,
  waitFor,
  type DovecotOAuth2Profile,
  type DovecotServer,
  type FakeIdentityPlatform,
  type PostfixServer,
  type TempDir,
  type TestDatabase,
} from "@postroom/testkit";
import nodemailer from "nodemailer";
import pg from "pg";
import { secureWorld, worldDatabase, type SecureOptions, type WorldSecurity } from "./secure.js";
import { PostroomSystem } from "./system.js";

export const SUPPORT = "support@acme.test";
export const CUSTOMER = "ann@customer.test";
export const COLLEAGUE = "bob@customer.test";
export const TEAM = "team@acme.test";
export const RECORDS = "records@acme.test";
export const LEGAL = "legal@acme.test";
/** Every mailbox in the test Dovecot has this password. */
export const PASSWORD = "correct horse battery staple";
/** The Microsoft 365 app of the `oauth` profile. */
export const M365 = {
  tenantId: "3f2c9a4e-6b1d-4c8e-9a7f-0d5e2b1c4a88",
  clientId: "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66",
  objectId: "0d1e2f30-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
  secret: "Qz7~send-oauth-secret-value.7Hk2",
};

/**
 * Exchange Online with basic authentication switched off for SMTP: every PLAIN/LOGIN over
 * Postfix's SASL is refused with Exchange's enhanced code in the reason (Postfix itself always
 * answers 535 5.7.8 and appends Dovecot's reason; Dovecot's static args stop at a space, hence the
 * one-word reason). XOAUTH2 is not affected.
 */
const BASIC_SMTP_OFF = `
protocol smtp {
  passdb {
    driver = static
    deny = yes
    mechanisms = plain login
    args = nopassword=y reason=5.7.139
  }
}
`;

export interface SendWorldOptions {
  /** How smtp-sender reaches Postfix: STARTTLS on the submission port (default) or implicit TLS. */
  tls?: "starttls" | "implicit";
  /**
   * Microsoft 365: a fake identity platform, Dovecot accepting XOAUTH2 tokens for IMAP and SMTP
   * (SMTP.SendAsApp, the app granted on the support mailbox), password SMTP refused with 5.7.139.
   * The support mailbox reads with `microsoft365`; its smtp starts with `auth: password`.
   */
  oauth?: boolean;
  /** Extra environment for every service (e.g. POSTROOM_SENT_FOLDER). */
  env?: Record<string, string>;
  tweak?: (config: PostroomConfigInput) => void;
  /** Appended to Postfix's main.cf (e.g. a recipient it refuses at RCPT time). */
  postfixMainCf?: string;
  /** Secure bus / database roles; default from secure mode (see secure.ts). */
  security?: SecureOptions;
}

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
  idp: FakeIdentityPlatform | undefined;
  oauth: DovecotOAuth2Profile | undefined;
  security!: WorldSecurity;

  static async create(prefix: string, options: SendWorldOptions = {}): Promise<SendWorld> {
    const w = new SendWorld();
    w.dir = tempDir(prefix);
    const saslPort = await freePort();
    let extraConfig = dovecotAuthListener(saslPort);
    let authMechanisms: string[] | undefined;
    if (options.oauth) {
      w.idp = await startFakeIdentityPlatform({
        apps: [{ tenantId: M365.tenantId, clientId: M365.clientId, objectId: M365.objectId, secrets: [{ value: M365.secret }], roles: ["IMAP.AccessAsApp", "SMTP.SendAsApp"] }],
        grants: { [SUPPORT]: [M365.clientId] },
      });
      w.oauth = await dovecotOAuth2({ introspectionUrl: w.idp.info.introspectionUrl, caCertPath: w.idp.info.caCertPath, grants: { [SUPPORT]: [M365.clientId] } });
      authMechanisms = w.oauth.authMechanisms;
      extraConfig = `${BASIC_SMTP_OFF}\n${w.oauth.extraConfig}\n${extraConfig}`;
    }
    w.dovecot = await startDovecot({
      users: [SUPPORT, CUSTOMER, COLLEAGUE, TEAM, RECORDS, LEGAL].map((user) => ({ user, password: PASSWORD })),
      lmtp: true,
      extraConfig,
      ...(authMechanisms ? { authMechanisms } : {}),
    });
    w.postfix = await startPostfix({ lmtpPort: w.dovecot.info.lmtpPort!, saslPort, ...(options.postfixMainCf ? { extraMainCf: options.postfixMainCf } : {}) });
    w.db = await worldDatabase(prefix);
    w.namespace = testNamespace(prefix);
    w.names = names(w.namespace);
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
    let caPath = w.postfix.info.caCertPath;
    if (options.oauth) {
      const support = w.config.tenants[0]!.mailboxes[0]!;
      support.auth = { type: "microsoft365", tenantId: M365.tenantId, clientId: M365.clientId, clientSecret: "env:M365_CLIENT_SECRET", authorityHost: w.idp!.info.authorityHost };
      support.smtp = { ...support.smtp!, auth: { type: "password", password: "env:SUPPORT_PASSWORD" } };
      // NODE_EXTRA_CA_CERTS names one file: Postfix's and the identity platform's CAs together.
      caPath = join(w.dir.path, "extra-ca.pem");
      await writeFile(caPath, `${await readFile(w.postfix.info.caCertPath, "utf8")}\n${await readFile(w.idp!.info.caCertPath, "utf8")}`);
    }
    options.tweak?.(w.config);
    w.security = await secureWorld(w.config, w.dir.path, prefix, options.security);
    w.nc = w.security.nc;
    w.system = new PostroomSystem({
      config: w.config,
      dir: w.dir.path,
      // The services verify Postfix's certificate like any other: by trusting its CA.
      env: { ...w.security.env, SUPPORT_PASSWORD: PASSWORD, M365_CLIENT_SECRET: M365.secret, NODE_EXTRA_CA_CERTS: caPath, ...options.env },
    });
    return w;
  }

  /** Rewrites the config file the services read at start (restart a service to apply it). */
  async rewriteConfig(change: (config: PostroomConfigInput) => void): Promise<void> {
    change(this.config);
    await this.system.start([]);
  }

  /** Waits until the poller has opened the support mailbox. */
  // Generous: five services start through tsx, and on a loaded two-core machine that can take a
  // minute before the poller reports the mailbox idle.
  async mailboxReady(timeoutMs = 120_000): Promise<void> {
    const kv = await openKv(this.nc, this.names.buckets.mailboxStatus);
    await waitFor(
      async () => {
        const e = await kv.get(this.names.mailboxKey("acme", "support"));
        return e?.value.length ? (e.json() as MailboxStatus).state === "idle" : false;
      },
      { timeoutMs, what: () => `mailbox idle\n${this.system.dump()}` },
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
      what: () => `original archived\n${this.system.dump()}`,
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

  /** Every message in a user's INBOX (or another folder), raw; none when the folder does not exist. */
  async inbox(user: string, folder = "INBOX"): Promise<Buffer[]> {
    return this.dovecot.withImap(user, async (client) => {
      if (folder !== "INBOX" && !(await client.list()).some((m) => m.path === folder)) return [];
      const lock = await client.getMailboxLock(folder, { readOnly: true });
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
      { timeoutMs, what: () => `${count} matching message(s) in ${user}'s INBOX\n${this.system.dump()}` },
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

  /** Every event published so far on a subject of the mail stream, in order. */
  async events<T>(subject: string): Promise<T[]> {
    const consumer = await jetStreamOf(this.nc).consumers.get(this.names.streams.mail, { filter_subjects: subject }); // one subject: nats-server 2.9 knows only filter_subject
    const info = await consumer.info(true);
    const out: T[] = [];
    if (info.num_pending === 0) return out;
    const batch = await consumer.fetch({ max_messages: info.num_pending, expires: 2_000 });
    for await (const m of batch) {
      out.push(m.json() as T);
      if (m.info.pending === 0) break;
    }
    return out;
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
    await this.security?.closeNats(this.namespace);
    await this.db?.drop();
    await this.security?.dropRoles();
    await this.postfix?.stop();
    await this.dovecot?.stop();
    await this.oauth?.dir.remove();
    await this.idp?.stop();
    await this.dir?.remove();
  }
}
