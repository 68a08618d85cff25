// token-service as a real process (the shape it runs in), against a real NATS and the fake
// identity platform over HTTPS. A process, not an in-process instance: Node reads the CA it must
// trust (NODE_EXTRA_CA_CERTS) only at start-up, exactly as in production.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import type { PostroomConfigInput } from "@postroom/config";
import { MailboxAuthStatus, names, SealedReply, type Credential, type CredentialPurpose } from "@postroom/contracts";
import { CredentialClient, CredentialUnavailableError, connectNats, openKv, openReply, replyKeys, type NatsConnection } from "@postroom/nats-kit";
import nacl from "tweetnacl";
import {
  cleanupNamespace,
  natsUrl,
  rsaCertificate,
  startFakeIdentityPlatform,
  tempDir,
  testNamespace,
  waitFor,
  type FakeIdentityPlatform,
  type RsaCertificate,
  type TempDir,
} from "@postroom/testkit";
import { stringify } from "yaml";

const MAIN = resolve(fileURLToPath(new URL("./main.ts", import.meta.url)));
const TENANT = "3f2c9a4e-6b1d-4c8e-9a7f-0d5e2b1c4a88";
const APP = "5a7d3c21-9e4b-4f6a-8c2d-1b0e9f8a7c66";
const CERT_APP = "6b8e4d32-0f5c-4a7b-9d3e-2c1f0a9b8d77";
const EXPIRED_APP = "7c9f5e43-1a6d-4b8c-8e4f-3d2a1b0c9e88";
const SECRET = "Xq8~postroom-client-secret-value.7Jk2LmN9";
const SECRET_ID = "e4b1c2d3-0a9f-4e8d-b7c6-5a4f3e2d1c0b";
const EXPIRED_SECRET = "Old~expired-secret-value.4Pq1";
const PASSWORD = "pw-for-the-password-mailbox-93jd";
const root = testNamespace("tokensvc");
const n = names(root);

let dir: TempDir;
let idp: FakeIdentityPlatform;
let nc: NatsConnection;
let client: CredentialClient;
let child: ChildProcess;
let cert: RsaCertificate;
let google: { privateKey: string; publicKey: string };
const logs: string[] = [];
const traffic: string[] = [];
/** Every access token the client received, searched for in the traffic at the end. */
const issuedTokens: string[] = [];

