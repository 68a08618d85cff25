import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import type { PostroomConfigInput } from "@postroom/config";
import { names, type MailboxStatus, type Names } from "@postroom/contracts";
import { jetStreamOf, openKv, publishJson, type NatsConnection } from "@postroom/nats-kit";
import {
  dovecotAuthListener,
  dovecotOAuth2,
  freePort,
  natsUrl,
  startDovecot,
  startFakeIdentityPlatform,
  startFakeGraph,
  startPostfix,
  tempDir,
  testNamespace,
  waitFor,
  type DovecotOAuth2Profile,
  type DovecotServer,
  type FakeGraph,
  type FakeIdentityPlatform,
  type PostfixServer,
  type TempDir,
  type TestDatabase,
} from "@postroom/testkit";
import pg from "pg";
import { filesHolding, jetStreamFolders, operatorEnv, runPostroom } from "./operator.js";
import { secureWorld, worldDatabase, type SecureOptions, type WorldSecurity } from "./secure.js";
import { PostroomSystem } from "./system.js";

export const TENANT_ID = "3f2c9a4e-6b1d-4c8e-9a7f-0d5e2b1c4a88";
export const APP_ID = "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66";
/** The service principal's object id (Enterprise application page). */
export const APP_OBJECT_ID = "0d1e2f30-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
export const CLIENT_SECRET = "Qz7~e2e-client-secret-value.b81KfP0w";
export const MAILBOX = "support@acme.test";
/** Password of the mailbox's passwd-file entry: only the fixtures use it to append mail. */
export const FIXTURE_PASSWORD = "fixture-only-password-5d1";
export const CUSTOMER = "ann@customer.test";
/** A public client app registration (device code, no secret) for delegated sign-in. */
export const PUBLIC_CLIENT_ID = "7e1c2d3f-4a5b-4c6d-9e8f-0a1b2c3d4e5f";
/** A Google OAuth client of type Desktop app (delegated sign-in with a loopback redirect). */
export const GOOGLE_CLIENT_ID = "601234567890-e2etestdesktopclient.apps.googleusercontent.com";
export const GOOGLE_CLIENT_SECRET = "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Q";
/** tokenStore.key of delegated worlds: wraps the sealed grants' data keys. */
export const TOKEN_STORE_KEY = "e2e-token-store-key-0f3b9c2d7a6e41b58c2d9e0f";

export interface AuthWorldOptions {
  /** Lifetime of the fake platform's tokens (default 3600 s). */
  tokenLifetimeSeconds?: number;
  /** SASL mechanisms Dovecot offers for OAuth (default XOAUTH2 only, like Exchange Online). */
  mechanisms?: Array<"xoauth2" | "oauthbearer">;
  /**
   * The mailbox signs in as a person (`microsoft-delegated`, tenant consumers, the public client)
   * instead of app-only; its grant is kept in the sealed tokenStore. Nobody has signed in yet.
   */
  delegated?: boolean;
  /**
   * The mailbox signs in as a person with Google (`google-delegated`: authorization code, PKCE,
   * a loopback redirect), the refresh token kept in the sealed tokenStore. Nobody has signed in yet.
   */
  google?: boolean;
  /**
   * The mailbox is read and sent through Microsoft Graph (the test kit's fake Graph over the same
   * Dovecot mailbox), app-only with Mail.ReadWrite and Mail.Send granted on it; no SMTP.
   */
  graph?: boolean;
  /** Google hands out a new refresh token with each refresh. */
  googleRotates?: boolean;
  /** Changes to the configuration before the world's security is applied (the bus's permissions list its mailboxes). */
  tweak?: (config: PostroomConfigInput, world: AuthWorld) => void;
  /** Secure bus / database roles; default from secure mode (see secure.ts). */
  security?: SecureOptions;
}