before(async () => {
  dir = tempDir("token-service");
  cert = await rsaCertificate(dir.path, "app-cert");
  const kp = generateKeyPairSync("rsa", { modulusLength: 2048, publicKeyEncoding: { type: "spki", format: "pem" }, privateKeyEncoding: { type: "pkcs8", format: "pem" } });
  google = { privateKey: kp.privateKey, publicKey: kp.publicKey };
  idp = await startFakeIdentityPlatform({
    apps: [
      { tenantId: TENANT, clientId: APP, objectId: "0d1e2f30-4a5b-4c6d-8e7f-9a0b1c2d3e4f", secrets: [{ value: SECRET }], roles: ["IMAP.AccessAsApp"], graphRoles: ["Mail.ReadWrite", "Mail.Send"] },
      { tenantId: TENANT, clientId: CERT_APP, certificates: [cert.certificatePem], roles: ["IMAP.AccessAsApp"] },
      { tenantId: TENANT, clientId: EXPIRED_APP, secrets: [{ value: EXPIRED_SECRET, expired: true }] },
    ],
    serviceAccounts: [{ clientEmail: "postroom@acme-project.iam.gserviceaccount.com", publicKeyPem: google.publicKey }],
    // Every Microsoft token request waits, so the 50 concurrent requests below surely overlap it.
    tokenDelayMs: 300,
  });
  const keyFile = join(dir.path, "google-key.json");
  await writeFile(keyFile, JSON.stringify({ type: "service_account", client_email: "postroom@acme-project.iam.gserviceaccount.com", private_key: google.privateKey, private_key_id: "k1" }));
  const ms = (clientId: string, extra: Record<string, unknown>) => ({ type: "microsoft365", tenantId: TENANT, clientId, authorityHost: idp.info.authorityHost, ...extra });
  const inbound = { protocol: "imap", host: "127.0.0.1", port: 1, tls: "none" };
  const soon = new Date(Date.now() + 10 * 86_400_000).toISOString().slice(0, 10);
  const mailbox = (id: string, auth: Record<string, unknown>) => ({ id, address: `${id}@acme.test`, inbound, auth });
  const config: PostroomConfigInput = {
    version: 1,
    nats: { url: natsUrl(), namespace: root },
    database: { url: "postgres://127.0.0.1:1/unused" },
    archive: { path: join(dir.path, "archive") },
    tenants: [
      {
        id: "acme",
        acd: { type: "builtin" },
        mailboxes: [
          mailbox("support", ms(APP, { clientSecret: "env:M365_SECRET", clientSecretExpires: soon })),
          mailbox("sales", ms(APP, { clientSecret: "env:M365_SECRET" })),
          mailbox("certbox", ms(CERT_APP, { certificate: { certificate: `file:${cert.certPath}`, privateKey: `file:${cert.keyPath}` } })),
          mailbox("secretid", ms(APP, { clientSecret: "env:M365_SECRET_ID" })),
          mailbox("expired", ms(EXPIRED_APP, { clientSecret: "env:M365_EXPIRED" })),
          mailbox("gmail", { type: "google-service-account", keyFile: `file:${keyFile}`, tokenUrl: idp.info.googleTokenUrl }),
          mailbox("plain", { type: "password", password: "env:PLAIN_PASSWORD" }),
        ],
      },
    ],
  } as PostroomConfigInput;
  const configPath = join(dir.path, "postroom.yaml");
  await writeFile(configPath, stringify(config));

  nc = await connectNats({ url: natsUrl(), name: "token-service-test" });
  // Everything on this namespace's subjects and every reply inbox: searched for secrets at the end.
  for (const subject of [`${root}.>`, "_INBOX.>"]) {
    const sub = nc.subscribe(subject);
    void (async () => {
      for await (const m of sub) traffic.push(`${m.subject} ${new TextDecoder().decode(m.data)}`);
    })();
  }
  client = new CredentialClient(nc, n, 20_000);
  child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", MAIN], {
    env: {
      ...process.env,
      POSTROOM_CONFIG: configPath,
      NODE_EXTRA_CA_CERTS: idp.info.caCertPath,
      M365_SECRET: SECRET,
      M365_SECRET_ID: SECRET_ID,
      M365_EXPIRED: EXPIRED_SECRET,
      PLAIN_PASSWORD: PASSWORD,
      LOG_LEVEL: "debug",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const collect = (d: Buffer) => logs.push(...d.toString("utf8").split("\n").filter(Boolean));
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  await waitFor(() => logs.some((l) => /credential expires soon/.test(l)) || (child.exitCode !== null ? Promise.reject(new Error(logs.join("\n"))) : false), {
    timeoutMs: 30_000,
    what: "token-service started",
  });
  // The subscription is made before the expiry check that logged; one round trip proves it answers.
  await waitFor(async () => (await client.get("acme", "plain", "imap").catch(() => undefined)) !== undefined, { timeoutMs: 30_000, what: "first answer" });
});

after(async () => {
  if (child && child.exitCode === null) {
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await gone;
  }
  await nc?.drain();
  await cleanupNamespace(natsUrl(), root).catch(() => undefined);
  await idp?.stop();
  await dir?.remove();
});

function claims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
}

async function xoauth2(mailbox: string, purpose: CredentialPurpose = "imap", rejected = false): Promise<Extract<Credential, { mechanism: "XOAUTH2" }>> {
  const c = await client.get("acme", mailbox, purpose, rejected);
  assert.equal(c.mechanism, "XOAUTH2");
  issuedTokens.push((c as Extract<Credential, { mechanism: "XOAUTH2" }>).accessToken);
  return c as Extract<Credential, { mechanism: "XOAUTH2" }>;
}

test("50 concurrent credential requests for the same mailbox cause exactly one token request to the identity platform", async () => {
  const before = idp.requestsFor(APP).length;
  const answers = await Promise.all(Array.from({ length: 50 }, () => xoauth2("support")));
  assert.equal(idp.requestsFor(APP).length - before, 1, "token requests to the identity platform");
  assert.equal(new Set(answers.map((a) => a.accessToken)).size, 1);
  const c = claims(answers[0]!.accessToken);
  assert.deepEqual([c.aud, c.tid, c.appid], ["https://outlook.office365.com", TENANT, APP]);
  assert.equal(answers[0]!.username, "support@acme.test");
  assert.ok(new Date(answers[0]!.expiresAt).getTime() > Date.now() + 3_000_000);
});

test("another mailbox of the same app shares the cached app-only token", async () => {
  const before = idp.requestsFor(APP).length;
  const sales = await xoauth2("sales");
  const support = await xoauth2("support");
  assert.equal(sales.accessToken, support.accessToken);
  assert.equal(sales.username, "sales@acme.test");
  assert.equal(idp.requestsFor(APP).length, before);
});

test("a Graph request gets a token for Graph's resource with the app's Graph roles, cached apart from the Exchange token", async () => {
  const exchange = await xoauth2("support");
  const before = idp.requestsFor(APP).length;
  const graph = await xoauth2("support", "graph");
  const c = claims(graph.accessToken);
  assert.deepEqual([c.aud, c.roles], ["https://graph.microsoft.com", ["Mail.ReadWrite", "Mail.Send"]]);
  assert.notEqual(graph.accessToken, exchange.accessToken);
  assert.equal((await xoauth2("sales", "graph")).accessToken, graph.accessToken, "shared by the app's mailboxes like the Exchange token");
  assert.equal(idp.requestsFor(APP).length - before, 1);
});

test("a request marked rejected forces one fresh token, shared by concurrent rejected callers", async () => {
  const old = await xoauth2("support");
  await new Promise((r) => setTimeout(r, 1_100)); // a token younger than a second counts as already fresh
  const before = idp.requestsFor(APP).length;
  const fresh = await Promise.all(Array.from({ length: 10 }, () => xoauth2("support", "imap", true)));
  assert.equal(idp.requestsFor(APP).length - before, 1);
  assert.equal(new Set(fresh.map((f) => f.accessToken)).size, 1);
  assert.notEqual(fresh[0]!.accessToken, old.accessToken);
  assert.equal((await xoauth2("support")).accessToken, fresh[0]!.accessToken, "later callers get the fresh token");
});

test("a certificate credential gets a token with a client assertion the platform verified", async () => {
  const c = await xoauth2("certbox");
  assert.equal(claims(c.accessToken).appidacr, "2");
  const [request] = idp.requestsFor(CERT_APP);
  assert.ok(request?.fields.includes("client_assertion"));
  assert.ok(!request?.fields.includes("client_secret"));
});

test("the Secret ID given instead of the value is answered needs-admin with AADSTS7000215 and the fix, and not retried in a loop", async () => {
  const before = idp.tokenRequests.length;
  const error = await client.get("acme", "secretid", "imap").then(
    () => assert.fail("expected a refusal"),
    (e: unknown) => e as CredentialUnavailableError,
  );
  assert.ok(error instanceof CredentialUnavailableError);
  assert.deepEqual([error.kind, error.code], ["needs-admin", "AADSTS7000215"]);
  assert.match(error.fix ?? "", /Value, not its Secret ID/);
  await assert.rejects(client.get("acme", "secretid", "imap", true), CredentialUnavailableError);
  assert.equal(idp.tokenRequests.length - before, 1, "the second request was answered from the failure, not the platform");
});

test("an expired secret is needs-admin with AADSTS7000222", async () => {
  await assert.rejects(client.get("acme", "expired", "smtp"), (e: unknown) => e instanceof CredentialUnavailableError && e.code === "AADSTS7000222" && /new secret/.test(e.fix ?? ""));
});

test("a transient platform failure is answered transient, and the next request after the backoff gets a token", async () => {
  const fresh = await xoauth2("support"); // warm
  assert.ok(fresh.accessToken);
  // Only a forced refresh reaches the platform now; make it fail once with a 503.
  await new Promise((r) => setTimeout(r, 1_100));
  idp.failNextTokenRequests(1, 503);
  await assert.rejects(client.get("acme", "support", "imap", true), (e: unknown) => e instanceof CredentialUnavailableError && e.kind === "transient");
  const token = await waitFor(() => xoauth2("support", "imap", true).catch(() => undefined), { timeoutMs: 30_000, what: "a token after the backoff" });
  assert.notEqual(token.accessToken, fresh.accessToken);
});

test("a Google service account gets a token by JWT bearer with sub = the mailbox and the Gmail scope", async () => {
  const c = await xoauth2("gmail");
  const t = claims(c.accessToken);
  assert.deepEqual([t.sub, t.scope, t.azp], ["gmail@acme.test", "https://mail.google.com/", "postroom@acme-project.iam.gserviceaccount.com"]);
});

test("password mailboxes still get PLAIN", async () => {
  const c = await client.get("acme", "plain", "imap");
  assert.deepEqual([c.mechanism, c.username], ["PLAIN", "plain@acme.test"]);
});

test("a request for a mailbox that is not configured, or whose body names another mailbox than its subject, gets no credential", async () => {
  const ask = async (subject: string, body: Record<string, unknown>) =>
    (await nc.request(subject, JSON.stringify({ version: "v1", purpose: "imap", ...body }), { timeout: 10_000 })).json() as { error?: { kind: string; message: string }; password?: string };
  const madeUp = await ask(n.subjects.credentialRequest("acme", "madeup"), {});
  assert.equal(madeUp.error?.kind, "unknown-mailbox");
  const otherTenant = await ask(n.subjects.credentialRequest("globex", "plain"), {});
  assert.equal(otherTenant.error?.kind, "unknown-mailbox");
  // The plain mailbox exists, but the request says it means the support mailbox: refused, not guessed.
  const mismatch = await ask(n.subjects.credentialRequest("acme", "plain"), { tenant: "acme", mailbox: "support", replyKey: replyKeys().publicKey });
  assert.equal(mismatch.error?.kind, "unknown-mailbox");
  assert.match(mismatch.error?.message ?? "", /names mailbox acme\/support but was sent for acme\/plain/);
  // A request that could not read a sealed reply (no replyKey) gets an error, not the password in clear.
  const unsealed = await ask(n.subjects.credentialRequest("acme", "plain"), {});
  assert.match(unsealed.error?.message ?? "", /no replyKey/);
  for (const answer of [madeUp, otherTenant, mismatch, unsealed]) assert.equal(answer.password, undefined);
});