/**
 * A Microsoft 365 mailbox on one machine: the fake identity platform, Dovecot accepting XOAUTH2
 * through its oauth2 passdb (IMAP and POP3) with the app granted on the support mailbox, Postfix
 * submission authenticating through the same Dovecot (XOAUTH2) and delivering into it over LMTP,
 * and the Postroom services as processes with the mailbox configured as `microsoft365`.
 */
export class AuthWorld {
  idp!: FakeIdentityPlatform;
  /** With `graph`: the fake Graph server in front of the Dovecot mailbox. */
  graph!: FakeGraph;
  oauth!: DovecotOAuth2Profile;
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
  security!: WorldSecurity;

  static async create(prefix: string, options: AuthWorldOptions = {}): Promise<AuthWorld> {
    const w = new AuthWorld();
    w.dir = tempDir(prefix);
    w.idp = await startFakeIdentityPlatform({
      apps: [
        {
          tenantId: TENANT_ID,
          clientId: APP_ID,
          objectId: APP_OBJECT_ID,
          secrets: [{ value: CLIENT_SECRET }],
          roles: ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"],
          ...(options.graph ? { graphRoles: ["Mail.ReadWrite", "Mail.Send"] } : {}),
        },
        { tenantId: TENANT_ID, clientId: PUBLIC_CLIENT_ID, publicClient: true },
      ],
      grants: { [MAILBOX]: [APP_ID] },
      googleClients: [{ clientId: GOOGLE_CLIENT_ID, clientSecret: GOOGLE_CLIENT_SECRET }],
      ...(options.googleRotates ? { googleRotatesRefreshTokens: true } : {}),
      ...(options.tokenLifetimeSeconds ? { tokenLifetimeSeconds: options.tokenLifetimeSeconds } : {}),
    });
    w.oauth = await dovecotOAuth2({
      introspectionUrl: w.idp.info.introspectionUrl,
      caCertPath: w.idp.info.caCertPath,
      // A delegated token is the mailbox owner's own; Dovecot's grant list keyed by the token's
      // appid stands in for Exchange's "the user opens their own mailbox".
      grants: { [MAILBOX]: options.delegated ? [APP_ID, PUBLIC_CLIENT_ID] : options.google ? [APP_ID, GOOGLE_CLIENT_ID] : [APP_ID] },
      ...(options.mechanisms ? { mechanisms: options.mechanisms } : {}),
    });
    const saslPort = await freePort();
    w.dovecot = await startDovecot({
      users: [
        { user: MAILBOX, password: FIXTURE_PASSWORD },
        { user: CUSTOMER, password: "customer-fixture-password" },
      ],
      lmtp: true,
      authMechanisms: w.oauth.authMechanisms,
      extraConfig: `${w.oauth.extraConfig}\n${dovecotAuthListener(saslPort)}`,
    });
    w.postfix = await startPostfix({ lmtpPort: w.dovecot.info.lmtpPort!, saslPort });
    if (options.graph) {
      w.graph = await startFakeGraph({
        identity: w.idp,
        dovecot: { host: w.dovecot.info.host, imapPort: w.dovecot.info.imapPort },
        mailboxes: [{ user: MAILBOX, imapPassword: FIXTURE_PASSWORD, apps: [APP_ID] }],
      });
    }
    w.db = await worldDatabase(prefix);
    w.namespace = testNamespace(prefix);
    w.names = names(w.namespace);
    w.pool = new pg.Pool({ connectionString: w.db.url, max: 2 });
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
              address: MAILBOX,
              inbound: options.graph
                ? { protocol: "graph", checkIntervalSeconds: 2 }
                : { protocol: "imap", host: "127.0.0.1", port: w.dovecot.info.imapPort, tls: "none", checkIntervalSeconds: 30 },
              auth: options.delegated
                ? { type: "microsoft-delegated", clientId: PUBLIC_CLIENT_ID, tenant: "consumers", authorityHost: w.idp.info.authorityHost }
                : options.google
                  ? { type: "google-delegated", clientId: GOOGLE_CLIENT_ID, clientSecret: "env:GOOGLE_CLIENT_SECRET", authorizeUrl: w.idp.info.googleAuthorizeUrl, tokenUrl: w.idp.info.googleTokenUrl }
                  : { type: "microsoft365", tenantId: TENANT_ID, clientId: APP_ID, clientSecret: "env:M365_CLIENT_SECRET", authorityHost: w.idp.info.authorityHost },
              ...(options.graph
                ? { outbound: "graph", graph: { url: w.graph.url } }
                : { smtp: { host: "127.0.0.1", port: w.postfix.info.submissionPort, tls: "starttls", verifyCertificate: false } }),
            },
          ],
        },
      ],
      ...(options.delegated || options.google || options.graph ? { tokenStore: { key: "env:POSTROOM_TOKEN_KEY" } } : {}),
    } as PostroomConfigInput;
    options.tweak?.(w.config, w);
    w.security = await secureWorld(w.config, w.dir.path, prefix, options.security);
    w.nc = w.security.nc;
    w.system = new PostroomSystem({
      config: w.config,
      dir: w.dir.path,
      env: {
        ...w.security.env,
        M365_CLIENT_SECRET: CLIENT_SECRET,
        NODE_EXTRA_CA_CERTS: w.idp.info.caCertPath,
        ...(options.delegated || options.google || options.graph ? { POSTROOM_TOKEN_KEY: TOKEN_STORE_KEY } : {}),
        ...(options.google ? { GOOGLE_CLIENT_SECRET } : {}),
      },
    });
    return w;
  }

  /** Waits until the poller has opened the mailbox. */
  async mailboxReady(timeoutMs = 40_000, mailbox = "support"): Promise<void> {
    const kv = await openKv(this.nc, this.names.buckets.mailboxStatus);
    await waitFor(
      async () => {
        const e = await kv.get(this.names.mailboxKey("acme", mailbox));
        return e?.value.length ? (e.json() as MailboxStatus).state === "idle" : false;
      },
      { timeoutMs, what: () => `mailbox idle\n${this.system.dump()}` },
    );
  }

  /**
   * Keeps mail flowing for `ms`: every 3 s a customer's email appended to the mailbox and a new
   * email requested from it to the customer; every second round the mailbox's IMAP connections
   * are cut, so the poller logs in again with whatever token is current. Returns the rounds.
   */
  async mailFlowFor(ms: number, mail: (round: number) => string, label: string): Promise<number> {
    const started = Date.now();
    let round = 0;
    while (Date.now() - started < ms) {
      round++;
      await this.dovecot.appendMessage(MAILBOX, mail(round));
      if (round % 2 === 0) await this.dovecot.doveadm(["kick", MAILBOX]).catch(() => "");
      await this.requestSend({ commandId: `${label.toLowerCase()}-reply-${round}`, tenant: "acme", mailbox: "support", kind: "new", to: [CUSTOMER], subject: `${label} update ${round}`, text: `Reply ${round}.` });
      // Pacing, not waiting for state: the traffic must span several token lifetimes.
      await new Promise((r) => setTimeout(r, 3_000));
    }
    return round;
  }

  /**
   * `postroom auth sign-in` through a browser, with the browser signed in as `as` (consenting or
   * not): waits for the printed address, opens it on the fake platform, follows the consent
   * screen's redirect to the command's loopback port, and returns what the browser was shown and
   * how the command ended.
   */
  async signInWithBrowser(
    args: string[],
    as: string,
    consent = true,
  ): Promise<{ code: number; out: string; err: string; page: { status: number; body: string }; authorizationUrl: URL }> {
    let printed = "";
    const run = runPostroom(["auth", "sign-in", ...args], operatorEnv(this.security), (text) => (printed = text));
    const ended = run.then((r) => {
      throw new Error(`postroom auth sign-in exited ${r.code} before printing an address:\n${r.out}\n${r.err}\n${this.system.dump()}`);
    });
    const address = await Promise.race([
      waitFor(() => /open\s+(https:\/\/\S+)/.exec(printed)?.[1], { timeoutMs: 60_000, what: () => `a sign-in address printed\n${printed}\n${this.system.dump()}` }),
      ended,
    ]);
    ended.catch(() => undefined);
    this.idp.browserSignedInAs(as, consent);
    const consentScreen = await this.#get(address);
    assert.equal(consentScreen.status, 302, consentScreen.body);
    assert.match(consentScreen.location ?? "", /^http:\/\/127\.0\.0\.1:\d+\/\?/);
    const page = await this.#get(consentScreen.location!);
    return { ...(await run), page, authorizationUrl: new URL(address) };
  }

  /** One GET as a browser would send it (trusting the fake platform's CA), redirects not followed. */
  #get(url: string): Promise<{ status: number; location: string | undefined; body: string }> {
    const ca = readFileSync(this.idp.info.caCertPath);
    return new Promise((resolvePromise, reject) => {
      const u = new URL(url);
      const req = (u.protocol === "https:" ? httpsRequest(u, { ca }) : httpRequest(u)).on("response", (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString("utf8")));
        res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, location: res.headers.location, body }));
      });
      req.on("error", reject);
      req.end();
    });
  }

  /** Records every message on this world's subjects, inboxes, the JetStream API and KV, as text. */
  captureTraffic(): string[] {
    const traffic: string[] = [];
    for (const subject of [`${this.namespace}.>`, "_INBOX.>", "$JS.API.>", "$KV.>"]) {
      const sub = this.nc.subscribe(subject);
      void (async () => {
        for await (const m of sub) traffic.push(`${m.subject} ${new TextDecoder().decode(m.data)}`);
      })();
    }
    return traffic;
  }

  /**
   * Asserts that no refresh token the platform issued is in any log (the services', Dovecot's,
   * Postfix's), in `traffic`, or in clear in any file of the world, Dovecot, Postfix or this run's
   * JetStream folders; nor any access token in the traffic, nor any of `secrets` in logs or traffic.
   */
  async assertNoGrantLeaks(traffic: string[], secrets: string[]): Promise<void> {
    await this.nc.flush();
    const logs = [...this.system.logs.map((l) => l.line), await this.dovecot.readLog(), await readFile(this.postfix.info.logPath, "utf8")].join("\n");
    const wire = traffic.join("\n");
    assert.ok(traffic.some((t) => t.includes(this.names.buckets.oauthGrants)), "the grant store's traffic was captured");
    for (const rt of this.idp.issuedRefreshTokens) {
      assert.ok(!logs.includes(rt), "a refresh token is in a log");
      assert.ok(!wire.includes(rt), "a refresh token is in the NATS traffic");
    }
    for (const token of this.idp.issuedTokens) assert.ok(!wire.includes(token), "an access token is in the NATS traffic");
    for (const secret of [TOKEN_STORE_KEY, FIXTURE_PASSWORD, ...secrets]) assert.ok(!logs.includes(secret) && !wire.includes(secret), "a secret is in a log or the traffic");
    const mine = await jetStreamFolders(this.namespace);
    assert.ok(mine.some((d) => d.endsWith(this.names.buckets.oauthGrants)) || mine.length === 0, "the grant bucket's files are among those searched");
    const roots = [this.dir.path, this.dovecot.info.dir, join(this.postfix.info.logPath, ".."), ...mine];
    const { found, scanned } = await filesHolding(roots, this.idp.issuedRefreshTokens);
    assert.deepEqual(found, [], "a refresh token is in these files in clear");
    assert.ok(scanned > 10, `${scanned} files searched`);
  }

  async rows<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query<T>(sql, params)).rows;
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
    await this.postfix?.stop();
    await this.graph?.stop();
    await this.dovecot?.stop();
    await this.oauth?.dir.remove();
    await this.idp?.stop();
    await this.dir?.remove();
  }
}