test("a credential reply is sealed to the requesting process: another key pair cannot open it", async () => {
  const raw = await nc.request(n.subjects.credentialRequest("acme", "plain"), JSON.stringify({ version: "v1", purpose: "imap", tenant: "acme", mailbox: "plain", replyKey: replyKeys().publicKey }), { timeout: 10_000 });
  const sealed = SealedReply.parse(raw.json());
  assert.ok(!raw.string().includes(PASSWORD));
  assert.equal((openReply(sealed) as { password?: string }).password, PASSWORD, "this process opens it");
  const other = nacl.box.keyPair();
  assert.throws(() => openReply(sealed, { publicKey: "", secretKey: other.secretKey }), /could not be opened/);
  const altered = { ...sealed, sealed: { ...sealed.sealed, box: Buffer.from(Buffer.from(sealed.sealed.box, "base64").map((b, i) => (i === 20 ? b ^ 1 : b))).toString("base64") } };
  assert.throws(() => openReply(altered), /could not be opened/);
});

test("each mailbox's auth state is in the mailbox-status bucket under <t>.<m>.auth, with code, fix and expiry warnings", async () => {
  const kv = await openKv(nc, n.buckets.mailboxStatus);
  const read = async (mailbox: string) => {
    const e = await kv.get(n.mailboxAuthKey("acme", mailbox));
    return e?.value.length ? MailboxAuthStatus.parse(e.json()) : undefined;
  };
  const bad = await waitFor(() => read("secretid"), { timeoutMs: 20_000, what: "secretid auth state" });
  assert.deepEqual([bad.state, bad.code, bad.provider], ["needs-admin", "AADSTS7000215", "microsoft365"]);
  assert.match(bad.fix ?? "", /Secret ID/);
  const good = await waitFor(async () => ((await read("support"))?.warnings.length ? read("support") : undefined), { timeoutMs: 20_000, what: "support warnings" });
  assert.equal(good.state, "ok");
  assert.ok(good.tokenExpiresAt);
  assert.equal(good.warnings[0]?.what, "client secret");
  const certbox = await waitFor(() => read("certbox"), { timeoutMs: 20_000, what: "certbox auth state" });
  assert.equal(certbox.warnings[0]?.what, "certificate", "a 30-day certificate is inside the 30-day window");
  assert.equal(await kv.get(n.mailboxKey("acme", "support")), null, "the poller's own key is not written by token-service");
});

test("expiry warnings are logged for the secret (config date) and the certificate (its notAfter)", () => {
  const warned = logs.filter((l) => l.includes("credential expires soon"));
  assert.ok(warned.some((l) => l.includes('"mailbox":"support"') && l.includes("client secret")));
  assert.ok(warned.some((l) => l.includes('"mailbox":"certbox"') && l.includes("certificate")));
});

test("no client secret, private key or service-account key appears in token-service's logs or anywhere in the NATS traffic; the password only in its credential reply", async () => {
  await nc.flush();
  const keyBody = (pem: string) => pem.split("\n").filter((l) => l && !l.startsWith("-----"));
  const secrets = [SECRET, SECRET_ID, EXPIRED_SECRET, ...keyBody(cert.privateKeyPem), ...keyBody(google.privateKey)];
  assert.ok(logs.length > 5 && traffic.length > 50, `captured ${logs.length} log lines and ${traffic.length} NATS messages`);
  for (const secret of secrets) {
    assert.ok(!logs.some((l) => l.includes(secret)), "a secret is in the logs");
    assert.ok(!traffic.some((t) => t.includes(secret)), "a secret is in the NATS traffic");
  }
  assert.ok(!logs.some((l) => l.includes(PASSWORD)), "the password is in the logs");
  // Credential replies are sealed: neither the password nor any access token handed out is in the traffic.
  assert.ok(!traffic.some((t) => t.includes(PASSWORD)), "the password is in the NATS traffic");
  assert.ok(issuedTokens.length > 3, `${issuedTokens.length} tokens issued`);
  for (const token of issuedTokens) assert.ok(!traffic.some((t) => t.includes(token)), "an access token is in the NATS traffic");
  assert.ok(traffic.some((t) => t.startsWith("_INBOX.") && t.includes('"sealed"')), "the replies were captured, sealed");
});
